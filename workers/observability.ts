// Per-request observability: a RequestMetrics object in the Hono context (`c.get('metrics')`), filled by
// openTurn's observer while a route reads its turn, finished when the response body is complete (for an event
// stream: when the stream ends, is cancelled or fails). Then one JSON log line goes to console.log and one
// record to the MetricsDO, through ctx.waitUntil: never on the response's path, and a failure to record is
// logged, never sent to the client.

import type { Context, MiddlewareHandler } from 'hono';
import type { TurnEvent } from '../engine/serve/protocol.js';
import type { AppEnv } from './app-env.js';
import { toApiError } from './api/errors.js';
import type { TurnObserver } from './do-client.js';
import type { Env } from '../durable-objects/env.js';
import { settingsOf } from '../durable-objects/settings.js';
import { log, requestLogLine, routeLabel } from './log.js';
import {
  emptyHistogram,
  LATENCY_BUCKETS_S,
  METRICS_OBJECT,
  observe,
  type HistogramData,
  type RequestRecord,
  type TurnRecord,
} from '../durable-objects/metrics/metrics.js';

/** One turn, as the route read it. */
class TurnSample {
  promptTokens = 0;
  completionTokens = 0;
  cachedTokens = 0;
  finishReason: string | null = null;
  snapshotBytes = 0;
  firstOutputAt: number | null = null;
  private lastTokenAt: number | null = null;
  private tokensSeen = 0;
  private finished = false;
  readonly interToken: HistogramData = emptyHistogram(LATENCY_BUCKETS_S);

  constructor(readonly session: string | null) {}

  event(e: TurnEvent, at: number): void {
    switch (e.type) {
      case 'start':
        this.promptTokens = e.promptTokens;
        this.cachedTokens = e.cachedTokens;
        break;
      case 'token':
        if (this.lastTokenAt !== null) observe(this.interToken, LATENCY_BUCKETS_S, (at - this.lastTokenAt) / 1000);
        this.lastTokenAt = at;
        this.tokensSeen++;
        this.firstOutputAt ??= at;
        break;
      case 'tool_call':
        this.firstOutputAt ??= at;
        break;
      case 'done':
        this.finished = true;
        this.promptTokens = e.promptTokens;
        this.completionTokens = e.completionTokens;
        this.cachedTokens = e.cachedTokens;
        this.finishReason = e.finishReason;
        this.snapshotBytes = e.snapshotBytes ?? 0;
        break;
      case 'error':
        // reported with the response: its HTTP status, or the event stream's error frame
        break;
    }
  }

  /** Tokens generated: the `done` event's count, or those seen before the turn stopped. */
  get generated(): number {
    return this.finished ? this.completionTokens : this.tokensSeen;
  }

  record(requestStart: number): TurnRecord {
    return {
      session: this.session,
      promptTokens: this.promptTokens,
      completionTokens: this.generated,
      cachedTokens: this.cachedTokens,
      finishReason: this.finishReason,
      snapshotBytes: this.snapshotBytes,
      ttftS: this.firstOutputAt === null ? null : Math.max(0, this.firstOutputAt - requestStart) / 1000,
      interToken: this.interToken,
    };
  }
}

/** The numbers of one request; the turn observer of every openTurn the request makes. */
export class RequestMetrics implements TurnObserver {
  readonly turns: TurnSample[] = [];
  /** the error type of an error frame inside the response's event stream */
  streamError: string | null = null;

  constructor(readonly start: number = Date.now()) {}

  turnAccepted(session: string | null): void {
    this.turns.push(new TurnSample(session));
  }

  turnEvent(event: TurnEvent, at: number): void {
    this.turns.at(-1)?.event(event, at);
  }

  turnRecords(): TurnRecord[] {
    return this.turns.map((t) => t.record(this.start));
  }
}

