// The protocol layer's input side: request schemas (acceptance, rejection with the exact `param`), parseBody,
// the mapping to the canonical TurnRequest, and the error module.

import { Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { ErrorKind, ServeErrorInfo } from '../../engine/serve/errors.js';
import { ApiError, errorBody, notFound, onError, toApiError } from '../../workers/api/errors.js';
import {
  ChatCompletionRequestSchema,
  CompletionRequestSchema,
  CreateSessionRequestSchema,
  ForkSessionRequestSchema,
  SessionMessageRequestSchema,
  parseBody,
  parseValue,
} from '../../workers/api/schemas.js';
import { chatToTurn, completionToTurn, sessionMessageToTurn } from '../../workers/api/to-turn.js';

const user = { role: 'user', content: 'Hi' };

function rejection(schema: Parameters<typeof parseValue>[0], body: unknown): ApiError {
  try {
    parseValue(schema, body);
  } catch (err) {
    if (err instanceof ApiError) return err;
    throw err;
  }
  throw new Error(`accepted: ${JSON.stringify(body)}`);
}

describe('chat completions schema', () => {
  it('accepts every documented field', () => {
    const body = parseValue(ChatCompletionRequestSchema, {
      model: 'hymba-1.5b',
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'developer', content: [{ type: 'text', text: 'Use English.' }] },
        {
          role: 'user',
          content: [
            { type: 'text', text: 'Weather' },
            { type: 'text', text: 'in Paris?' },
          ],
          name: 'a',
        },
        {
          role: 'assistant',
          content: null,
          tool_calls: [
            { id: 'call_1', type: 'function', function: { name: 'weather', arguments: '{"city":"Paris"}' } },
          ],
        },
        { role: 'tool', tool_call_id: 'call_1', content: '21 C' },
      ],
      stream: true,
      stream_options: { include_usage: true },
      max_completion_tokens: 100,
      max_tokens: 50,
      temperature: 0.7,
      top_p: 0.9,
      seed: 42,
      stop: ['\n\n', 'END'],
      n: 1,
      logprobs: true,
      top_logprobs: 5,
      tools: [{ type: 'function', function: { name: 'weather', parameters: { type: 'object' } } }],
      tool_choice: { type: 'function', function: { name: 'weather' } },
      parallel_tool_calls: false,
      response_format: { type: 'json_schema', json_schema: { name: 'w', schema: { type: 'object' }, strict: true } },
      prompt_cache_key: 'conv-1',
      user: 'u-1',
    });
    expect(body.messages).toHaveLength(5);
    expect(body.stream_options?.include_usage).toBe(true);
  });

  it('ignores unknown fields and accepts null for optional ones', () => {
    const body = parseValue(ChatCompletionRequestSchema, {
      messages: [user],
      frequency_penalty: 0.5,
      metadata: { a: 1 },
      stop: null,
      temperature: null,
      tools: null,
      tool_choice: null,
    });
    expect(body).not.toHaveProperty('frequency_penalty');
    expect(body.stop).toBeNull();
  });

  it.each([
    ['tool_choice auto', { tool_choice: 'auto' }],
    ['tool_choice none', { tool_choice: 'none' }],
    ['response_format json_object', { response_format: { type: 'json_object' } }],
    ['response_format text', { response_format: { type: 'text' } }],
    ['one stop string', { stop: 'x' }],
    ['top_logprobs 0 without logprobs', { top_logprobs: 0 }],
    ['top_p 1', { top_p: 1 }],
    ['temperature 0 and 2', { temperature: 0, max_tokens: 1 }],
  ])('accepts %s', (_name, extra) => {
    expect(() => parseValue(ChatCompletionRequestSchema, { messages: [user], ...extra })).not.toThrow();
  });

  it.each<[string, Record<string, unknown>, string | null, RegExp]>([
    ['missing messages', {}, 'messages', /Missing required parameter: 'messages'/],
    ['empty messages', { messages: [] }, 'messages', /at least one message/],
    ['content number', { messages: [user, { role: 'user', content: 5 }] }, 'messages[1].content', /string or an array/],
    [
      'image part',
      { messages: [user, { role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] },
      'messages[1].content[0].type',
      /only text content parts are supported, got type "image_url"/,
    ],
    [
      'part text not a string',
      { messages: [{ role: 'user', content: [{ type: 'text', text: 1 }] }] },
      'messages[0].content[0].text',
      /expected a string, but got an integer/,
    ],
    ['unknown role', { messages: [{ role: 'function', content: 'x' }] }, 'messages[0].role', /unknown role "function"/],
    ['missing role', { messages: [{ content: 'x' }] }, 'messages[0].role', /needs a "role"/],
    ['message not an object', { messages: ['hi'] }, 'messages[0]', /expected an object, but got a string/],
    ['missing content', { messages: [{ role: 'user' }] }, 'messages[0].content', /Missing required parameter/],
    [
      'assistant without content or calls',
      { messages: [{ role: 'assistant', content: null }] },
      'messages[0].content',
      /needs "content" or "tool_calls"/,
    ],
    [
      'tool call arguments as object',
      {
        messages: [
          { role: 'assistant', tool_calls: [{ id: '1', type: 'function', function: { name: 'f', arguments: {} } }] },
        ],
      },
      'messages[0].tool_calls[0].function.arguments',
      /expected a string/,
    ],
    [
      'tool without tool_call_id',
      { messages: [{ role: 'tool', content: 'x' }] },
      'messages[0].tool_call_id',
      /Missing/,
    ],
    ['temperature string', { messages: [user], temperature: '0.5' }, 'temperature', /expected a number/],
    ['temperature > 2', { messages: [user], temperature: 2.5 }, 'temperature', /at most 2/],
    ['top_p 0', { messages: [user], top_p: 0 }, 'top_p', /greater than 0/],
    ['top_p > 1', { messages: [user], top_p: 1.5 }, 'top_p', /at most 1/],
    ['seed float', { messages: [user], seed: 1.5 }, 'seed', /expected an integer/],
    ['max_tokens 0', { messages: [user], max_tokens: 0 }, 'max_tokens', /at least 1/],
    [
      'max_completion_tokens string',
      { messages: [user], max_completion_tokens: '9' },
      'max_completion_tokens',
      /number/,
    ],
    ['n = 2', { messages: [user], n: 2 }, 'n', /only n = 1 is supported/],
    ['5 stop strings', { messages: [user], stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop', /at most 4 stop sequences/],
    ['stop number', { messages: [user], stop: 5 }, 'stop', /string or an array of up to 4 strings/],
    ['stop item number', { messages: [user], stop: ['a', 1] }, 'stop[1]', /expected a string/],
    ['stream string', { messages: [user], stream: 'yes' }, 'stream', /expected a boolean/],
    [
      'include_usage string',
      { messages: [user], stream: true, stream_options: { include_usage: 1 } },
      'stream_options.include_usage',
      /expected a boolean/,
    ],
    ['logprobs number', { messages: [user], logprobs: 1 }, 'logprobs', /expected a boolean/],
    ['top_logprobs > 20', { messages: [user], logprobs: true, top_logprobs: 21 }, 'top_logprobs', /at most 20/],
    [
      'top_logprobs without logprobs',
      { messages: [user], top_logprobs: 2 },
      'top_logprobs',
      /requires "logprobs": true/,
    ],
    ['tools not an array', { messages: [user], tools: {} }, 'tools', /expected an array/],
    [
      'tool without name',
      { messages: [user], tools: [{ type: 'function', function: {} }] },
      'tools[0].function.name',
      /Missing/,
    ],
    [
      'tool_choice unknown',
      { messages: [user], tool_choice: 'always' },
      'tool_choice',
      /"auto" or "none" or "required"/,
    ],
    ['tool_choice required without tools', { messages: [user], tool_choice: 'required' }, 'tool_choice', /requires/],
    [
      'tool_choice names a missing tool',
      {
        messages: [user],
        tools: [{ type: 'function', function: { name: 'a' } }],
        tool_choice: { type: 'function', function: { name: 'b' } },
      },
      'tool_choice.function.name',
      /no tool named "b"/,
    ],
    ['parallel_tool_calls string', { messages: [user], parallel_tool_calls: 'no' }, 'parallel_tool_calls', /boolean/],
    ['response_format unknown', { messages: [user], response_format: { type: 'xml' } }, 'response_format.type', /json/],
    [
      'json_schema without schema object',
      { messages: [user], response_format: { type: 'json_schema' } },
      'response_format.json_schema',
      /Missing/,
    ],
    ['prompt_cache_key number', { messages: [user], prompt_cache_key: 7 }, 'prompt_cache_key', /expected a string/],
    ['user number', { messages: [user], user: 7 }, 'user', /expected a string/],
  ])('rejects %s', (_name, body, param, message) => {
    const err = rejection(ChatCompletionRequestSchema, body);
    expect(err.status).toBe(400);
    expect(err.type).toBe('invalid_request_error');
    expect(err.param).toBe(param);
    expect(err.message).toMatch(message);
  });
});

describe('completions schema', () => {
  it.each<[string, unknown]>([
    ['a string', 'Once upon'],
    ['token ids', [1, 450, 4996]],
    ['a batch of one string', ['Once upon']],
    ['a batch of one id list', [[1, 450]]],
    ['an empty string', ''],
  ])('accepts a prompt as %s', (_name, prompt) => {
    expect(parseValue(CompletionRequestSchema, { prompt }).prompt).toEqual(prompt);
  });

  it('accepts the lm-evaluation-harness request', () => {
    const body = parseValue(CompletionRequestSchema, {
      model: 'hymba',
      prompt: [[1, 2, 3]],
      echo: true,
      logprobs: 1,
      max_tokens: 1,
      temperature: 0,
      seed: 1234,
      return_token_ids: true,
    });
    expect(body.echo).toBe(true);
  });

  it('allows max_tokens 0 (score the prompt only)', () => {
    expect(parseValue(CompletionRequestSchema, { prompt: 'x', echo: true, max_tokens: 0 }).max_tokens).toBe(0);
  });

  it.each<[string, Record<string, unknown>, string, RegExp]>([
    ['missing prompt', {}, 'prompt', /Missing required parameter: 'prompt'/],
    ['prompt number', { prompt: 5 }, 'prompt', /a string, an array of token ids/],
    ['empty id list', { prompt: [] }, 'prompt', /must not be empty/],
    ['batch of two strings', { prompt: ['a', 'b'] }, 'prompt', /batches of prompts are not supported yet \(got 2\)/],
    ['batch of two id lists', { prompt: [[1], [2]] }, 'prompt', /not supported yet/],
    ['mixed array', { prompt: [1, 'a'] }, 'prompt[1]', /expected a number/],
    ['negative id', { prompt: [1, -1] }, 'prompt[1]', /at least 0/],
    ['empty id list in a batch', { prompt: [[]] }, 'prompt[0]', /must not be empty/],
    ['logprobs 6', { prompt: 'x', logprobs: 6 }, 'logprobs', /at most 5/],
    ['logprobs true', { prompt: 'x', logprobs: true }, 'logprobs', /expected a number, but got a boolean/],
    ['echo 1', { prompt: 'x', echo: 1 }, 'echo', /expected a boolean/],
    ['return_token_ids string', { prompt: 'x', return_token_ids: 'y' }, 'return_token_ids', /boolean/],
    ['n 3', { prompt: 'x', n: 3 }, 'n', /only n = 1/],
    ['temperature -1', { prompt: 'x', temperature: -1 }, 'temperature', /at least 0/],
  ])('rejects %s', (_name, body, param, message) => {
    const err = rejection(CompletionRequestSchema, body);
    expect(err.status).toBe(400);
    expect(err.param).toBe(param);
    expect(err.message).toMatch(message);
  });
});

describe('session API schemas', () => {
  it('accepts create, message and fork bodies', () => {
    expect(parseValue(CreateSessionRequestSchema, {})).toEqual({});
    expect(parseValue(CreateSessionRequestSchema, { system: 'Be brief.', metadata: { app: 'x' } }).system).toBe(
      'Be brief.',
    );
    const msg = parseValue(SessionMessageRequestSchema, {
      content: [{ type: 'text', text: 'Hi' }],
      max_tokens: 8,
      temperature: 0,
      seed: 1,
      stop: 'x',
      stream: true,
    });
    expect(msg.stream).toBe(true);
    expect(parseValue(ForkSessionRequestSchema, { turn: 2 }).turn).toBe(2);
  });

  it.each<[string, Parameters<typeof parseValue>[0], Record<string, unknown>, string]>([
    ['metadata not an object', CreateSessionRequestSchema, { metadata: 'x' }, 'metadata'],
    ['system not a string', CreateSessionRequestSchema, { system: 1 }, 'system'],
    ['message without content', SessionMessageRequestSchema, {}, 'content'],
    [
      'message with an image part',
      SessionMessageRequestSchema,
      { content: [{ type: 'image_url' }] },
      'content[0].type',
    ],
    ['fork at a negative turn', ForkSessionRequestSchema, { turn: -1 }, 'turn'],
    ['fork at a fractional turn', ForkSessionRequestSchema, { turn: 1.5 }, 'turn'],
  ])('rejects %s', (_name, schema, body, param) => {
    expect(rejection(schema, body).param).toBe(param);
  });
});

describe('parseBody', () => {
  const req = (body: string, headers: Record<string, string> = {}) =>
    new Request('http://local/v1/chat/completions', { method: 'POST', body, headers });

  it('parses and validates a JSON body', async () => {
    const body = await parseBody(ChatCompletionRequestSchema, req(JSON.stringify({ messages: [user] })));
    expect(body.messages[0]).toEqual(user);
  });

  it('turns malformed JSON into a 400', async () => {
    const err = await parseBody(ChatCompletionRequestSchema, req('{"messages": [')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(400);
    expect((err as ApiError).message).toMatch(/could not parse the JSON body/i);
  });

  it.each([
    ['an array', '[1]', /must be a JSON object, not an array/],
    ['a number', '3', /must be a JSON object, not an integer/],
    ['null', 'null', /must be a JSON object, not null/],
  ])('rejects %s body with a 400', async (_name, text, message) => {
    const err = await parseBody(ChatCompletionRequestSchema, req(text)).catch((e: unknown) => e);
    expect((err as ApiError).status).toBe(400);
    expect((err as ApiError).message).toMatch(message);
  });

  it('reads an empty body as {}', async () => {
    const err = await parseBody(ChatCompletionRequestSchema, req('')).catch((e: unknown) => e);
    expect((err as ApiError).param).toBe('messages');
    await expect(parseBody(CreateSessionRequestSchema, req(''))).resolves.toEqual({});
  });

  it('answers 413 over maxBytes', async () => {
    const text = JSON.stringify({ messages: [{ role: 'user', content: 'x'.repeat(200) }] });
    const err = await parseBody(ChatCompletionRequestSchema, req(text), { maxBytes: 100 }).catch((e: unknown) => e);
    expect((err as ApiError).status).toBe(413);
    expect((err as ApiError).code).toBe('request_too_large');
  });
});

describe('to TurnRequest', () => {
  it('maps a chat request with OpenAI defaults', () => {
    const body = parseValue(ChatCompletionRequestSchema, {
      messages: [
        { role: 'developer', content: 'Be brief.' },
        {
          role: 'user',
          content: [
            { type: 'text', text: 'Line one' },
            { type: 'text', text: 'line two' },
          ],
        },
        {
          role: 'assistant',
          content: null,
          tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{"a":1}' } }],
        },
        { role: 'tool', tool_call_id: 'c1', content: 'ok' },
      ],
    });
    expect(chatToTurn(body, 256)).toEqual({
      prompt: {
        kind: 'chat',
        messages: [
          { role: 'system', content: 'Be brief.' },
          { role: 'user', content: 'Line one\nline two' },
          { role: 'assistant', content: '', tool_calls: [{ name: 'f', arguments: '{"a":1}' }] },
          { role: 'tool', content: 'ok' },
        ],
      },
      maxTokens: 256,
      temperature: 1,
      stop: [],
    });
  });

  it('maps sampling fields; max_completion_tokens wins over max_tokens', () => {
    const body = parseValue(ChatCompletionRequestSchema, {
      messages: [user],
      max_completion_tokens: 10,
      max_tokens: 20,
      temperature: 0,
      top_p: 0.5,
      top_k: 40,
      seed: 7,
      stop: 'END',
      logprobs: true,
      top_logprobs: 3,
      return_token_ids: true,
    });
    expect(chatToTurn(body, 256)).toMatchObject({
      maxTokens: 10,
      temperature: 0,
      topP: 0.5,
      topK: 40,
      seed: 7,
      stop: ['END'],
      logprobs: 3,
      returnTokenIds: true,
    });
    const plain = chatToTurn(
      parseValue(ChatCompletionRequestSchema, { messages: [user], max_tokens: 20, top_p: 1 }),
      1,
    );
    expect(plain.maxTokens).toBe(20);
    expect(plain).not.toHaveProperty('topP');
    expect(plain).not.toHaveProperty('logprobs');
    const chosenOnly = chatToTurn(parseValue(ChatCompletionRequestSchema, { messages: [user], logprobs: true }), 1);
    expect(chosenOnly.logprobs).toBe(0);
  });

  it('maps every completions prompt form', () => {
    const turn = (prompt: unknown, extra: Record<string, unknown> = {}) =>
      completionToTurn(parseValue(CompletionRequestSchema, { prompt, ...extra }), 16);
    expect(turn('Once').prompt).toEqual({ kind: 'text', text: 'Once' });
    expect(turn(['Once']).prompt).toEqual({ kind: 'text', text: 'Once' });
    expect(turn([1, 2]).prompt).toEqual({ kind: 'ids', ids: [1, 2] });
    expect(turn([[3, 4]]).prompt).toEqual({ kind: 'ids', ids: [3, 4] });
    expect(turn('x', { echo: true, logprobs: 1, max_tokens: 1, stop: ['a', ''] })).toMatchObject({
      echo: true,
      logprobs: 1,
      maxTokens: 1,
      stop: ['a'],
    });
    expect(turn('x').maxTokens).toBe(16);
  });

  it('maps a session message to one user message', () => {
    const body = parseValue(SessionMessageRequestSchema, { content: 'Hi', temperature: 0.2 });
    expect(sessionMessageToTurn(body, 64)).toEqual({
      prompt: { kind: 'chat', messages: [{ role: 'user', content: 'Hi' }] },
      maxTokens: 64,
      temperature: 0.2,
      stop: [],
    });
  });
});

describe('errors', () => {
  afterEach(() => vi.restoreAllMocks());

  function app(thrown: () => never): Hono {
    const a = new Hono();
    a.onError(onError);
    a.notFound(notFound);
    a.get('/boom', () => thrown());
    return a;
  }

  it.each<[string, ApiError, number, string, string | null]>([
    ['invalidRequest', ApiError.invalidRequest('bad', 'temperature'), 400, 'invalid_request_error', null],
    ['unauthorized', ApiError.unauthorized(), 401, 'authentication_error', 'invalid_api_key'],
    [
      'notFound',
      ApiError.notFound('no such session', null, 'session_not_found'),
      404,
      'not_found_error',
      'session_not_found',
    ],
    ['sessionBusy', ApiError.sessionBusy(), 409, 'conflict_error', 'session_busy'],
    ['tooLarge', ApiError.tooLarge('too big'), 413, 'invalid_request_error', 'request_too_large'],
    ['context', ApiError.contextLengthExceeded(5000, 4096), 422, 'invalid_request_error', 'context_length_exceeded'],
    ['rateLimited', ApiError.rateLimited(3), 429, 'rate_limit_error', 'rate_limit_exceeded'],
    ['internal', ApiError.internal(), 500, 'server_error', 'internal_error'],
    ['loading', ApiError.loading(), 503, 'service_unavailable_error', 'model_loading'],
  ])('%s has its status, type and code', (_name, e, status, type, code) => {
    expect(e.status).toBe(status);
    expect(e.type).toBe(type);
    expect(e.code).toBe(code);
    expect(errorBody(e)).toEqual({ error: { message: e.message, type, param: e.param, code } });
  });

  it('words the context error the way clients match it', () => {
    const e = ApiError.contextLengthExceeded(5000, 4096);
    expect(e.message).toMatch(/maximum context length is 4096 tokens/);
    expect(e.param).toBe('messages');
  });

  it('round-trips the protocol error info', () => {
    const e = ApiError.sessionBusy();
    expect(ApiError.from(e.toInfo())).toMatchObject({
      status: 409,
      code: 'session_busy',
      type: 'conflict_error',
      retryAfter: 1,
    });
    const unknownKind = { kind: 'teapot', message: 'm', code: null, param: null } as unknown as ServeErrorInfo;
    expect(ApiError.from(unknownKind).status).toBe(500);
  });

  it('maps every error kind to its HTTP status and OpenAI type', () => {
    const expected: Record<ErrorKind, [number, string]> = {
      invalid: [400, 'invalid_request_error'],
      unauthorized: [401, 'authentication_error'],
      forbidden: [403, 'permission_error'],
      not_found: [404, 'not_found_error'],
      busy: [409, 'conflict_error'],
      conflict: [409, 'conflict_error'],
      too_large: [413, 'invalid_request_error'],
      too_long: [422, 'invalid_request_error'],
      rate_limited: [429, 'rate_limit_error'],
      internal: [500, 'server_error'],
      unavailable: [503, 'service_unavailable_error'],
    };
    for (const [kind, [status, type]] of Object.entries(expected)) {
      const e = ApiError.from({ kind: kind as ErrorKind, message: 'm', code: null, param: null });
      expect([e.status, e.type]).toEqual([status, type]);
    }
  });

  it('sends ApiErrors with their status and Retry-After', async () => {
    const res = await app(() => {
      throw ApiError.rateLimited(2.5);
    }).request('/boom');
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBe('3');
    expect(await res.json()).toEqual({
      error: { message: expect.any(String), type: 'rate_limit_error', param: null, code: 'rate_limit_exceeded' },
    });
  });

  it('sends an unknown error as a 500 without its message or stack', async () => {
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    const res = await app(() => {
      throw new TypeError('secret: cannot read db at /srv/keys');
    }).request('/boom');
    expect(res.status).toBe(500);
    const text = await res.text();
    expect(text).not.toMatch(/secret|TypeError|\/srv/);
    expect(JSON.parse(text)).toEqual({
      error: {
        message: 'The server had an error while processing your request.',
        type: 'server_error',
        param: null,
        code: 'internal_error',
      },
    });
    // one JSON error line for the server's log (the only place the cause appears)
    expect(log).toHaveBeenCalledOnce();
    const line = JSON.parse(String(log.mock.calls[0]![0])) as { level: string; msg: string; code: string };
    expect(line).toMatchObject({ level: 'error', msg: 'error', code: 'internal_error' });
    log.mockRestore();
  });

  it("maps Hono's HTTPException (e.g. bodyLimit's 413)", async () => {
    const res = await app(() => {
      throw new HTTPException(413, { message: 'Payload Too Large' });
    }).request('/boom');
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('request_too_large');
    expect(toApiError(new HTTPException(401)).type).toBe('authentication_error');
  });

  it('answers unknown routes with a 404 error object', async () => {
    const res = await app(() => {
      throw new Error('unused');
    }).request('/v1/nope', { method: 'POST' });
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({
      error: { message: 'Unknown route: POST /v1/nope', type: 'not_found_error', param: null, code: 'unknown_route' },
    });
  });
});
