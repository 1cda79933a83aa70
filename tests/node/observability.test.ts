// The parts of the observability and limits code that need no Worker: the metrics aggregate and its Prometheus
// exposition, error frames inside event streams, the structured log line, and the limit checks.

import { describe, expect, it } from 'vitest';
import { ApiError } from '../../workers/api/errors.js';
import { checkMaxTokens, checkMessageCount, DEFAULT_LIMITS, limitsOf } from '../../workers/limits.js';
import { requestLogLine } from '../../workers/log.js';
import {
  ACTIVE_SESSION_WINDOW_MS,
  applyRecord,
  emptyHistogram,
  emptyState,
  exposition,
  LATENCY_BUCKETS_S,
  loadState,
  observe,
  type RequestRecord,
  type TurnRecord,
} from '../../durable-objects/metrics/metrics.js';
import { RequestMetrics, sseErrorType, watchEventStream } from '../../workers/observability.js';
import type { Env } from '../../durable-objects/env.js';

function turn(extra: Partial<TurnRecord> = {}): TurnRecord {
  const interToken = emptyHistogram(LATENCY_BUCKETS_S);
  observe(interToken, LATENCY_BUCKETS_S, 0.02);
  observe(interToken, LATENCY_BUCKETS_S, 0.03);
  return {
    session: null,
    promptTokens: 10,
    completionTokens: 3,
    cachedTokens: 4,
    finishReason: 'length',
    snapshotBytes: 0,
    ttftS: 0.2,
    interToken,
    ...extra,
  };
}

function record(extra: Partial<RequestRecord> = {}): RequestRecord {
  return {
    route: '/v1/chat/completions',
    method: 'POST',
    status: 200,
    durationS: 0.3,
    errors: [],
    turns: [turn()],
    at: 1_000_000,
    ...extra,
  };
}

/** `name{labels} value` lines -> map */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

describe('the metrics aggregate', () => {
  it('counts requests, errors, tokens and turns with bounded labels', () => {
    const s = emptyState();
    applyRecord(s, record());
    applyRecord(s, record({ turns: [turn({ session: 'abc', snapshotBytes: 5000, finishReason: 'stop' })] }));
    applyRecord(s, record({ status: 400, errors: ['invalid_request_error'], turns: [] }));
    applyRecord(s, record({ errors: ['internal_error'], turns: [turn({ finishReason: null, ttftS: null })] }));
    const m = samples(exposition(s, 1_000_000));
    expect(m.get('hymba_requests_total{route="/v1/chat/completions",method="POST",status="200"}')).toBe(3);
    expect(m.get('hymba_requests_total{route="/v1/chat/completions",method="POST",status="400"}')).toBe(1);
    expect(m.get('hymba_errors_total{route="/v1/chat/completions",type="invalid_request_error"}')).toBe(1);
    expect(m.get('hymba_errors_total{route="/v1/chat/completions",type="internal_error"}')).toBe(1);
    expect(m.get('hymba_prompt_tokens_total')).toBe(30);
    expect(m.get('hymba_completion_tokens_total')).toBe(9);
    expect(m.get('hymba_cached_tokens_total')).toBe(12);
    expect(m.get('hymba_turns_total{finish_reason="length"}')).toBe(1);
    expect(m.get('hymba_turns_total{finish_reason="stop"}')).toBe(1);
    expect(m.get('hymba_time_to_first_token_seconds_count')).toBe(2);
    expect(m.get('hymba_time_to_first_token_seconds_bucket{le="0.25"}')).toBe(2);
    expect(m.get('hymba_time_to_first_token_seconds_bucket{le="0.1"}')).toBe(0);
    expect(m.get('hymba_inter_token_latency_seconds_count')).toBe(6);
    expect(m.get('hymba_inter_token_latency_seconds_sum')).toBeCloseTo(0.15, 10);
    expect(m.get('hymba_request_duration_seconds_count{route="/v1/chat/completions"}')).toBe(4);
    expect(m.get('hymba_snapshot_bytes_count')).toBe(1);
    expect(m.get('hymba_snapshot_bytes_total')).toBe(5000);
    expect(m.get('hymba_snapshot_bytes_bucket{le="4096"}')).toBe(0);
    expect(m.get('hymba_snapshot_bytes_bucket{le="16384"}')).toBe(1);
    expect(m.get('hymba_active_sessions')).toBe(1);
  });

  it('writes HELP and TYPE for every metric, cumulative buckets ending at +Inf = _count', () => {
    const s = emptyState();
    for (const d of [0.001, 0.007, 0.3, 0.3, 12, 100]) applyRecord(s, record({ durationS: d }));
    const text = exposition(s, 0);
    for (const name of [
      'hymba_requests_total',
      'hymba_errors_total',
      'hymba_prompt_tokens_total',
      'hymba_completion_tokens_total',
      'hymba_cached_tokens_total',
      'hymba_turns_total',
      'hymba_time_to_first_token_seconds',
      'hymba_inter_token_latency_seconds',
      'hymba_request_duration_seconds',
      'hymba_active_sessions',
      'hymba_snapshot_bytes',
      'hymba_snapshot_bytes_total',
    ]) {
      expect(text).toContain(`# HELP ${name} `);
      expect(text).toMatch(new RegExp(`# TYPE ${name} (counter|gauge|histogram)\\n`));
    }
    const buckets = [...samples(text)]
      .filter(([k]) => k.startsWith('hymba_request_duration_seconds_bucket'))
      .map(([, v]) => v);
    expect(buckets).toHaveLength(LATENCY_BUCKETS_S.length + 1);
    expect(buckets).toEqual([...buckets].sort((a, b) => a - b));
    expect(buckets.at(-1)).toBe(6);
    expect(buckets[0]).toBe(1); // 0.001 <= 0.005
    expect(text.endsWith('\n')).toBe(true);
  });

  it('escapes label values and forgets sessions after the window', () => {
    const s = emptyState();
    applyRecord(s, record({ route: 'a"b\\c\nd', turns: [turn({ session: 'x' })], at: 0 }));
    const text = exposition(s, ACTIVE_SESSION_WINDOW_MS + 1);
    expect(text).toContain('route="a\\"b\\\\c\\nd"');
    expect(samples(text).get('hymba_active_sessions')).toBe(0);
    expect(s.sessions).toEqual({});
  });

  it('survives a round trip through its JSON row; a bad row starts fresh', () => {
    const s = emptyState();
    applyRecord(s, record());
    const back = loadState(JSON.stringify(s));
    applyRecord(back, record());
    expect(samples(exposition(back, 0)).get('hymba_prompt_tokens_total')).toBe(20);
    expect(loadState('{nope')).toEqual(emptyState());
    expect(loadState(JSON.stringify({ version: 99 }))).toEqual(emptyState());
  });
});

