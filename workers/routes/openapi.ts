// GET /openapi.json: the API described from the same zod schemas that validate the requests, so the document
// cannot drift from what the server accepts (request bodies only; responses follow the OpenAI shapes).

import { Hono } from 'hono';
import { z } from 'zod';
import type { AppEnv } from '../app-env.js';
import {
  ChatCompletionRequestSchema,
  CompletionRequestSchema,
  CreateSessionRequestSchema,
  DetokenizeRequestSchema,
  ForkSessionRequestSchema,
  SessionMessageRequestSchema,
  TokenizeRequestSchema,
} from '../api/schemas.js';
import { ResponseCreateRequestSchema } from '../api/responses-schemas.js';

export const openapi = new Hono<AppEnv>();

interface Route {
  method: 'get' | 'post' | 'delete';
  path: string;
  summary: string;
  body?: z.ZodType;
}

const ROUTES: Route[] = [
  {
    method: 'post',
    path: '/v1/chat/completions',
    summary: 'Chat Completions (JSON or SSE)',
    body: ChatCompletionRequestSchema,
  },
  {
    method: 'post',
    path: '/v1/completions',
    summary: 'Completions (text or token-id prompts)',
    body: CompletionRequestSchema,
  },
  { method: 'get', path: '/v1/models', summary: 'The served model' },
  { method: 'get', path: '/health', summary: '200 once the model is loaded, else 503' },
  { method: 'get', path: '/metrics', summary: 'Prometheus text exposition (version 0.0.4) of the request metrics' },
  { method: 'post', path: '/v1/sessions', summary: 'Create a session', body: CreateSessionRequestSchema },
  { method: 'get', path: '/v1/sessions/{id}', summary: 'Transcript, turn log, state statistics' },
  { method: 'delete', path: '/v1/sessions/{id}', summary: 'Delete a session' },
  { method: 'post', path: '/v1/sessions/{id}/messages', summary: 'One user turn', body: SessionMessageRequestSchema },
  {
    method: 'post',
    path: '/v1/sessions/{id}/fork',
    summary: 'Fork a session at a turn',
    body: ForkSessionRequestSchema,
  },
  {
    method: 'get',
    path: '/v1/sessions/{id}/snapshot',
    summary: 'Handoff: the state after the last turn as one whole-model snapshot (application/octet-stream)',
  },
  { method: 'get', path: '/v1/sessions/{id}/snapshot/meta', summary: 'Handoff: what the snapshot covers' },
  {
    method: 'post',
    path: '/v1/sessions/{id}/snapshot',
    summary: 'Handoff: send a state back (multipart/form-data: meta JSON {base_turn, messages, tokens}, state file)',
  },
  {
    method: 'post',
    path: '/v1/responses',
    summary: 'Responses API (JSON or typed SSE); previous_response_id continues from stored state',
    body: ResponseCreateRequestSchema,
  },
  { method: 'get', path: '/v1/responses/{id}', summary: 'A stored response' },
  { method: 'delete', path: '/v1/responses/{id}', summary: 'Delete a stored response' },
  { method: 'post', path: '/tokenize', summary: 'Token ids of a prompt or chat', body: TokenizeRequestSchema },
  { method: 'post', path: '/detokenize', summary: 'Text of token ids', body: DetokenizeRequestSchema },
];

const ErrorSchema = {
  type: 'object',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['message', 'type', 'param', 'code'],
      properties: {
        message: { type: 'string' },
        type: { type: 'string' },
        param: { type: ['string', 'null'] },
        code: { type: ['string', 'null'] },
      },
    },
  },
};

/** The OpenAPI 3.1 document (JSON Schema 2020-12 bodies, as zod emits them for input). */
export function openapiDocument(): object {
  const paths: Record<string, Record<string, object>> = {};
  for (const r of ROUTES) {
    const params = [...r.path.matchAll(/\{(\w+)\}/g)].map((m) => ({
      name: m[1],
      in: 'path',
      required: true,
      schema: { type: 'string' },
    }));
    (paths[r.path] ??= {})[r.method] = {
      summary: r.summary,
      ...(params.length ? { parameters: params } : {}),
      ...(r.body
        ? {
            requestBody: {
              required: true,
              content: {
                'application/json': { schema: z.toJSONSchema(r.body, { io: 'input', unrepresentable: 'any' }) },
              },
            },
          }
        : {}),
      responses: {
        '200': { description: 'OK (OpenAI-compatible body)' },
        default: { description: 'error', content: { 'application/json': { schema: ErrorSchema } } },
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'hymba-edge', version: '0.1.0', description: 'OpenAI-compatible inference for Hymba models' },
    paths,
  };
}

let cached: object | null = null;

openapi.get('/openapi.json', function openapiJson(c) {
  cached ??= openapiDocument();
  return c.json(cached);
});
