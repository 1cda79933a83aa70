// The in-browser engine ("this browser" in the playground) in a real Chromium against the real local server:
// it loads the served model through GET /v1/model/files/:name and answers on the WASM EP and on the WebGPU EP
// (SwiftShader: ~70x slower than WASM, so few tokens); a session moved into the browser ("continue here")
// continues token-identically to the same session continued on the server (greedy); "send back" hands the
// local state to the server, whose next turn resumes from it; a tampered snapshot is refused in the page.
// Prints the decode rates and the handoff sizes and times.

import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest';
import { launchChromium, NO_CHROMIUM } from './chromium.js';

const chromiumPath = inject('chromiumPath');
const base = inject('baseUrl');

interface ServerReply {
  text: string;
  ids: number[];
  cached: number;
  prompt: number;
}

interface LocalTurn {
  ids: number[];
  text: string;
  promptTokens: number;
  cachedTokens: number;
  completionTokens: number;
  decodeTokensPerSecond: number | null;
  ms: number;
}

interface Handoff {
  direction: string;
  bytes: number;
  tokens: number;
  ms: number;
  turn: number;
}

async function post<T>(path: string, body: unknown): Promise<T> {
  const res = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

/** one greedy session turn on the server, with its token ids */
async function serverTurn(id: string, content: string, maxTokens: number): Promise<ServerReply> {
  const r = await post<{
    choices: { message: { content: string | null }; token_ids?: number[] }[];
    usage: { prompt_tokens: number; prompt_tokens_details?: { cached_tokens?: number } };
  }>(`/v1/sessions/${id}/messages`, { content, max_tokens: maxTokens, temperature: 0, return_token_ids: true });
  const choice = r.choices[0]!;
  return {
    text: choice.message.content ?? '',
    ids: choice.token_ids ?? [],
    cached: r.usage.prompt_tokens_details?.cached_tokens ?? 0,
    prompt: r.usage.prompt_tokens,
  };
}

if (!chromiumPath) test.skip(NO_CHROMIUM, () => {});

for (const ep of ['wasm', 'webgpu'] as const) {
  // SwiftShader runs every node of the WebGPU EP on the CPU: keep its turns short
  const maxTokens = ep === 'wasm' ? 16 : 4;

  describe.runIf(chromiumPath)(`the in-browser engine on ${ep}`, () => {
    let browser: Browser;
    let page: Page;
    const errors: string[] = [];

    const activeId = (): Promise<string> =>
      page.evaluate(
        () => (JSON.parse(localStorage.getItem('hymba-playground:settings')!) as { active: string }).active,
      );
    const lastTurn = (): Promise<LocalTurn | null> =>
      page.evaluate(
        () => (window as unknown as { hymbaLocal: () => { lastTurn: LocalTurn | null } }).hymbaLocal().lastTurn,
      );
    const lastHandoff = (): Promise<Handoff | null> =>
      page.evaluate(
        () => (window as unknown as { hymbaLocal: () => { lastHandoff: Handoff | null } }).hymbaLocal().lastHandoff,
      );
    const statusText = async (): Promise<string> => (await page.locator('#status').textContent()) ?? '';

    /** send a message with the selected engine; wait for the turn's stats (server: data-turn, local: data-key) */
    async function send(text: string, done: string): Promise<void> {
      await page.locator('#message').fill(text);
      await page.locator('#message').press('Enter');
      await page.locator(`#transcript .msg.assistant${done} .stats`).waitFor({ timeout: 110_000 });
    }

    /** "New session", then wait until the page shows it (its transcript arrives after the click returns) */
    async function newSession(): Promise<string> {
      const before = await page.evaluate(() => localStorage.getItem('hymba-playground:settings'));
      await page.getByRole('button', { name: 'New session' }).click();
      await expect.poll(() => page.evaluate(() => localStorage.getItem('hymba-playground:settings'))).not.toBe(before);
      await expect.poll(() => page.locator('#transcript .msg').count()).toBe(0);
      await expect.poll(() => page.locator('#session-state').textContent()).toMatch(/^0 turns/);
      return activeId();
    }

    beforeAll(async () => {
      browser = await launchChromium(chromiumPath!);
      page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(m.text());
      });
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(`${base}/?ep=${ep}`);
      await page.locator('#max-tokens').fill(String(maxTokens));
      await page.locator('#temperature').fill('0');
    });

    afterAll(async () => {
      await browser?.close();
    });

    test('loads the served model and answers a fresh session as the server does; the page shows the EP', async () => {
      const t0 = performance.now();
      await page.locator('#engine').selectOption('browser');
      await page.locator('#local-engine[data-ep]').waitFor({ timeout: 110_000 });
      const loadMs = performance.now() - t0;
      expect(await page.locator('#local-engine').getAttribute('data-ep')).toBe(ep);
      expect(await page.locator('#local-engine').textContent()).toContain(`This browser: ${ep}`);
      const pageSession = await newSession();
      await expect.poll(() => page.locator('#continue-here').isVisible()).toBe(true);
      await send('Hello there', '[data-key="l1"]');
      const local = (await lastTurn())!;
      expect(local.completionTokens).toBeGreaterThan(0);
      expect(await page.locator('#transcript .msg.assistant[data-key="l1"] .content').textContent()).toBe(local.text);
      expect(await page.locator('#local-engine').getAttribute('data-tps')).not.toBeNull();
      // the same first turn on the server: the same tokens
      const { id } = await post<{ id: string }>('/v1/sessions', {});
      const server = await serverTurn(id, 'Hello there', maxTokens);
      expect(local.ids).toEqual(server.ids);
      expect(local.text).toBe(server.text);
      expect(local.promptTokens).toBe(server.prompt);
      console.log(
        `[browser tests] ${ep}: engine + model loaded in ${Math.round(loadMs)} ms; fresh turn: ${local.promptTokens} prompt tokens, ` +
          `${local.completionTokens} generated in ${Math.round(local.ms)} ms, decode ${local.decodeTokensPerSecond?.toFixed(2)} tokens/s`,
      );
      // a session that began in this browser goes to the server too (base turn 0), which then resumes from it
      await page.locator('#send-back').click();
      await expect
        .poll(statusText, { timeout: 60_000 })
        .toMatch(/^Sent back: the server session continues from turn 1/);
      const up = (await lastHandoff())!;
      const next = await serverTurn(pageSession, 'Tell me more', maxTokens);
      expect(next.cached).toBe(up.tokens);
      expect(errors).toEqual([]);
    });

    let sessionId = '';
    let forkId = '';
    let uploadedTokens = 0;

    test('"continue here" resumes the server session in the page, token-identical to the server', async () => {
      // turn 1 on the server, through the page
      await page.locator('#engine').selectOption('server');
      sessionId = await newSession();
      await send('Hello there', '[data-turn="1"]');
      // the reference: a fork at turn 1 continued on the server
      forkId = (await post<{ id: string }>(`/v1/sessions/${sessionId}/fork`, { turn: 1 })).id;
      const reference = await serverTurn(forkId, 'Tell me more', maxTokens);
      const meta = (await (await fetch(`${base}/v1/sessions/${sessionId}/snapshot/meta`)).json()) as {
        tokens: number[];
        turn: number;
      };
      expect(meta.turn).toBe(1);

      await page.locator('#engine').selectOption('browser');
      await page.locator('#continue-here').click();
      await expect.poll(statusText, { timeout: 60_000 }).toMatch(/^Continued in this browser from turn 1/);
      const down = (await lastHandoff())!;
      expect(down).toMatchObject({ direction: 'download', tokens: meta.tokens.length, turn: 1 });
      await send('Tell me more', '[data-key="l1"]');
      const local = (await lastTurn())!;
      expect(local.cachedTokens).toBe(meta.tokens.length); // nothing re-processed
      expect(local.cachedTokens).toBe(reference.cached);
      expect(local.promptTokens).toBe(reference.prompt);
      expect(local.ids).toEqual(reference.ids);
      expect(local.text).toBe(reference.text);
      console.log(
        `[browser tests] ${ep}: continue here: ${down.bytes} bytes of state (${down.tokens} tokens) downloaded and checked ` +
          `in ${Math.round(down.ms)} ms; local turn 2 (${local.cachedTokens} cached) decode ${local.decodeTokensPerSecond?.toFixed(2)} tokens/s`,
      );
      expect(errors).toEqual([]);
    });

    test('"send back" hands the local state to the server; its turn 3 resumes from it and equals the server-only path', async () => {
      expect(await page.locator('#send-back').isVisible()).toBe(true);
      await page.locator('#send-back').click();
      await expect
        .poll(statusText, { timeout: 60_000 })
        .toMatch(/^Sent back: the server session continues from turn 2/);
      const up = (await lastHandoff())!;
      expect(up).toMatchObject({ direction: 'upload', turn: 2 });
      uploadedTokens = up.tokens;
      // the page shows the server's transcript (turns 1 and 2), and the local copies are gone
      await expect.poll(() => page.locator('#transcript .msg').count()).toBe(4);
      expect(await page.locator('#send-back').isHidden()).toBe(true);
      const session = (await (await fetch(`${base}/v1/sessions/${sessionId}`)).json()) as { turns: unknown[] };
      expect(session.turns).toHaveLength(2);

      const edge = await serverTurn(sessionId, 'And then?', maxTokens);
      const serverOnly = await serverTurn(forkId, 'And then?', maxTokens);
      expect(edge.cached).toBe(uploadedTokens);
      expect(edge.cached).toBe(serverOnly.cached);
      expect(edge.ids).toEqual(serverOnly.ids);
      expect(edge.text).toBe(serverOnly.text);
      console.log(
        `[browser tests] ${ep}: send back: ${up.bytes} bytes of state (${up.tokens} tokens) uploaded in ${Math.round(up.ms)} ms; ` +
          `server turn 3 cached ${edge.cached} tokens`,
      );
      expect(errors).toEqual([]);
    });

    test('a tampered snapshot is refused with the reason shown in the page', async () => {
      await page.evaluate(() => {
        (window as unknown as { hymbaLocal: () => { tamperNextSnapshot: boolean } }).hymbaLocal().tamperNextSnapshot =
          true;
      });
      await page.locator('#continue-here').click();
      await expect
        .poll(statusText, { timeout: 60_000 })
        .toBe('Could not continue in this browser: state snapshot rejected: checksum mismatch');
      expect(await page.locator('#status').getAttribute('role')).toBe('alert');
      expect(await page.locator('#send-back').isHidden()).toBe(true);
      // an untampered download still works afterwards
      await page.locator('#continue-here').click();
      await expect.poll(statusText, { timeout: 60_000 }).toMatch(/^Continued in this browser from turn 3/);
    });
  });
}