describe('measuring a turn', () => {
  it('ttft from the request start to the first token, gaps between tokens, counts from done', () => {
    const m = new RequestMetrics(1000);
    m.turnAccepted('sess');
    m.turnEvent({ type: 'start', promptTokens: 7, cachedTokens: 2 }, 1100);
    m.turnEvent({ type: 'token', id: 1, text: 'a' }, 1250);
    m.turnEvent({ type: 'token', id: 2, text: 'b' }, 1300);
    m.turnEvent({ type: 'token', id: 3, text: 'c' }, 1400);
    m.turnEvent(
      {
        type: 'done',
        finishReason: 'length',
        promptTokens: 7,
        completionTokens: 3,
        cachedTokens: 2,
        tail: '',
        snapshotBytes: 99,
      },
      1400,
    );
    const [t] = m.turnRecords();
    expect(t).toMatchObject({
      session: 'sess',
      promptTokens: 7,
      completionTokens: 3,
      cachedTokens: 2,
      finishReason: 'length',
      snapshotBytes: 99,
      ttftS: 0.25,
    });
    expect(t!.interToken.count).toBe(2);
    expect(t!.interToken.sum).toBeCloseTo(0.15, 10);
  });

  it('a turn that stops early counts the prompt and the tokens seen; a tool call is a first output', () => {
    const m = new RequestMetrics(0);
    m.turnAccepted(null);
    m.turnEvent({ type: 'start', promptTokens: 5, cachedTokens: 0 }, 10);
    m.turnEvent({ type: 'tool_call', index: 0, id: 'c', name: 'f', arguments: '{}' }, 40);
    m.turnEvent({ type: 'token', id: 1, text: '' }, 50);
    expect(m.turnRecords()[0]).toMatchObject({ promptTokens: 5, completionTokens: 1, finishReason: null, ttftS: 0.04 });
  });
});

