// Observability and limits through the real Worker: GET /metrics (Prometheus text aggregated by the MetricsDO
// from records sent after each response), the structured request log line, METRICS_PUBLIC with API keys, and
// the request limits (MAX_MESSAGES, MAX_COMPLETION_TOKENS, MAX_BODY_BYTES). The MetricsDO is shared by every
// test of this file, so each test compares counters before and after, and polls /metrics until the records
// (sent through ctx.waitUntil, after the response) have landed.

import { runInDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import app from '../../workers/index.js';
import { sha256 } from '../../workers/auth.js';
import {
  BASE,
  call,
  createSession,
  expectError,
  post,
  postMessage,
  seedModel,
  sleep,
  sseFrames,
  stageStub,
  type ChatReply,
  type Usage,
} from './api-helpers.js';
import type { TestStageDO } from './test-objects.js';
import { MAX_TOKENS, USER_TURNS } from './scenario.js';

beforeAll(seedModel);
afterEach(() => vi.restoreAllMocks());

// ---- the exposition ----

type Labels = Record<string, string>;

interface Scrape {
  text: string;
  samples: Map<string, number>;
}

const seriesKey = (name: string, labels: Labels = {}): string =>
  `${name}{${Object.keys(labels)
    .sort()
    .map((k) => `${k}=${JSON.stringify(labels[k])}`)
    .join(',')}}`;

function parseExposition(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not an exposition line: ${line}`);
    const labels: Labels = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = JSON.parse(`"${l[2]}"`);
    out.set(seriesKey(m[1]!, labels), m[3] === '+Inf' ? Infinity : Number(m[3]));
  }
  return out;
}

async function scrape(e?: object): Promise<Scrape> {
  const res = e ? await app.fetch(new Request(`${BASE}/metrics`), e) : await call('/metrics');
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  return { text, samples: parseExposition(text) };
}

const value = (s: Scrape, name: string, labels: Labels = {}): number => s.samples.get(seriesKey(name, labels)) ?? 0;
const delta = (a: Scrape, b: Scrape, name: string, labels: Labels = {}): number =>
  value(b, name, labels) - value(a, name, labels);

/** The requests recorded, except the scrapes themselves. */
const served = (s: Scrape): number =>
  [...s.samples]
    .filter(([k]) => k.startsWith('hymba_requests_total{') && !k.includes('route="/metrics"'))
    .reduce((n, [, v]) => n + v, 0);

/** Polls /metrics (bounded) until `requests` more requests than in `before` have been recorded. */
async function recorded(before: Scrape, requests: number, ms = 5000): Promise<Scrape> {
  const t0 = Date.now();
  for (;;) {
    const now = await scrape();
    if (served(now) - served(before) >= requests || Date.now() - t0 > ms) return now;
    await sleep(50);
  }
}

/** A histogram's bucket counts (by `le`, ascending) with _count and _sum, for one label set. */
function histogram(s: Scrape, name: string, labels: Labels = {}) {
  const want = seriesKey(name, labels);
  const buckets: [number, number][] = [];
  for (const [k, v] of s.samples) {
    if (!k.startsWith(`${name}_bucket{`)) continue;
    const { le, ...rest } = Object.fromEntries(labelsOf(k));
    if (seriesKey(name, rest) !== want) continue;
    buckets.push([le === '+Inf' ? Infinity : Number(le), v]);
  }
  buckets.sort((a, b) => a[0] - b[0]);
  return { buckets, count: value(s, `${name}_count`, labels), sum: value(s, `${name}_sum`, labels) };
}

function labelsOf(key: string): [string, string][] {
  return [...key.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1]!, JSON.parse(`"${m[2]}"`) as string]);
}

function expectCumulative(h: ReturnType<typeof histogram>): void {
  expect(h.buckets.length).toBeGreaterThan(1);
  const counts = h.buckets.map(([, v]) => v);
  expect(counts).toEqual([...counts].sort((a, b) => a - b));
  expect(h.buckets.at(-1)).toEqual([Infinity, h.count]);
}

// ---- requests ----

const chat = (extra: Record<string, unknown> = {}) => ({
  messages: [{ role: 'user', content: USER_TURNS[0] }],
  max_tokens: MAX_TOKENS,
  temperature: 0,
  ...extra,
});

interface Chunk {
  choices: { finish_reason: string | null }[];
  usage?: Usage | null;
}

describe('GET /metrics', () => {
  it('counts requests by route pattern, errors by type, tokens, turns and latencies across requests', async () => {
    const before = await scrape();

    // a non-streaming chat completion
    const plain = (await (await post('/v1/chat/completions', chat())).json()) as ChatReply;
    // a streaming one, with usage in the last chunk
    const streamed = await post(
      '/v1/chat/completions',
      chat({ stream: true, stream_options: { include_usage: true } }),
    );
    expect(streamed.status).toBe(200);
    const frames = sseFrames(await streamed.text());
    expect(frames.at(-1)).toBe('[DONE]');
    const chunks = frames.filter((f): f is Chunk => typeof f === 'object');
    const streamUsage = chunks.find((c) => c.usage)!.usage!;
    const streamFinish = chunks.flatMap((c) => c.choices.map((x) => x.finish_reason)).find((f) => f !== null)!;
    // a 400
    await expectError(await post('/v1/chat/completions', { max_tokens: 2 }), 400);
    // a session turn
    const id = await createSession('Be brief.');
    const turnRes = await postMessage(id, USER_TURNS[0]!, { max_tokens: MAX_TOKENS });
    expect(turnRes.status).toBe(200);
    const turn = (await turnRes.json()) as ChatReply;

    const after = await recorded(before, 5);
    const req = (route: string, status: string) =>
      delta(before, after, 'hymba_requests_total', { route, method: 'POST', status });
    expect(req('/v1/chat/completions', '200')).toBe(2);
    expect(req('/v1/chat/completions', '400')).toBe(1);
    expect(req('/v1/sessions', '201')).toBe(1);
    expect(req('/v1/sessions/:id/messages', '200')).toBe(1);
    // labels are route patterns, never raw paths
    expect(after.text).not.toContain(id);
    expect(
      delta(before, after, 'hymba_errors_total', { route: '/v1/chat/completions', type: 'invalid_request_error' }),
    ).toBe(1);

    const usages = [plain.usage, streamUsage, turn.usage];
    const total = (f: (u: Usage) => number) => usages.reduce((n, u) => n + f(u), 0);
    expect(delta(before, after, 'hymba_prompt_tokens_total')).toBe(total((u) => u.prompt_tokens));
    expect(delta(before, after, 'hymba_completion_tokens_total')).toBe(total((u) => u.completion_tokens));
    expect(delta(before, after, 'hymba_cached_tokens_total')).toBe(total((u) => u.prompt_tokens_details.cached_tokens));
    const reasons = [plain.choices[0]!.finish_reason, streamFinish, turn.choices[0]!.finish_reason];
    for (const reason of new Set(reasons))
      expect(delta(before, after, 'hymba_turns_total', { finish_reason: reason })).toBe(
        reasons.filter((r) => r === reason).length,
      );

    // histograms: cumulative buckets, +Inf = _count, one observation per turn (each generated tokens)
    const ttft = histogram(after, 'hymba_time_to_first_token_seconds');
    expectCumulative(ttft);
    const generating = usages.filter((u) => u.completion_tokens > 0).length;
    expect(ttft.count - histogram(before, 'hymba_time_to_first_token_seconds').count).toBe(generating);
    const gaps = histogram(after, 'hymba_inter_token_latency_seconds');
    expectCumulative(gaps);
    expect(gaps.count - histogram(before, 'hymba_inter_token_latency_seconds').count).toBe(
      total((u) => Math.max(0, u.completion_tokens - 1)),
    );
    const durations = histogram(after, 'hymba_request_duration_seconds', { route: '/v1/chat/completions' });
    expectCumulative(durations);
    expect(
      durations.count - histogram(before, 'hymba_request_duration_seconds', { route: '/v1/chat/completions' }).count,
    ).toBe(3);

    // the session turn stored state: one snapshot observation, and the session is active
    const snapshots = histogram(after, 'hymba_snapshot_bytes');
    expectCumulative(snapshots);
    const stored = snapshots.count - histogram(before, 'hymba_snapshot_bytes').count;
    expect(stored).toBeGreaterThanOrEqual(1);
    expect(delta(before, after, 'hymba_snapshot_bytes_total')).toBeGreaterThan(0);
    expect(value(after, 'hymba_active_sessions')).toBeGreaterThanOrEqual(1);

    for (const name of ['hymba_requests_total', 'hymba_time_to_first_token_seconds', 'hymba_active_sessions'])
      expect(after.text).toMatch(new RegExp(`# HELP ${name} .+\\n# TYPE ${name} (counter|histogram|gauge)\\n`));
  });

  it('an unknown route counts as "unmatched"; a read counts under its pattern', async () => {
    const before = await scrape();
    expect((await call('/v1/no/such/route')).status).toBe(404);
    const unknown = 'f'.repeat(64);
    expect((await call(`/v1/sessions/${unknown}`)).status).toBe(404);
    const after = await recorded(before, 2);
    expect(delta(before, after, 'hymba_requests_total', { route: 'unmatched', method: 'GET', status: '404' })).toBe(1);
    expect(delta(before, after, 'hymba_errors_total', { route: 'unmatched', type: 'unknown_route' })).toBe(1);
    expect(
      delta(before, after, 'hymba_requests_total', { route: '/v1/sessions/:id', method: 'GET', status: '404' }),
    ).toBe(1);
    expect(after.text).not.toContain(unknown);
  });

  it('an error inside a 200 event stream counts as an error of the route', async () => {
    const id = await createSession();
    const before = await scrape();
    await runInDurableObject(stageStub(0), (instance: TestStageDO) => {
      instance.failRunNumber = instance.runCalls + 3; // during the reply's decode
    });
    try {
      const res = await postMessage(id, USER_TURNS[1]!, { max_tokens: MAX_TOKENS, stream: true });
      expect(res.status).toBe(200);
      const frames = sseFrames(await res.text());
      const last = frames.at(-1) as { error?: { code: string } };
      expect(last.error?.code).toBe('internal_error');
    } finally {
      await runInDurableObject(stageStub(0), (instance: TestStageDO) => {
        instance.failRunNumber = null;
      });
    }
    const after = await recorded(before, 1);
    const route = '/v1/sessions/:id/messages';
    expect(delta(before, after, 'hymba_requests_total', { route, method: 'POST', status: '200' })).toBe(1);
    expect(delta(before, after, 'hymba_errors_total', { route, type: 'internal_error' })).toBe(1);
  });
});

