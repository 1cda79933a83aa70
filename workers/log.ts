// Structured logs: one JSON line per request (console.log), and one per error the app's onError handles.
// Only the fields built here are logged: never request bodies, never API keys (the key's name is the owner).

import type { Context } from 'hono';
import { matchedRoutes } from 'hono/route';
import type { ApiError } from './api/errors.js';
import type { TurnRecord } from '../durable-objects/metrics/metrics.js';

export type LogLevel = 'info' | 'warn' | 'error';

const RANK: Record<string, number> = { info: 0, warn: 1, error: 2, off: 3 };

/**
 * Writes one structured line when its level is at least `threshold` (LOG_LEVEL: info (default), warn, error
 * or off).
 */
export function log(line: Record<string, unknown> & { level: LogLevel }, threshold?: string): void {
  const min = RANK[(threshold ?? 'info').trim().toLowerCase()] ?? 0;
  if ((RANK[line.level] ?? 0) >= min) console.log(JSON.stringify(line));
}

/** The route label: the matched handler's pattern (`/v1/sessions/:id`, never the raw path), or `unmatched`. */
export function routeLabel(c: Context): string {
  const routes = matchedRoutes(c);
  // middleware (app.use) matches as method ALL; the last route of another method is the handler
  for (let i = routes.length - 1; i >= 0; i--) if (routes[i]!.method !== 'ALL') return routes[i]!.path;
  return 'unmatched';
}

export interface RequestLogInput {
  requestId: string | null;
  method: string;
  route: string;
  status: number;
  durationMs: number;
  owner: string | null;
  /** the HTTP error's type (status >= 400), or the type of an error sent inside the event stream */
  errorType: string | null;
  /** the error came inside a 200 event stream */
  streamError: boolean;
  turns: readonly TurnRecord[];
  now?: Date;
}

/** A request's line: level error for 5xx and errors inside streams, warn for 4xx, else info. */
export function requestLogLine(i: RequestLogInput): Record<string, unknown> & { level: LogLevel } {
  const level: LogLevel = i.status >= 500 || i.streamError ? 'error' : i.status >= 400 ? 'warn' : 'info';
  const line: Record<string, unknown> & { level: LogLevel } = {
    ts: (i.now ?? new Date()).toISOString(),
    level,
    msg: 'request',
    request_id: i.requestId,
    method: i.method,
    route: i.route,
    status: i.status,
    duration_ms: i.durationMs,
    owner: i.owner,
  };
  if (i.errorType !== null) line.error_type = i.errorType;
  if (i.turns.length > 0) {
    const sum = (f: (t: TurnRecord) => number): number => i.turns.reduce((n, t) => n + f(t), 0);
    const first = i.turns.find((t) => t.ttftS !== null);
    line.prompt_tokens = sum((t) => t.promptTokens);
    line.completion_tokens = sum((t) => t.completionTokens);
    line.cached_tokens = sum((t) => t.cachedTokens);
    line.ttft_ms = first ? Math.round(first.ttftS! * 1000) : null;
    line.finish_reason = i.turns.at(-1)!.finishReason;
  }
  return line;
}

/**
 * An error's line: level error for 5xx (with `cause`: the stack of what was thrown, which the client never
 * sees), warn for 4xx; the type, code, param and the message the client got.
 */
export function errorLogLine(
  c: Context,
  e: ApiError,
  cause: string | null,
  now = new Date(),
): Record<string, unknown> & { level: LogLevel } {
  let requestId: string | null = null;
  try {
    requestId = (c.get('requestId') as string | undefined) ?? null;
  } catch {
    // a context without variables
  }
  return {
    ts: now.toISOString(),
    level: e.status >= 500 ? ('error' as const) : ('warn' as const),
    msg: 'error',
    request_id: requestId,
    method: c.req.method,
    route: routeLabel(c),
    status: e.status,
    type: e.type,
    code: e.code,
    param: e.param,
    message: e.message,
    ...(cause !== null ? { cause } : {}),
  };
}