describe('errors inside event streams', () => {
  it('recognises Chat Completions and Responses error frames, not ordinary chunks', () => {
    const chat = 'data: {"error":{"message":"m","type":"server_error","param":null,"code":"internal_error"}}';
    expect(sseErrorType(chat)).toBe('internal_error');
    expect(sseErrorType('data: {"error":{"message":"m","type":"server_error","code":null}}')).toBe('server_error');
    expect(sseErrorType('event: error\ndata: {"type":"error","code":"overloaded","message":"x"}')).toBe('overloaded');
    expect(
      sseErrorType('event: response.failed\ndata: {"type":"response.failed","response":{"error":{"code":"e1"}}}'),
    ).toBe('e1');
    expect(sseErrorType('data: {"choices":[{"delta":{"content":"error"}}]}')).toBeNull();
    expect(sseErrorType(': keep-alive')).toBeNull();
    expect(sseErrorType('data: [DONE]')).toBeNull();
  });

  it('passes the bytes through, reports the first error frame once, and ends once', async () => {
    const enc = new TextEncoder();
    const parts = [
      'data: {"a":1}\n\ndata: {"err',
      'or":{"type":"t","code":"c1"}}\n\n',
      'data: {"error":{"code":"c2"}}\n\n',
    ];
    const source = new ReadableStream<Uint8Array>({
      start(controller) {
        for (const p of parts) controller.enqueue(enc.encode(p));
        controller.close();
      },
    });
    const errors: string[] = [];
    let ends = 0;
    const out = watchEventStream(
      source,
      (t) => errors.push(t),
      () => ends++,
    );
    expect(await new Response(out).text()).toBe(parts.join(''));
    expect(errors).toEqual(['c1']);
    expect(ends).toBe(1);
  });

  it('a cancelled stream ends the record too', async () => {
    let cancelled = false;
    const source = new ReadableStream<Uint8Array>({
      pull(controller) {
        controller.enqueue(new TextEncoder().encode('data: {}\n\n'));
      },
      cancel() {
        cancelled = true;
      },
    });
    let ends = 0;
    const reader = watchEventStream(
      source,
      () => undefined,
      () => ends++,
    ).getReader();
    await reader.read();
    await reader.cancel();
    expect(ends).toBe(1);
    expect(cancelled).toBe(true);
  });
});

describe('the request log line', () => {
  it('has the listed fields, turn numbers when a turn ran, and a level by outcome', () => {
    const now = new Date('2026-01-02T03:04:05.000Z');
    const base = {
      requestId: 'rid-1',
      method: 'POST',
      route: '/v1/chat/completions',
      status: 200,
      durationMs: 42,
      owner: 'alice',
      errorType: null,
      streamError: false,
      turns: [turn()],
      now,
    };
    expect(requestLogLine(base)).toEqual({
      ts: '2026-01-02T03:04:05.000Z',
      level: 'info',
      msg: 'request',
      request_id: 'rid-1',
      method: 'POST',
      route: '/v1/chat/completions',
      status: 200,
      duration_ms: 42,
      owner: 'alice',
      prompt_tokens: 10,
      completion_tokens: 3,
      cached_tokens: 4,
      ttft_ms: 200,
      finish_reason: 'length',
    });
    const bad = requestLogLine({ ...base, status: 400, errorType: 'invalid_request_error', turns: [] });
    expect(bad).toMatchObject({ level: 'warn', error_type: 'invalid_request_error' });
    expect(bad).not.toHaveProperty('prompt_tokens');
    expect(requestLogLine({ ...base, errorType: 'internal_error', streamError: true }).level).toBe('error');
    expect(requestLogLine({ ...base, status: 503, turns: [] }).level).toBe('error');
  });
});

describe('limits', () => {
  const env = (vars: Record<string, string>) => vars as unknown as Env;

  it('reads the settings, falls back to the defaults on bad values, clamps the default max_tokens', () => {
    expect(limitsOf(env({}))).toEqual(DEFAULT_LIMITS);
    expect(limitsOf(env({ MAX_MESSAGES: '3', MAX_COMPLETION_TOKENS: '100', MAX_BODY_BYTES: '2048' }))).toEqual({
      maxMessages: 3,
      maxCompletionTokens: 100,
      maxBodyBytes: 2048,
      defaultMaxTokens: 100,
    });
    expect(limitsOf(env({ MAX_MESSAGES: 'x', MAX_COMPLETION_TOKENS: '-1', MAX_BODY_BYTES: '1.5' }))).toEqual(
      DEFAULT_LIMITS,
    );
  });

  it('answers 400 naming the parameter and the limit', () => {
    const limits = limitsOf(env({ MAX_MESSAGES: '2', MAX_COMPLETION_TOKENS: '10' }));
    expect(() => checkMessageCount(limits, 2)).not.toThrow();
    const many = (() => {
      try {
        checkMessageCount(limits, 3);
      } catch (e) {
        return e as ApiError;
      }
    })();
    expect(many).toBeInstanceOf(ApiError);
    expect(many).toMatchObject({ status: 400, param: 'messages' });
    expect(many!.message).toMatch(/maximum length 2\b/);
    expect(() => checkMaxTokens(limits, { max_completion_tokens: 10, max_tokens: null })).not.toThrow();
    try {
      checkMaxTokens(limits, { max_completion_tokens: null, max_tokens: 11 });
      expect.unreachable();
    } catch (e) {
      expect(e).toMatchObject({ status: 400, param: 'max_tokens' });
      expect((e as Error).message).toMatch(/\b10\b/);
    }
  });
});
