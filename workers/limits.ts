// Request limits, from the environment (wrangler.toml [vars]), checked by the routes before a turn starts:
//   MAX_MESSAGES          most messages in a Chat Completions request (default 512)            -> 400 messages
//   MAX_COMPLETION_TOKENS most tokens one turn may generate (default 4096)                     -> 400 max_tokens
//                         (DEFAULT_MAX_TOKENS, used when a request names none, is clamped to it)
//   MAX_BODY_BYTES        largest request body (default 1 MiB), for every route               -> 413
// Prompt-token limits (the model's context) are the Durable Object's: 422 context_length_exceeded.

import type { MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { AppEnv } from './app-env.js';
import { ApiError } from './api/errors.js';
import type { Env } from '../durable-objects/env.js';

export const DEFAULT_LIMITS = {
  maxMessages: 512,
  maxCompletionTokens: 4096,
  maxBodyBytes: 1024 * 1024,
  defaultMaxTokens: 256,
} as const;

export interface Limits {
  maxMessages: number;
  maxCompletionTokens: number;
  maxBodyBytes: number;
  /** max_tokens when a request gives none: DEFAULT_MAX_TOKENS, at most maxCompletionTokens */
  defaultMaxTokens: number;
}

/** A positive integer setting; unset, empty or malformed: the default. */
function setting(value: string | undefined, fallback: number): number {
  const n = Number(value ?? '');
  return value !== undefined && value.trim() !== '' && Number.isInteger(n) && n > 0 ? n : fallback;
}

export function limitsOf(env: Env): Limits {
  const maxCompletionTokens = setting(env.MAX_COMPLETION_TOKENS, DEFAULT_LIMITS.maxCompletionTokens);
  return {
    maxMessages: setting(env.MAX_MESSAGES, DEFAULT_LIMITS.maxMessages),
    maxCompletionTokens,
    maxBodyBytes: setting(env.MAX_BODY_BYTES, DEFAULT_LIMITS.maxBodyBytes),
    defaultMaxTokens: Math.min(setting(env.DEFAULT_MAX_TOKENS, DEFAULT_LIMITS.defaultMaxTokens), maxCompletionTokens),
  };
}

/** 400 when a request carries more messages than MAX_MESSAGES (OpenAI's wording and code for long arrays). */
export function checkMessageCount(limits: Limits, count: number, param = 'messages'): void {
  if (count <= limits.maxMessages) return;
  throw ApiError.invalidRequest(
    `Invalid '${param}': array too long. Expected an array with maximum length ${limits.maxMessages}, ` +
      `but got an array with length ${count} instead.`,
    param,
    'array_above_max_length',
  );
}

/** 400 naming the first parameter (e.g. `{ max_tokens: body.max_tokens }`) over MAX_COMPLETION_TOKENS. */
export function checkMaxTokens(limits: Limits, params: Record<string, number | null | undefined>): void {
  for (const [param, value] of Object.entries(params)) {
    if (value == null || value <= limits.maxCompletionTokens) continue;
    throw ApiError.invalidRequest(
      `Invalid '${param}': ${value} is too large. This server generates at most ` +
        `${limits.maxCompletionTokens} completion tokens per request; send ${limits.maxCompletionTokens} or fewer.`,
      param,
      'invalid_value',
    );
  }
}

/**
 * Every request body is limited to MAX_BODY_BYTES (413 request_too_large): by Content-Length when declared,
 * else while reading. Registered after authentication, so unauthenticated bodies are never read.
 */
export const limitBody: MiddlewareHandler<AppEnv> = async function limitBody(c, next) {
  if (!c.req.raw.body) return next();
  const maxSize = limitsOf(c.env).maxBodyBytes;
  return bodyLimit({
    maxSize,
    onError: () => {
      throw ApiError.tooLarge(`The request body is larger than the limit of ${maxSize} bytes.`);
    },
  })(c, next);
};
