// POST /v1/chat/completions and POST /v1/completions: validate, route to a SessionDO, shape the events.

import { Hono } from 'hono';
import type { AppEnv } from '../app-env.js';
import { collectChatCompletion, chatFormatOptions, streamChatCompletion } from '../api/chat-format.js';
import { collectCompletion, completionFormatOptions, streamCompletion } from '../api/completion-format.js';
import { ApiError } from '../api/errors.js';
import { ChatCompletionRequestSchema, CompletionRequestSchema, parseBody } from '../api/schemas.js';
import { sseResponse } from '../api/sse.js';
import { chatToTurn, completionToTurn } from '../api/to-turn.js';
import { openTurn, routeTurn } from '../do-client.js';
import { checkMaxTokens, checkMessageCount, limitsOf } from '../limits.js';
import { modelId } from './models.js';

export const completions = new Hono<AppEnv>();

export function checkModel(requested: string | null | undefined, served: string): void {
  if (requested != null && requested !== served)
    throw ApiError.notFound(
      `The model '${requested}' does not exist; this server serves '${served}'.`,
      'model',
      'model_not_found',
    );
}

completions.post('/v1/chat/completions', async function chatCompletions(c) {
  const body = await parseBody(ChatCompletionRequestSchema, c.req.raw);
  checkModel(body.model, modelId(c.env));
  const limits = limitsOf(c.env);
  checkMessageCount(limits, body.messages.length);
  checkMaxTokens(limits, { max_completion_tokens: body.max_completion_tokens, max_tokens: body.max_tokens });
  const { stub, call } = routeTurn(c.env, c.get('owner'), body.prompt_cache_key);
  const events = await openTurn(stub, chatToTurn(body, limits.defaultMaxTokens), call, c.get('metrics'));
  const opts = chatFormatOptions(body, modelId(c.env));
  if (body.stream) return sseResponse(streamChatCompletion(events, opts));
  return c.json(await collectChatCompletion(events, opts));
});

completions.post('/v1/completions', async function textCompletions(c) {
  const body = await parseBody(CompletionRequestSchema, c.req.raw);
  checkModel(body.model, modelId(c.env));
  const limits = limitsOf(c.env);
  checkMaxTokens(limits, { max_tokens: body.max_tokens });
  const { stub, call } = routeTurn(c.env, c.get('owner'), body.prompt_cache_key);
  const events = await openTurn(stub, completionToTurn(body, limits.defaultMaxTokens), call, c.get('metrics'));
  const opts = completionFormatOptions(body, modelId(c.env));
  if (body.stream) return sseResponse(streamCompletion(events, opts));
  return c.json(await collectCompletion(events, opts));
});
