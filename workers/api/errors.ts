// The one error module of the Worker: the error kinds (engine/serve/errors.ts) -> HTTP status + the OpenAI error object
// `{ "error": { "message", "type", "param", "code" } }`, and the Hono handlers that send it.
//
// Clients (the openai SDKs) retry 408/409/429/5xx, so every error with those statuses must be safe to retry:
// nothing here carries state, and `retryAfter` becomes a `Retry-After` header.

import type { Context, ErrorHandler, NotFoundHandler } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import {
  errors,
  GENERIC_INTERNAL_MESSAGE,
  isFailed,
  ServeError,
  type ErrorKind,
  type ServeErrorInfo,
} from '../../engine/serve/errors.js';
import { settingsOf } from '../../durable-objects/settings.js';
import { errorLogLine, log } from '../log.js';

export type ApiErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error'
  | 'conflict_error'
  | 'rate_limit_error'
  | 'server_error'
  | 'service_unavailable_error';

/** The one map from an error kind (engine/serve/errors.ts) to the HTTP status and the OpenAI error type. */
const HTTP: Readonly<Record<ErrorKind, { status: ContentfulStatusCode; type: ApiErrorType }>> = {
  invalid: { status: 400, type: 'invalid_request_error' },
  unauthorized: { status: 401, type: 'authentication_error' },
  forbidden: { status: 403, type: 'permission_error' },
  not_found: { status: 404, type: 'not_found_error' },
  busy: { status: 409, type: 'conflict_error' },
  conflict: { status: 409, type: 'conflict_error' },
  too_large: { status: 413, type: 'invalid_request_error' },
  too_long: { status: 422, type: 'invalid_request_error' },
  rate_limited: { status: 429, type: 'rate_limit_error' },
  internal: { status: 500, type: 'server_error' },
  unavailable: { status: 503, type: 'service_unavailable_error' },
};

export interface ApiErrorOptions {
  param?: string | null;
  code?: string | null;
  /** seconds; sent as `Retry-After` */
  retryAfter?: number;
  cause?: unknown;
}

/** The wire shape of an error, as in the OpenAI API. */
export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

export class ApiError extends Error {
  override readonly name = 'ApiError';
  readonly kind: ErrorKind;
  readonly status: ContentfulStatusCode;
  readonly type: ApiErrorType;
  readonly param: string | null;
  readonly code: string | null;
  readonly retryAfter: number | undefined;

  constructor(kind: ErrorKind, message: string, opts: ApiErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.kind = kind;
    this.status = HTTP[kind].status;
    this.type = HTTP[kind].type;
    this.param = opts.param ?? null;
    this.code = opts.code ?? null;
    // every 409 is safe to retry once the other turn or upload has finished
    this.retryAfter = opts.retryAfter ?? (this.status === 409 ? 1 : undefined);
  }

  /** An error a Durable Object or the turn code reported (RPC result, turn stream event, thrown ServeError). */
  static from(info: ServeErrorInfo | ServeError): ApiError {
    const i = info instanceof ServeError ? info.info : info;
    const kind: ErrorKind = i.kind in HTTP ? i.kind : 'internal';
    return new ApiError(kind, i.message, { param: i.param, code: i.code, retryAfter: i.retryAfter });
  }

  /** 400: the request is malformed; `param` names the offending field path (`messages[1].content`). */
  static invalidRequest(message: string, param: string | null = null, code: string | null = null): ApiError {
    return ApiError.from(errors.invalid(message, param, code));
  }

  /** 401: missing or wrong API key. */
  static unauthorized(message = 'Missing or invalid API key. Send it as "Authorization: Bearer <key>".'): ApiError {
    return new ApiError('unauthorized', message, { code: 'invalid_api_key' });
  }

  /** 403: the key may not do this. (Resources of another key are reported as 404, never 403.) */
  static forbidden(message: string): ApiError {
    return new ApiError('forbidden', message, { code: 'forbidden' });
  }

  /** 404: unknown model, session, response or route. */
  static notFound(message: string, param: string | null = null, code: string | null = 'not_found'): ApiError {
    return new ApiError('not_found', message, { param, code });
  }

  /** 409: the session is running another turn; safe to retry. */
  static sessionBusy(): ApiError {
    return ApiError.from(errors.busy());
  }

  /** 413: body, message count or similar over a limit. */
  static tooLarge(message: string, param: string | null = null): ApiError {
    return new ApiError('too_large', message, { param, code: 'request_too_large' });
  }

