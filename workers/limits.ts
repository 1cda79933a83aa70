// Request limits (MAX_MESSAGES, MAX_COMPLETION_TOKENS, DEFAULT_MAX_TOKENS, MAX_BODY_BYTES: read and defaulted
// in durable-objects/settings.ts), checked by the routes before a turn starts: 400 for too many messages or
// too large a max_tokens, 413 for too large a body (every route). Prompt-token limits (the model's context,
// MAX_PROMPT_TOKENS) are the Durable Object's: 422 context_length_exceeded.

import type { MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { AppEnv } from './app-env.js';
import { ApiError } from './api/errors.js';
import type { Env } from '../durable-objects/env.js';
import { DEFAULTS, settingsOf } from '../durable-objects/settings.js';

export const DEFAULT_LIMITS = {
  maxMessages: DEFAULTS.maxMessages,
  maxCompletionTokens: DEFAULTS.maxCompletionTokens,
  maxBodyBytes: DEFAULTS.maxBodyBytes,
  defaultMaxTokens: DEFAULTS.defaultMaxTokens,
} as const;

export interface Limits {
  maxMessages: number;
  maxCompletionTokens: number;
  maxBodyBytes: number;
  /** max_tokens when a request gives none: DEFAULT_MAX_TOKENS, at most maxCompletionTokens */
  defaultMaxTokens: number;
}

export function limitsOf(env: Env): Limits {
  const { maxMessages, maxCompletionTokens, maxBodyBytes, defaultMaxTokens } = settingsOf(env);
  return { maxMessages, maxCompletionTokens, maxBodyBytes, defaultMaxTokens };
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