/** An ExecutionContext whose waitUntil work the test can await. */
function testContext() {
  const pending: Promise<unknown>[] = [];
  const ctx = {
    waitUntil: (p: Promise<unknown>) => void pending.push(p),
    passThroughOnException: () => undefined,
    props: {},
  } as unknown as ExecutionContext;
  return { ctx, settled: () => Promise.all(pending) };
}

/** The JSON lines console.log received for one request id. */
function linesOf(spy: { mock: { calls: unknown[][] } }, rid: string): Record<string, unknown>[] {
  return spy.mock.calls
    .map((args) => {
      try {
        return JSON.parse(String(args[0])) as Record<string, unknown>;
      } catch {
        return null;
      }
    })
    .filter((l): l is Record<string, unknown> => l !== null && l.request_id === rid);
}

describe('the request log line', () => {
  it('one JSON line per request with its x-request-id, route, status, owner and the turn numbers', async () => {
    const log = vi.spyOn(console, 'log');
    const e = { ...env, LOG_LEVEL: 'info' };
    const { ctx, settled } = testContext();
    const send = (rid: string, body: unknown) =>
      app.fetch(
        new Request(`${BASE}/v1/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-request-id': rid },
          body: JSON.stringify(body),
        }),
        e,
        ctx,
      );
    const res = await send('obs-log-1', chat());
    expect(res.headers.get('x-request-id')).toBe('obs-log-1');
    const reply = (await res.json()) as ChatReply;
    const bad = await send('obs-log-2', { messages: [], secret_field: 'do-not-log-me' });
    expect(bad.status).toBe(400);
    await settled();

    const lines = linesOf(log, 'obs-log-1');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: 'info',
      msg: 'request',
      request_id: 'obs-log-1',
      method: 'POST',
      route: '/v1/chat/completions',
      status: 200,
      owner: null,
      prompt_tokens: reply.usage.prompt_tokens,
      completion_tokens: reply.usage.completion_tokens,
      cached_tokens: reply.usage.prompt_tokens_details.cached_tokens,
      finish_reason: reply.choices[0]!.finish_reason,
    });
    expect(new Date(String(lines[0]!.ts)).getTime()).toBeGreaterThan(0);
    expect(lines[0]!.duration_ms).toBeGreaterThanOrEqual(0);
    expect(lines[0]!.ttft_ms).toBeGreaterThanOrEqual(0);

    const badLines = linesOf(log, 'obs-log-2');
    expect(badLines.find((l) => l.msg === 'request')).toMatchObject({
      level: 'warn',
      status: 400,
      error_type: 'invalid_request_error',
    });
    expect(badLines.find((l) => l.msg === 'error')).toMatchObject({
      level: 'warn',
      status: 400,
      type: 'invalid_request_error',
      param: 'messages',
    });
    expect(JSON.stringify(badLines)).not.toContain('do-not-log-me');
  });

  it("LOG_LEVEL=warn drops the info lines; a failing MetricsDO is logged, never the client's problem", async () => {
    const log = vi.spyOn(console, 'log');
    const { ctx, settled } = testContext();
    const broken = {
      ...env,
      LOG_LEVEL: 'warn',
      METRICS: {
        getByName: () => {
          throw new Error('metrics store unavailable');
        },
      },
    };
    const get = (rid: string) =>
      app.fetch(new Request(`${BASE}/v1/models`, { headers: { 'x-request-id': rid } }), broken, ctx);
    const res = await get('obs-log-3');
    expect(res.status).toBe(200);
    await settled();
    const lines = linesOf(log, 'obs-log-3');
    expect(lines.filter((l) => l.msg === 'request')).toEqual([]);
    expect(lines.find((l) => l.msg === 'metrics record failed')).toMatchObject({
      level: 'warn',
      error: 'metrics store unavailable',
    });
  });
});

// ---- API keys ----

const hex = (b: Uint8Array): string => [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
const KEY = 'sk-metrics-0123456789';

async function keyedEnv(extra: Record<string, string> = {}) {
  return { ...env, API_KEYS: `scraper:${hex(await sha256(KEY))}`, ...extra };
}

describe('METRICS_PUBLIC', () => {
  it('with API_KEYS, /metrics needs a key unless METRICS_PUBLIC is "true"', async () => {
    const keyed = await keyedEnv();
    const get = (e: object, key: string | null) =>
      app.fetch(new Request(`${BASE}/metrics`, { headers: key ? { authorization: `Bearer ${key}` } : {} }), e);
    await expectError(await get(keyed, null), 401, 'invalid_api_key');
    const withKey = await get(keyed, KEY);
    expect(withKey.status).toBe(200);
    expect(await withKey.text()).toContain('# TYPE hymba_requests_total counter');
    const open = await get(await keyedEnv({ METRICS_PUBLIC: 'true' }), null);
    expect(open.status).toBe(200);
    expect(open.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    // METRICS_PUBLIC opens /metrics only
    await expectError(
      await app.fetch(new Request(`${BASE}/v1/models`), await keyedEnv({ METRICS_PUBLIC: 'true' })),
      401,
    );
  });
});

// ---- limits ----

describe('limits', () => {
  it('max_tokens / max_completion_tokens over MAX_COMPLETION_TOKENS (default 4096): 400 naming the param', async () => {
    const over = await expectError(await post('/v1/chat/completions', chat({ max_tokens: 4097 })), 400);
    expect(over.param).toBe('max_tokens');
    expect(over.message).toContain('4096');
    const overMct = await expectError(
      await post('/v1/chat/completions', chat({ max_tokens: undefined, max_completion_tokens: 5000 })),
      400,
    );
    expect(overMct.param).toBe('max_completion_tokens');
    const text = await expectError(await post('/v1/completions', { prompt: 'Hi', max_tokens: 10_000 }), 400);
    expect(text.param).toBe('max_tokens');
    const id = await createSession();
    const session = await expectError(await postMessage(id, 'hi', { max_tokens: 4097 }), 400);
    expect(session.param).toBe('max_tokens');
  });

  it('more messages than MAX_MESSAGES (default 512): 400 param messages', async () => {
    const messages = Array.from({ length: 513 }, (_, i) => ({ role: i % 2 ? 'assistant' : 'user', content: 'x' }));
    const err = await expectError(await post('/v1/chat/completions', { messages, max_tokens: 1 }), 400);
    expect(err.param).toBe('messages');
    expect(err.message).toContain('512');
  });

  it('the limits follow the environment; the default max_tokens is clamped to MAX_COMPLETION_TOKENS', async () => {
    const e = { ...env, MAX_MESSAGES: '2', MAX_COMPLETION_TOKENS: '3', MAX_BODY_BYTES: '300' };
    const send = (path: string, body: unknown) =>
      app.fetch(
        new Request(BASE + path, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
        }),
        e,
      );
    const three = [
      { role: 'user', content: 'a' },
      { role: 'assistant', content: 'b' },
      { role: 'user', content: 'c' },
    ];
    expect((await expectError(await send('/v1/chat/completions', { messages: three }), 400)).param).toBe('messages');
    expect((await expectError(await send('/v1/chat/completions', chat({ max_tokens: 4 })), 400)).param).toBe(
      'max_tokens',
    );
    // no max_tokens: DEFAULT_MAX_TOKENS (256) clamped to 3
    const res = await send('/v1/chat/completions', chat({ max_tokens: undefined, temperature: 0 }));
    expect(res.status).toBe(200);
    expect(((await res.json()) as ChatReply).usage.completion_tokens).toBeLessThanOrEqual(3);
    // a body over MAX_BODY_BYTES: 413, for every POST route
    const big = { messages: [{ role: 'user', content: 'x'.repeat(400) }] };
    await expectError(await send('/v1/chat/completions', big), 413, 'request_too_large');
    await expectError(await send('/tokenize', { prompt: 'x'.repeat(400) }), 413, 'request_too_large');
    await expectError(await send('/v1/sessions', { system: 'x'.repeat(400) }), 413, 'request_too_large');
  });
});