/** An error's metric label: its code when it has one (`context_length_exceeded`), else its type. */
export function errorLabel(err: { type?: unknown; code?: unknown } | null | undefined): string | null {
  const v = typeof err?.code === 'string' && err.code ? err.code : typeof err?.type === 'string' ? err.type : null;
  return v ? v.slice(0, 64) : null;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;

/**
 * The error type an SSE frame carries, or null: Chat Completions' `data: {"error": {...}}`, an `event: error`
 * frame, or a `{"type": "error"}` / `{"type": "response.failed"}` payload (Responses).
 */
export function sseErrorType(frame: string): string | null {
  if (!frame.includes('error')) return null;
  let event = '';
  const data: string[] = [];
  for (const line of frame.split(/\r?\n/)) {
    if (line.startsWith('event:')) event = line.slice(6).trim();
    else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
  }
  const fallback = event === 'error' ? 'stream_error' : null;
  let payload: unknown;
  try {
    payload = JSON.parse(data.join('\n'));
  } catch {
    return fallback;
  }
  if (!isObject(payload)) return fallback;
  if (isObject(payload.error) && payload.type !== 'response.failed') return errorLabel(payload.error) ?? 'stream_error';
  if (payload.type === 'error' || event === 'error') return errorLabel(payload) ?? 'stream_error';
  if (payload.type === 'response.failed') {
    const response = isObject(payload.response) ? payload.response : {};
    return errorLabel(isObject(response.error) ? response.error : null) ?? 'stream_error';
  }
  return null;
}

/**
 * Passes an event stream through unchanged, reporting its first error frame and calling `onEnd` once when it
 * ends, fails or is cancelled. Reads only on demand, so a client that stops reading still stops the turn.
 */
export function watchEventStream(
  body: ReadableStream<Uint8Array>,
  onError: (type: string) => void,
  onEnd: () => void,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let pending = '';
  let sawError = false;
  let ended = false;
  const end = (): void => {
    if (ended) return;
    ended = true;
    onEnd();
  };
  const scan = (chunk: Uint8Array): void => {
    if (sawError) return;
    pending += decoder.decode(chunk, { stream: true });
    let at: number;
    while (!sawError && (at = pending.indexOf('\n\n')) >= 0) {
      const frame = pending.slice(0, at);
      pending = pending.slice(at + 2);
      const type = sseErrorType(frame);
      if (type !== null) {
        sawError = true;
        onError(type);
      }
    }
  };
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          const { value, done } = await reader.read();
          if (done) {
            controller.close();
            end();
            return;
          }
          try {
            scan(value);
          } catch {
            // watching must never break the stream
          }
          controller.enqueue(value);
        } catch (err) {
          controller.error(err);
          end();
        }
      },
      async cancel(reason) {
        end();
        await reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}

// ---- the middleware ----

async function errorTypeOf(c: Context<AppEnv>, res: Response): Promise<string> {
  if (c.error) return errorLabel(toApiError(c.error)) ?? `http_${res.status}`;
  if ((res.headers.get('content-type') ?? '').includes('json')) {
    try {
      const body = (await res.clone().json()) as { error?: { type?: unknown; code?: unknown } };
      const label = errorLabel(body?.error);
      if (label !== null) return label;
    } catch {
      // not an OpenAI error body
    }
  }
  return `http_${res.status}`;
}

async function sendRecord(env: Env, record: RequestRecord): Promise<void> {
  if (!env.METRICS) return;
  await env.METRICS.getByName(METRICS_OBJECT).record(record);
}

/** ctx.waitUntil when there is an ExecutionContext (app.fetch called without one in tests: just run). */
function afterResponse(c: Context<AppEnv>, work: Promise<unknown>): void {
  let ctx: Context['executionCtx'] | undefined;
  try {
    ctx = c.executionCtx;
  } catch {
    ctx = undefined;
  }
  ctx?.waitUntil(work);
}

/**
 * The first middleware after the request id: measures the request, wraps an event-stream body so that it is
 * finished when the stream ends, then logs the line and sends the record (one MetricsDO call per request).
 */
export const observeRequests: MiddlewareHandler<AppEnv> = async function observeRequests(c, next) {
  const metrics = new RequestMetrics(Date.now());
  c.set('metrics', metrics);
  await next();
  const res = c.res;
  const status = res.status;
  const httpError = status >= 400 ? await errorTypeOf(c, res) : null;
  let ended: Promise<void> = Promise.resolve();
  if (res.body && (res.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
    let streamEnded = (): void => undefined;
    ended = new Promise<void>((resolve) => (streamEnded = resolve));
    const onError = (type: string): void => {
      metrics.streamError = type;
    };
    c.res = new Response(
      watchEventStream(res.body, onError, () => streamEnded()),
      res,
    );
  }
  const finish = async (): Promise<void> => {
    const at = Date.now();
    const turns = metrics.turnRecords();
    const errors = [httpError, metrics.streamError].filter((t): t is string => t !== null);
    const record: RequestRecord = {
      route: routeLabel(c),
      method: c.req.method,
      status,
      durationS: Math.max(0, at - metrics.start) / 1000,
      errors,
      turns,
      at,
    };
    const line = requestLogLine({
      requestId: c.get('requestId') ?? null,
      method: record.method,
      route: record.route,
      status,
      durationMs: at - metrics.start,
      owner: c.get('owner') ?? null,
      errorType: errors[0] ?? null,
      streamError: metrics.streamError !== null,
      turns,
    });
    const { logLevel } = settingsOf(c.env);
    log(line, logLevel);
    try {
      await sendRecord(c.env, record);
    } catch (err) {
      log(
        {
          ts: new Date().toISOString(),
          level: 'warn',
          msg: 'metrics record failed',
          request_id: c.get('requestId') ?? null,
          error: err instanceof Error ? err.message : String(err),
        },
        logLevel,
      );
    }
  };
  afterResponse(
    c,
    ended.then(finish).catch((err: unknown) => console.error('request observation failed:', err)),
  );
};
