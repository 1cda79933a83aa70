// The routes around the model API: /tokenize and /detokenize (the ids a turn would process, the text of ids),
// x-request-id on every response, CORS, and the OpenAPI document built from the validating schemas.

import { beforeAll, describe, expect, it } from 'vitest';
import { call, expectError, expected, post, seedModel } from './api-helpers.js';
import { COMPLETION_PROMPT, SYSTEM, USER_TURNS } from './scenario.js';

beforeAll(seedModel);

interface Tokenized {
  count: number;
  max_model_len: number;
  tokens: number[];
}

describe('/tokenize and /detokenize', () => {
  it('a prompt tokenizes as /v1/completions does (BOS included)', async () => {
    const res = await post('/tokenize', { model: 'hymba', prompt: COMPLETION_PROMPT });
    expect(res.status).toBe(200);
    const body = (await res.json()) as Tokenized;
    expect(body.tokens).toEqual(expected().completion.promptIds);
    expect(body.count).toBe(body.tokens.length);
    expect(body.max_model_len).toBe(expected().contextTokens);
  });

  it('messages tokenize through the chat template exactly as a chat turn does', async () => {
    const res = await post('/tokenize', {
      messages: [
        { role: 'system', content: SYSTEM },
        { role: 'user', content: USER_TURNS[0] },
      ],
    });
    expect(((await res.json()) as Tokenized).tokens).toEqual(expected().conversation[0]!.promptIds);
  });

  it('detokenize inverts tokenize without special tokens, and gives a reply its text', async () => {
    const text = 'Hello, wörld! 12 + 30 = 42.';
    const ids = ((await (await post('/tokenize', { prompt: text, add_special_tokens: false })).json()) as Tokenized)
      .tokens;
    const back = (await (await post('/detokenize', { tokens: ids })).json()) as { prompt: string };
    expect(back.prompt).toBe(text);
    const reply = expected().completion;
    const replyText = (await (await post('/detokenize', { tokens: reply.tokenIds })).json()) as { prompt: string };
    expect(replyText.prompt).toBe(reply.text);
  });

  it('refuses bad input with 400s that name the field', async () => {
    const both = await expectError(
      await post('/tokenize', { prompt: 'a', messages: [{ role: 'user', content: 'b' }] }),
      400,
    );
    expect(both.param).toBe('prompt');
    await expectError(await post('/tokenize', {}), 400);
    const range = await expectError(await post('/detokenize', { tokens: [1, 10_000_000] }), 400);
    expect(range.param).toBe('tokens');
    await expectError(await post('/detokenize', { tokens: [1.5] }), 400);
    await expectError(await post('/tokenize', { model: 'gpt-4', prompt: 'a' }), 404, 'model_not_found');
  });
});

describe('x-request-id', () => {
  it('is on every response, fresh per request, and echoes a client-given id', async () => {
    const a = await call('/v1/models');
    const b = await call('/v1/models');
    expect(a.headers.get('x-request-id')).toMatch(/^[\w-]{16,}$/);
    expect(a.headers.get('x-request-id')).not.toBe(b.headers.get('x-request-id'));
    const mine = await call('/v1/models', { headers: { 'x-request-id': 'client-req-42' } });
    expect(mine.headers.get('x-request-id')).toBe('client-req-42');
    const err = await post('/tokenize', {});
    expect(err.status).toBe(400);
    expect(err.headers.get('x-request-id')).toBeTruthy();
    const odd = await call('/v1/models', { headers: { 'x-request-id': 'bad id with spaces' } });
    expect(odd.headers.get('x-request-id')).not.toBe('bad id with spaces');
  });
});

describe('CORS', () => {
  it('answers a browser preflight and marks responses for the configured origins (wrangler.toml: "*")', async () => {
    const pre = await call('/v1/chat/completions', {
      method: 'OPTIONS',
      headers: {
        origin: 'https://example.com',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'content-type, authorization',
      },
    });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-origin')).toBe('*');
    expect(pre.headers.get('access-control-allow-headers')).toMatch(/authorization/);
    const res = await call('/v1/models', { headers: { origin: 'https://example.com' } });
    expect(res.headers.get('access-control-allow-origin')).toBe('*');
    expect(res.headers.get('access-control-expose-headers')).toMatch(/x-request-id/);
  });
});

describe('GET /openapi.json', () => {
  it('describes every route, with request bodies from the validating schemas', async () => {
    const res = await call('/openapi.json');
    expect(res.status).toBe(200);
    const doc = (await res.json()) as {
      openapi: string;
      paths: Record<
        string,
        Record<
          string,
          {
            requestBody?: {
              content: Record<string, { schema: { properties?: Record<string, unknown>; required?: string[] } }>;
            };
          }
        >
      >;
    };
    expect(doc.openapi).toBe('3.1.0');
    for (const path of [
      '/v1/chat/completions',
      '/v1/completions',
      '/v1/sessions/{id}/messages',
      '/tokenize',
      '/detokenize',
    ])
      expect(doc.paths[path], path).toBeDefined();
    const chat = doc.paths['/v1/chat/completions']!.post!.requestBody!.content['application/json']!.schema;
    expect(chat.required).toContain('messages');
    expect(Object.keys(chat.properties!)).toEqual(
      expect.arrayContaining(['messages', 'temperature', 'max_tokens', 'stream']),
    );
    expect(doc.paths['/v1/sessions/{id}']!.delete).toBeDefined();
  });
});