  /** 422: the prompt does not fit the model's context (OpenAI's wording, which clients match on). */
  static contextLengthExceeded(promptTokens: number, contextLength: number, param = 'messages'): ApiError {
    return ApiError.from(errors.contextLengthExceeded(promptTokens, contextLength, param));
  }

  /** 429: over the per-key request rate. */
  static rateLimited(retryAfter: number, message = 'Rate limit reached for this API key; retry later.'): ApiError {
    return new ApiError('rate_limited', message, { code: 'rate_limit_exceeded', retryAfter });
  }

  /** 500: a bug or an unexpected failure; the message must not leak internals. */
  static internal(message = GENERIC_INTERNAL_MESSAGE, cause?: unknown): ApiError {
    return new ApiError('internal', message, { code: 'internal_error', cause });
  }

  /** 503: the model is still loading. */
  static loading(retryAfter = 5, message = 'The model is loading; retry shortly.'): ApiError {
    return new ApiError('unavailable', message, { code: 'model_loading', retryAfter });
  }

  /** 503: too much work queued. */
  static overloaded(retryAfter = 1, message = 'The server is overloaded; retry shortly.'): ApiError {
    return new ApiError('unavailable', message, { code: 'overloaded', retryAfter });
  }

  /** The form a Durable Object sends in a TurnEvent. */
  toInfo(): ServeErrorInfo {
    return { kind: this.kind, message: this.message, code: this.code, param: this.param };
  }
}

/**
 * An RPC result (`T | Failed`, engine/serve/errors.ts): its value, or the ApiError its `{ error }` stands for thrown. `T` is named
 * by the caller: the stub's mapped types of larger results do not survive inference.
 */
export function unwrap<T>(result: unknown): T {
  if (isFailed(result)) throw ApiError.from(result.error);
  return result as T;
}

/** `{ error: { message, type, param, code } }` */
export function errorBody(e: ApiError): ErrorBody {
  return { error: { message: e.message, type: e.type, param: e.param, code: e.code } };
}

/** Anything thrown -> an ApiError. Unknown errors become a generic 500 (their details stay in the log). */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof ServeError) return ApiError.from(err);
  if (err instanceof HTTPException) return fromHttpException(err);
  return ApiError.internal(undefined, err);
}

/** A JSON error response (for code outside a Hono handler, e.g. a Durable Object fetch). */
export function errorResponse(e: ApiError): Response {
  return new Response(JSON.stringify(errorBody(e)), { status: e.status, headers: errorHeaders(e, true) });
}

/**
 * Hono `app.onError`: every thrown error leaves as the OpenAI error object. Each is logged as one JSON line
 * with the request id (workers/log.ts): type, code and message; for a 5xx also its stack, which only the log sees.
 */
export const onError: ErrorHandler = function onApiError(err, c) {
  const e = toApiError(err);
  // c.env is absent only when the app runs outside a Worker (unit tests of the HTTP layer)
  log(errorLogLine(c, e, e.status >= 500 ? describe(err) : null), c.env ? settingsOf(c.env).logLevel : undefined);
  return c.json(errorBody(e), e.status, errorHeaders(e, false));
};

/** Hono `app.notFound`. */
export const notFound: NotFoundHandler = function onApiNotFound(c: Context) {
  const e = ApiError.notFound(`Unknown route: ${c.req.method} ${c.req.path}`, null, 'unknown_route');
  return c.json(errorBody(e), e.status);
};

function errorHeaders(e: ApiError, withContentType: boolean): Record<string, string> {
  const headers: Record<string, string> = withContentType ? { 'content-type': 'application/json' } : {};
  if (e.retryAfter !== undefined) headers['retry-after'] = String(Math.max(0, Math.ceil(e.retryAfter)));
  return headers;
}

function fromHttpException(err: HTTPException): ApiError {
  const message = err.message !== '' ? err.message : undefined;
  switch (err.status) {
    case 400:
      return ApiError.invalidRequest(message ?? 'Invalid request.');
    case 401:
      return ApiError.unauthorized(message);
    case 404:
      return ApiError.notFound(message ?? 'Not found.');
    case 413:
      return ApiError.tooLarge(message ?? 'The request body is too large.');
    default:
      // Hono raises no other statuses here; a 4xx stays the client's fault, a 5xx is ours
      return err.status >= 500
        ? ApiError.internal(undefined, err)
        : ApiError.invalidRequest(message ?? 'Invalid request.');
  }
}

function describe(err: unknown): string {
  if (err instanceof ApiError && err.cause !== undefined) return `${err.message} (cause: ${describe(err.cause)})`;
  if (err instanceof Error) return err.stack ?? `${err.name}: ${err.message}`;
  return String(err);
}
