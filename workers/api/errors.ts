// The one error module: internal error kinds -> HTTP status + the OpenAI error object
// `{ "error": { "message", "type", "param", "code" } }`, and the Hono handlers that send it.
//
// Clients (the openai SDKs) retry 408/409/429/5xx, so every error with those statuses must be safe to retry:
// nothing here carries state, and `retryAfter` becomes a `Retry-After` header.

import type { Context, ErrorHandler, NotFoundHandler } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { ApiErrorBody } from '../../engine/serve/protocol.js';
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
  readonly status: ContentfulStatusCode;
  readonly type: string;
  readonly param: string | null;
  readonly code: string | null;
  readonly retryAfter: number | undefined;

  constructor(status: ContentfulStatusCode, type: string, message: string, opts: ApiErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.status = status;
    this.type = type;
    this.param = opts.param ?? null;
    this.code = opts.code ?? null;
    this.retryAfter = opts.retryAfter;
  }

  /** 400: the request is malformed; `param` names the offending field path (`messages[1].content`). */
  static invalidRequest(message: string, param: string | null = null, code: string | null = null): ApiError {
    return new ApiError(400, 'invalid_request_error', message, { param, code });
  }

  /** 401: missing or wrong API key. */
  static unauthorized(message = 'Missing or invalid API key. Send it as "Authorization: Bearer <key>".'): ApiError {
    return new ApiError(401, 'authentication_error', message, { code: 'invalid_api_key' });
  }

  /** 403: the key may not do this. (Resources of another key are reported as 404, never 403.) */
  static forbidden(message: string): ApiError {
    return new ApiError(403, 'permission_error', message, { code: 'forbidden' });
  }

  /** 404: unknown model, session, response or route. */
  static notFound(message: string, param: string | null = null, code: string | null = 'not_found'): ApiError {
    return new ApiError(404, 'not_found_error', message, { param, code });
  }

  /** 409: the session is running another turn; safe to retry. */
  static sessionBusy(
    message = 'The session is busy with another turn; retry when it has finished.',
    retryAfter = 1,
  ): ApiError {
    return new ApiError(409, 'conflict_error', message, { code: 'session_busy', retryAfter });
  }

  /** 413: body, message count or similar over a limit. */
  static tooLarge(message: string, param: string | null = null): ApiError {
    return new ApiError(413, 'invalid_request_error', message, { param, code: 'request_too_large' });
  }

  /** 422: the prompt does not fit the model's context (OpenAI's wording, which clients match on). */
  static contextLengthExceeded(promptTokens: number, contextLength: number, param = 'messages'): ApiError {
    const message =
      `This model's maximum context length is ${contextLength} tokens. ` +
      `However, your prompt resulted in ${promptTokens} tokens. Please reduce the length of the prompt.`;
    return new ApiError(422, 'invalid_request_error', message, { param, code: 'context_length_exceeded' });
  }

  /** 429: over the per-key request rate. */
  static rateLimited(retryAfter: number, message = 'Rate limit reached for this API key; retry later.'): ApiError {
    return new ApiError(429, 'rate_limit_error', message, { code: 'rate_limit_exceeded', retryAfter });
  }

  /** 500: a bug or an unexpected failure; the message must not leak internals. */
  static internal(message = 'The server had an error while processing your request.', cause?: unknown): ApiError {
    return new ApiError(500, 'server_error', message, { code: 'internal_error', cause });
  }

  /** 503: the model is still loading. */
  static loading(retryAfter = 5, message = 'The model is loading; retry shortly.'): ApiError {
    return new ApiError(503, 'service_unavailable_error', message, { code: 'model_loading', retryAfter });
  }

  /** 503: too much work queued. */
  static overloaded(retryAfter = 1, message = 'The server is overloaded; retry shortly.'): ApiError {
    return new ApiError(503, 'service_unavailable_error', message, { code: 'overloaded', retryAfter });
  }

  /** An error a Durable Object reported in a TurnEvent. */
  static fromProtocol(body: ApiErrorBody): ApiError {
    const status = toStatus(body.status);
    return new ApiError(status, body.type, body.message, {
      param: body.param,
      code: body.code,
      ...(status === 409 ? { retryAfter: 1 } : {}),
    });
  }

  /** The form a Durable Object sends in a TurnEvent. */
  toProtocol(): ApiErrorBody {
    return { status: this.status, type: this.type, message: this.message, code: this.code, param: this.param };
  }
}

/** `{ error: { message, type, param, code } }` */
export function errorBody(e: ApiError): ErrorBody {
  return { error: { message: e.message, type: e.type, param: e.param, code: e.code } };
}

/** Anything thrown -> an ApiError. Unknown errors become a generic 500 (their details stay in the log). */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
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
  log(
    errorLogLine(c, e, e.status >= 500 ? describe(err) : null),
    (c.env as { LOG_LEVEL?: string } | undefined)?.LOG_LEVEL,
  );
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
  const status = err.status;
  const message = err.message !== '' ? err.message : undefined;
  switch (status) {
    case 400:
      return ApiError.invalidRequest(message ?? 'Invalid request.');
    case 401:
      return ApiError.unauthorized(message);
    case 404:
      return ApiError.notFound(message ?? 'Not found.');
    case 413:
      return ApiError.tooLarge(message ?? 'The request body is too large.');
    default:
      if (status >= 500) return ApiError.internal(undefined, err);
      return new ApiError(status, typeForStatus(status), message ?? 'The request failed.');
  }
}

function typeForStatus(status: number): ApiErrorType {
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 409) return 'conflict_error';
  if (status === 429) return 'rate_limit_error';
  if (status === 503) return 'service_unavailable_error';
  return status >= 500 ? 'server_error' : 'invalid_request_error';
}

function toStatus(status: number): ContentfulStatusCode {
  // anything that is not a contentful error status is reported as a 500
  if (!Number.isInteger(status) || status < 400 || status > 599) return 500;
  return status as ContentfulStatusCode;
}

function describe(err: unknown): string {
  if (err instanceof ApiError && err.cause !== undefined) return `${err.message} (cause: ${describe(err.cause)})`;
  if (err instanceof Error) return err.stack ?? `${err.name}: ${err.message}`;
  return String(err);
}
