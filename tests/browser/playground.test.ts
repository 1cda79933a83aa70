// The playground page in a real Chromium against the real local server (`hymba dev`, started by
// global-setup.ts): loads cleanly, streams a reply that matches the stored session, shows each turn's usage,
// forks and deletes from the UI, calls tools, and leaves a screenshot in test-artifacts/.

import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest';
import { launchChromium, NO_CHROMIUM } from './chromium.js';

const chromiumPath = inject('chromiumPath');
const base = inject('baseUrl');
const SCREENSHOT = join(import.meta.dirname, '..', '..', 'test-artifacts', 'playground.png');
const MAX_TOKENS = 24;

interface SessionJson {
  messages: { role: string; content: string | null; turn: number }[];
  turns: { turn: number; promptTokens: number; completionTokens: number; cachedTokens: number }[];
  state: { snapshot_bytes: number };
}

async function getSession(id: string): Promise<{ status: number; body: SessionJson }> {
  const res = await fetch(`${base}/v1/sessions/${id}`);
  return { status: res.status, body: (await res.json()) as SessionJson };
}

if (!chromiumPath) test.skip(NO_CHROMIUM, () => {});

describe.runIf(chromiumPath)('the playground in Chromium', () => {
  let browser: Browser;
  let page: Page;
  const errors: string[] = [];
  let sessionId = '';

  const activeId = (): Promise<string> =>
    page.evaluate(() => (JSON.parse(localStorage.getItem('hymba-playground:settings')!) as { active: string }).active);

  /** the numbers the page shows for a turn, from the data-value of each stat */
  async function statsOf(turn: number): Promise<Record<string, string>> {
    const dd = page.locator(`#transcript .msg.assistant[data-turn="${turn}"] dd`);
    await dd.first().waitFor();
    const pairs = await dd.evaluateAll((nodes) =>
      nodes.map((n) => [n.getAttribute('data-stat'), n.getAttribute('data-value')]),
    );
    return Object.fromEntries(pairs) as Record<string, string>;
  }

  /** type a message, send it with Enter, wait until the turn is decorated (stored, stats shown) */
  async function sendTurn(text: string, turn: number): Promise<void> {
    await page.locator('#message').fill(text);
    await page.locator('#message').press('Enter');
    await page.locator(`#transcript .msg.assistant[data-turn="${turn}"] .stats`).waitFor({ timeout: 60_000 });
  }

  beforeAll(async () => {
    browser = await launchChromium(chromiumPath!);
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(e.message));
  });

  afterAll(async () => {
    await browser?.close();
  });

  test('loads with no console errors and lists the served model', async () => {
    const models = (await (await fetch(`${base}/v1/models`)).json()) as { data: { id: string }[] };
    await page.goto(`${base}/`);
    await expect.poll(() => page.locator('#model option').allTextContents()).toEqual(models.data.map((m) => m.id));
    expect(await page.title()).toBe('hymba-edge playground');
    // the handoff buttons wait for the in-browser engine
    expect(await page.locator('#continue-here').isHidden()).toBe(true);
    expect(errors).toEqual([]);
  });

  test('streams a reply into the page; the final text is the stored assistant message', async () => {
    await page.locator('#max-tokens').fill(String(MAX_TOKENS));
    await page.locator('#temperature').fill('0');
    await page.getByRole('button', { name: 'New session' }).click();
    await expect.poll(() => page.locator('#sessions li').count()).toBe(1);
    sessionId = await activeId();
    // every text the streamed reply shows, as the page writes it
    await page.evaluate(() => {
      const texts: string[] = [];
      (window as unknown as { streamed: string[] }).streamed = texts;
      new MutationObserver((records) => {
        for (const r of records) {
          const target = r.target as HTMLElement;
          if (!target.classList?.contains('content') || target.closest('li')?.dataset.key !== 'pending') continue;
          r.addedNodes.forEach((n) => texts.push(n.textContent ?? ''));
        }
      }).observe(document.getElementById('transcript')!, { childList: true, subtree: true });
    });
    await sendTurn('Hello there', 1);
    const streamed = (await page.evaluate(() => (window as unknown as { streamed: string[] }).streamed)).filter(
      Boolean,
    );
    // it grew: several different texts, each extending the one before
    expect(new Set(streamed.slice(0, -1)).size).toBeGreaterThanOrEqual(2);
    for (let i = 1; i < streamed.length; i++) expect(streamed[i]!.startsWith(streamed[i - 1]!)).toBe(true);
    const { body } = await getSession(sessionId);
    const stored = body.messages.find((m) => m.role === 'assistant' && m.turn === 1)!;
    expect(streamed.at(-1)).toBe(stored.content);
    expect(await page.locator('#transcript .msg.assistant[data-turn="1"] .content').textContent()).toBe(stored.content);
    expect(errors).toEqual([]);
  });

  test("per-turn stats show the API's usage; the second turn is served from cached state", async () => {
    await sendTurn('Tell me more', 2);
    const { body } = await getSession(sessionId);
    expect(body.turns).toHaveLength(2);
    for (const t of body.turns) {
      const shown = await statsOf(t.turn);
      expect(Number(shown.prompt)).toBe(t.promptTokens);
      expect(Number(shown.cached)).toBe(t.cachedTokens);
      expect(Number(shown.completion)).toBe(t.completionTokens);
      expect(Number(shown.ttft)).toBeGreaterThan(0);
      expect(Number(shown.tps)).toBeGreaterThan(0);
      expect(Number(shown.snapshot)).toBeGreaterThan(0);
    }
    expect(body.turns[1]!.cachedTokens).toBeGreaterThan(0);
    expect(Number((await statsOf(2)).snapshot)).toBe(body.state.snapshot_bytes);
    expect(errors).toEqual([]);
  });

  test('forks at a turn and deletes the fork from the UI', async () => {
    await page.locator('#transcript .msg.assistant[data-turn="1"] .fork').click();
    await expect.poll(activeId).not.toBe(sessionId);
    const forkId = await activeId();
    await expect.poll(() => page.locator('#transcript .msg').count()).toBe(2);
    const [fork, source] = [await getSession(forkId), await getSession(sessionId)];
    expect(fork.body.turns).toHaveLength(1);
    expect(fork.body.messages).toEqual(source.body.messages.filter((m) => m.turn <= 1));
    expect(await page.locator(`#sessions li[data-session="${forkId}"] .note`).textContent()).toBe('fork at turn 1');

    await page.locator(`#sessions li[data-session="${forkId}"] .delete`).click();
    await expect.poll(() => page.locator(`#sessions li[data-session="${forkId}"]`).count()).toBe(0);
    expect((await getSession(forkId)).status).toBe(404);
    expect(await page.locator('#transcript .msg').count()).toBe(0);
    // resume the first session from the list: its transcript comes back from GET /v1/sessions/:id
    await page.locator(`#sessions li[data-session="${sessionId}"] .open`).click();
    await expect.poll(() => page.locator('#transcript .msg').count()).toBe(4);
    expect(errors).toEqual([]);
  });

  test('with tools set, a turn goes through chat completions and shows the tool call', async () => {
    await page.getByRole('button', { name: 'Insert an example' }).click();
    await page.locator('#tool-choice').selectOption('required');
    await page.locator('#max-tokens').fill('64');
    await page.locator('#message').fill('What is the weather in Paris?');
    await page.locator('#message').press('Enter');
    const call = page.locator('#transcript .msg.assistant .tool-call').last();
    await call.waitFor({ timeout: 60_000 });
    const text = (await call.textContent())!;
    expect(text).toMatch(/^get_weather\(/);
    expect(JSON.parse(text.slice('get_weather('.length, -1))).toHaveProperty('city');
    await page.locator('#transcript .msg.assistant:last-child .stats').waitFor();
    // not stored in the session (the page keeps it), which still has its two turns
    expect((await getSession(sessionId)).body.turns).toHaveLength(2);
    await page.locator('#tools').fill('');
    expect(errors).toEqual([]);
  });

  test('full-page screenshot', async () => {
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    console.log(`[browser tests] screenshot: ${SCREENSHOT}`);
  });
});
