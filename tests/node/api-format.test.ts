// The protocol layer's output side, checked with the official `openai` SDK: a tiny Hono app validates with the
// real schemas, maps to a TurnRequest, and formats a scripted TurnEvent sequence (standing in for the Durable
// Object) into Chat Completions / Completions JSON and SSE.

import { Hono } from 'hono';
import OpenAI from 'openai';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { ServeErrorInfo } from '../../engine/serve/errors.js';
import type { TokenLogprob, TurnEvent, TurnRequest } from '../../engine/serve/protocol.js';
import { collectChatCompletion, chatFormatOptions, streamChatCompletion } from '../../workers/api/chat-format.js';
import { collectCompletion, completionFormatOptions, streamCompletion } from '../../workers/api/completion-format.js';
import { notFound, onError } from '../../workers/api/errors.js';
import { ChatCompletionRequestSchema, CompletionRequestSchema, parseBody } from '../../workers/api/schemas.js';
import { sseResponse } from '../../workers/api/sse.js';
import { chatToTurn, completionToTurn } from '../../workers/api/to-turn.js';
import { failFast } from '../../workers/api/turn-events.js';

// ---- the stand-in for the Durable Object ----

type Script = (turn: TurnRequest) => AsyncIterable<TurnEvent>;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function* scripted(events: readonly TurnEvent[], delayMs = 0): AsyncGenerator<TurnEvent> {
  for (const event of events) {
    if (delayMs > 0) await sleep(delayMs);
    yield event;
  }
}

const lp = (id: number, text: string, logprob: number, top?: TokenLogprob['top']): TokenLogprob =>
  top === undefined ? { id, text, logprob } : { id, text, logprob, top };

const START: TurnEvent = { type: 'start', promptTokens: 12, cachedTokens: 4, promptIds: [1, 2, 3] };
const DONE: TurnEvent = {
  type: 'done',
  finishReason: 'stop',
  promptTokens: 12,
  completionTokens: 5,
  cachedTokens: 4,
  tail: 'ld!',
};
/** "Hello, world!": the last token's text is held back (a stop string was possible) and comes as the tail */
const HELLO: TurnEvent[] = [
  START,
  {
    type: 'token',
    id: 15043,
    text: 'Hello',
    logprob: lp(15043, 'Hello', -0.25, [lp(15043, 'Hello', -0.25), lp(6324, 'Hi', -1.5)]),
  },
  { type: 'token', id: 29892, text: ',', logprob: lp(29892, ',', Number.NaN, [lp(29892, ',', Number.NaN)]) },
  {
    type: 'token',
    id: 3186,
    text: ' wor',
    logprob: lp(3186, ' wor', -0.5, [lp(3186, ' wor', -0.5), lp(2, 'é', -Infinity)]),
  },
  { type: 'token', id: 430, text: '', logprob: lp(430, 'ld', -0.1, [lp(430, 'ld', -0.1)]) },
  { type: 'token', id: 29991, text: '', logprob: lp(29991, '!', -Infinity, [lp(29991, '!', -Infinity)]) },
  DONE,
];

const ERROR: ServeErrorInfo = {
  kind: 'internal',
  message: 'the engine failed',
  code: 'engine_error',
  param: null,
};

// ---- the app under test ----

interface Harness {
  app: Hono;
  client: OpenAI;
  turns: TurnRequest[];
}

function harness(script: Script, opts: { keepAliveMs?: number; failFastMs?: number } = {}): Harness {
  const turns: TurnRequest[] = [];
  const app = new Hono();
  app.onError(onError);
  app.notFound(notFound);

  async function events(turn: TurnRequest, stream: boolean): Promise<AsyncIterable<TurnEvent>> {
    turns.push(turn);
    const source = script(turn);
    return stream && opts.failFastMs !== undefined ? failFast(source, opts.failFastMs) : source;
  }

  app.post('/v1/chat/completions', async function chatCompletions(c) {
    const body = await parseBody(ChatCompletionRequestSchema, c.req.raw);
    const stream = body.stream === true;
    const source = await events(chatToTurn(body, 32), stream);
    const format = { ...chatFormatOptions(body, body.model ?? 'hymba'), keepAliveMs: opts.keepAliveMs ?? 0 };
    if (stream) return sseResponse(streamChatCompletion(source, format));
    return c.json(await collectChatCompletion(source, format));
  });

  app.post('/v1/completions', async function completions(c) {
    const body = await parseBody(CompletionRequestSchema, c.req.raw);
    const stream = body.stream === true;
    const source = await events(completionToTurn(body, 16), stream);
    const format = { ...completionFormatOptions(body, body.model ?? 'hymba'), keepAliveMs: opts.keepAliveMs ?? 0 };
    if (stream) return sseResponse(streamCompletion(source, format));
    return c.json(await collectCompletion(source, format));
  });

  const client = new OpenAI({
    apiKey: 'x',
    baseURL: 'http://local/v1',
    maxRetries: 0,
    fetch: async (url, init) => app.request(url, init),
  });
  return { app, client, turns };
}

const fixed =
  (events: readonly TurnEvent[], delayMs = 0): Script =>
  () =>
    scripted(events, delayMs);

const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: 'Say hello' }];

function dataFrames(text: string): unknown[] {
  return text
    .split('\n\n')
    .filter((frame) => frame.startsWith('data: ') && frame !== 'data: [DONE]')
    .map((frame) => JSON.parse(frame.slice('data: '.length)) as unknown);
}

function post(app: Hono, path: string, body: unknown): Promise<Response> {
  return Promise.resolve(
    app.request(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
  );
}

afterEach(() => vi.restoreAllMocks());

// ---- chat completions ----

describe('chat completions, non-streaming', () => {
  it('parses with the SDK: content, finish_reason, usage with cached tokens, id', async () => {
    const { client, turns } = harness(fixed(HELLO));
    const res = await client.chat.completions.create({ model: 'hymba-1.5b', messages, max_tokens: 8 });
    expect(res.object).toBe('chat.completion');
    expect(res.id).toMatch(/^chatcmpl-[0-9a-f]{36}$/);
    expect(res.model).toBe('hymba-1.5b');
    expect(res.created).toBeCloseTo(Date.now() / 1000, -1);
    expect(res.choices).toHaveLength(1);
    expect(res.choices[0]).toMatchObject({
      index: 0,
      message: { role: 'assistant', content: 'Hello, world!' },
      finish_reason: 'stop',
      logprobs: null,
    });
    expect(res.usage).toEqual({
      prompt_tokens: 12,
      completion_tokens: 5,
      total_tokens: 17,
      prompt_tokens_details: { cached_tokens: 4 },
    });
    expect(turns[0]).toMatchObject({ maxTokens: 8, temperature: 1 });
  });

  it('returns log-probs in the OpenAI shape, clamping -Infinity and NaN', async () => {
    const { client } = harness(fixed(HELLO));
    const res = await client.chat.completions.create({ model: 'm', messages, logprobs: true, top_logprobs: 2 });
    const content = res.choices[0]?.logprobs?.content ?? [];
    expect(content.map((c) => c.token)).toEqual(['Hello', ',', ' wor', 'ld', '!']);
    expect(content[0]).toEqual({
      token: 'Hello',
      logprob: -0.25,
      bytes: [72, 101, 108, 108, 111],
      top_logprobs: [
        { token: 'Hello', logprob: -0.25, bytes: [72, 101, 108, 108, 111] },
        { token: 'Hi', logprob: -1.5, bytes: [72, 105] },
      ],
    });
    expect(content[1]?.logprob).toBe(-9999);
    expect(content[2]?.top_logprobs[1]).toEqual({ token: 'é', logprob: -9999, bytes: [0xc3, 0xa9] });
    expect(content[4]?.logprob).toBe(-9999);
  });

  it('adds prompt_token_ids and token_ids with return_token_ids', async () => {
    const { client } = harness(fixed(HELLO));
    const params = { model: 'm', messages, return_token_ids: true };
    const res = (await client.chat.completions.create(params)) as OpenAI.ChatCompletion & {
      prompt_token_ids: number[];
    };
    expect(res.prompt_token_ids).toEqual([1, 2, 3]);
    expect((res.choices[0] as unknown as { token_ids: number[] }).token_ids).toEqual([15043, 29892, 3186, 430, 29991]);
  });

  it('turns an error event into the HTTP status and error object', async () => {
    const busy: ServeErrorInfo = {
      kind: 'too_long',
      message: 'too long',
      code: 'context_length_exceeded',
      param: 'messages',
    };
    const { client } = harness(fixed([{ type: 'error', error: busy }]));
    const err = await client.chat.completions.create({ model: 'm', messages }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.UnprocessableEntityError);
    expect(err).toMatchObject({
      status: 422,
      code: 'context_length_exceeded',
      param: 'messages',
      type: 'invalid_request_error',
    });
  });

  it('rejects n = 2 with a 400 naming the parameter', async () => {
    const { client } = harness(fixed(HELLO));
    const err = await client.chat.completions.create({ model: 'm', messages, n: 2 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect(err).toMatchObject({ status: 400, param: 'n' });
  });

  it('answers malformed JSON with a 400', async () => {
    const { app } = harness(fixed(HELLO));
    const res = await app.request('/v1/chat/completions', { method: 'POST', body: '{"messages": [' });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { message: string; type: string } };
    expect(body.error.message).toMatch(/could not parse the JSON body/i);
    expect(body.error.type).toBe('invalid_request_error');
  });
});

describe('chat completions, streaming', () => {
  async function chunksOf(stream: AsyncIterable<OpenAI.ChatCompletionChunk>): Promise<OpenAI.ChatCompletionChunk[]> {
    const out: OpenAI.ChatCompletionChunk[] = [];
    for await (const chunk of stream) out.push(chunk);
    return out;
  }

  it('role in the first delta only, one id, finish_reason only at the end, usage chunk last', async () => {
    const { client } = harness(fixed(HELLO));
    const stream = await client.chat.completions.create({
      model: 'm',
      messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = await chunksOf(stream);
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    expect(chunks[0]?.id).toMatch(/^chatcmpl-[0-9a-f]{36}$/);
    expect(new Set(chunks.map((c) => c.created)).size).toBe(1);
    expect(chunks.every((c) => c.object === 'chat.completion.chunk')).toBe(true);

    const withChoices = chunks.filter((c) => c.choices.length > 0);
    const deltas = withChoices.map((c) => c.choices[0]?.delta);
    expect(deltas[0]).toEqual({ role: 'assistant', content: 'Hello' });
    expect(deltas.slice(1).every((d) => d?.role === undefined)).toBe(true);
    expect(deltas.map((d) => d?.content ?? '').join('')).toBe('Hello, world!');

    const finishes = withChoices.map((c) => c.choices[0]?.finish_reason);
    expect(finishes.slice(0, -1).every((f) => f === null)).toBe(true);
    expect(finishes.at(-1)).toBe('stop');

    const last = chunks.at(-1);
    expect(last?.choices).toEqual([]);
    expect(last?.usage).toEqual({
      prompt_tokens: 12,
      completion_tokens: 5,
      total_tokens: 17,
      prompt_tokens_details: { cached_tokens: 4 },
    });
    expect(chunks.slice(0, -1).every((c) => c.usage === null)).toBe(true);
  });

  it('streams the same text as the non-streaming response', async () => {
    const { client } = harness(fixed(HELLO));
    const whole = await client.chat.completions.create({ model: 'm', messages });
    const chunks = await chunksOf(await client.chat.completions.create({ model: 'm', messages, stream: true }));
    const streamed = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
    expect(streamed).toBe(whole.choices[0]?.message.content);
  });

  it('without include_usage sends no usage at all', async () => {
    const { app } = harness(fixed(HELLO));
    const res = await post(app, '/v1/chat/completions', { messages, stream: true });
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const text = await res.text();
    expect(text.endsWith('data: [DONE]\n\n')).toBe(true);
    const frames = dataFrames(text) as Record<string, unknown>[];
    expect(frames.every((f) => !('usage' in f))).toBe(true);
    expect(frames.every((f) => (f.choices as unknown[]).length === 1)).toBe(true);
  });

  it('sends role and content together when nothing precedes the end', async () => {
    const { client } = harness(fixed([START, { ...DONE, tail: '', completionTokens: 0, finishReason: 'length' }]));
    const chunks = await chunksOf(await client.chat.completions.create({ model: 'm', messages, stream: true }));
    expect(chunks.map((c) => [c.choices[0]?.delta, c.choices[0]?.finish_reason])).toEqual([
      [{ role: 'assistant', content: '' }, null],
      [{}, 'length'],
    ]);
  });

  it('sends per-token log-probs in the chunks', async () => {
    const { client } = harness(fixed(HELLO));
    const chunks = await chunksOf(
      await client.chat.completions.create({ model: 'm', messages, stream: true, logprobs: true, top_logprobs: 1 }),
    );
    const tokens = chunks.flatMap((c) => c.choices[0]?.logprobs?.content ?? []);
    expect(tokens.map((t) => t.token)).toEqual(['Hello', ',', ' wor', 'ld', '!']);
    expect(tokens.every((t) => Number.isFinite(t.logprob))).toBe(true);
    // the held-back tokens still get their chunks (with empty content) so log-probs stay one per token
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe('Hello, world!');
  });

  it('puts prompt_token_ids in the first chunk and token_ids in choices with return_token_ids', async () => {
    const { app } = harness(fixed(HELLO));
    const res = await post(app, '/v1/chat/completions', { messages, stream: true, return_token_ids: true });
    const frames = dataFrames(await res.text()) as {
      prompt_token_ids?: number[];
      choices: { token_ids?: number[] }[];
    }[];
    expect(frames[0]?.prompt_token_ids).toEqual([1, 2, 3]);
    expect(frames.slice(1).every((f) => f.prompt_token_ids === undefined)).toBe(true);
    expect(frames.flatMap((f) => f.choices[0]?.token_ids ?? [])).toEqual([15043, 29892, 3186, 430, 29991]);
  });

  it('sends nothing with choices before the first token, only keep-alive comments', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    async function* slowPrompt(): AsyncGenerator<TurnEvent> {
      yield START;
      await gate; // prompt processing and the first decode step still running
      yield* scripted(HELLO.slice(1));
    }
    const { app } = harness(() => slowPrompt(), { keepAliveMs: 5 });
    const res = await post(app, '/v1/chat/completions', { messages, stream: true });
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let early = '';
    while (!early.includes(': keep-alive')) early += (await reader.read()).value ?? '';
    expect(early).not.toContain('data:');
    release();
    let rest = '';
    for (let r = await reader.read(); !r.done; r = await reader.read()) rest += r.value;
    const first = dataFrames(rest)[0] as OpenAI.ChatCompletionChunk;
    expect(first.choices[0]?.delta).toEqual({ role: 'assistant', content: 'Hello' });
  });

  it('keeps the connection alive during slow events and the SDK ignores the comments', async () => {
    const { app, client } = harness(fixed(HELLO, 15), { keepAliveMs: 4 });
    const raw = await (await post(app, '/v1/chat/completions', { messages, stream: true })).text();
    expect(raw).toContain(': keep-alive\n\n');
    const chunks = await chunksOf(await client.chat.completions.create({ model: 'm', messages, stream: true }));
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe('Hello, world!');
  });

  it('an error event becomes an error frame, the stream closes without [DONE], the SDK throws', async () => {
    const script = fixed([START, { type: 'token', id: 1, text: 'Hel' }, { type: 'error', error: ERROR }]);
    const { app, client } = harness(script);
    const raw = await (await post(app, '/v1/chat/completions', { messages, stream: true })).text();
    expect(raw).not.toContain('[DONE]');
    expect(
      raw.endsWith(
        `data: ${JSON.stringify({ error: { message: 'the engine failed', type: 'server_error', param: null, code: 'engine_error' } })}\n\n`,
      ),
    ).toBe(true);

    const stream = await client.chat.completions.create({ model: 'm', messages, stream: true });
    const seen: string[] = [];
    const err = await (async () => {
      for await (const chunk of stream) seen.push(chunk.choices[0]?.delta.content ?? '');
    })().catch((e: unknown) => e);
    expect(seen).toEqual(['Hel']);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect(err).toMatchObject({ code: 'engine_error', type: 'server_error', message: 'the engine failed' });
  });

  it('an exception in the producer becomes a generic 500 error frame', async () => {
    const log = vi.spyOn(console, 'error').mockImplementation(() => {});
    async function* failing(): AsyncGenerator<TurnEvent> {
      yield START;
      throw new Error('secret detail at /srv/engine.ts:42');
    }
    const { app } = harness(() => failing());
    const raw = await (await post(app, '/v1/chat/completions', { messages, stream: true })).text();
    expect(raw).not.toContain('secret');
    expect(dataFrames(raw)).toEqual([
      {
        error: {
          message: 'The server had an error while processing your request.',
          type: 'server_error',
          param: null,
          code: 'internal_error',
        },
      },
    ]);
    expect(log).toHaveBeenCalled();
  });

  it('a producer that stops without `done` is reported as an error', async () => {
    const { app } = harness(fixed([START, { type: 'token', id: 1, text: 'a' }]));
    const frames = dataFrames(await (await post(app, '/v1/chat/completions', { messages, stream: true })).text());
    expect(frames.at(-1)).toMatchObject({ error: { type: 'server_error' } });
  });

  it('with failFast, an immediate error gets its HTTP status (409 session busy)', async () => {
    const busy: ServeErrorInfo = {
      kind: 'busy',
      message: 'busy',
      code: 'session_busy',
      param: null,
    };
    const { client } = harness(fixed([{ type: 'error', error: busy }]), { failFastMs: 50 });
    const err = await client.chat.completions.create({ model: 'm', messages, stream: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.ConflictError);
    expect(err).toMatchObject({ status: 409, code: 'session_busy' });
  });

  it('with failFast, a slow start still streams normally', async () => {
    const { client } = harness(fixed(HELLO, 10), { failFastMs: 1 });
    const chunks = await chunksOf(await client.chat.completions.create({ model: 'm', messages, stream: true }));
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe('Hello, world!');
  });
});

describe('cancellation', () => {
  /** An event source that records `return()` and never finishes on its own after the first token. */
  function recordingSource(): { source: AsyncIterable<TurnEvent>; returned: Promise<void> } {
    let markReturned!: () => void;
    const returned = new Promise<void>((resolve) => (markReturned = resolve));
    const queue: TurnEvent[] = [START, { type: 'token', id: 1, text: 'Hi' }];
    const iterator: AsyncIterator<TurnEvent> = {
      next: () => {
        const value = queue.shift();
        return value === undefined ? new Promise(() => {}) : Promise.resolve({ done: false, value });
      },
      return: () => {
        markReturned();
        return Promise.resolve({ done: true, value: undefined });
      },
    };
    return { source: { [Symbol.asyncIterator]: () => iterator }, returned };
  }

  it("calls the source's return() when the client cancels the stream", async () => {
    const { source, returned } = recordingSource();
    const body = streamChatCompletion(source, { model: 'm', keepAliveMs: 0 });
    const reader = body.getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toContain('"role":"assistant"');
    await reader.cancel();
    await returned; // resolves only if return() was called
  }, 5_000);

  it('an SDK consumer that breaks out of the loop stops the producer', async () => {
    const { source, returned } = recordingSource();
    const { client } = harness(() => source);
    const stream = await client.chat.completions.create({ model: 'm', messages, stream: true });
    for await (const chunk of stream) {
      expect(chunk.choices[0]?.delta.content).toBe('Hi');
      break;
    }
    await returned;
  }, 5_000);
});

// ---- completions ----

/** lm-evaluation-harness style: echo the prompt with its log-probs, one generated token */
const PROMPT_LOGPROBS: (TokenLogprob | null)[] = [
  null,
  lp(450, 'The', -3.5, [lp(450, 'The', -3.5)]),
  lp(4996, ' quick', -2.25, [lp(4996, ' quick', -2.25)]),
  lp(17354, ' fox', -Infinity, [lp(1, ' dog', -0.5)]),
];
const SCORING: TurnEvent[] = [
  {
    type: 'start',
    promptTokens: 4,
    cachedTokens: 0,
    promptIds: [1, 450, 4996, 17354],
    promptLogprobs: PROMPT_LOGPROBS,
  },
  { type: 'token', id: 432, text: ' j', logprob: lp(432, ' j', -0.75, [lp(432, ' j', -0.75)]) },
  { type: 'done', finishReason: 'length', promptTokens: 4, completionTokens: 1, cachedTokens: 0, tail: '' },
];

describe('completions', () => {
  it('parses with the SDK: text, usage, id', async () => {
    const { client, turns } = harness(fixed(HELLO));
    const res = await client.completions.create({ model: 'hymba', prompt: 'Say hello', max_tokens: 8 });
    expect(res.object).toBe('text_completion');
    expect(res.id).toMatch(/^cmpl-[0-9a-f]{36}$/);
    expect(res.choices[0]).toMatchObject({ index: 0, text: 'Hello, world!', finish_reason: 'stop', logprobs: null });
    expect(res.usage).toMatchObject({ prompt_tokens: 12, completion_tokens: 5, total_tokens: 17 });
    expect(turns[0]?.prompt).toEqual({ kind: 'text', text: 'Say hello' });
  });

  it('echo + logprobs: prompt first, first prompt log-prob null, the sum lm-eval takes', async () => {
    const { client, turns } = harness(fixed(SCORING));
    const prompt = 'The quick fox';
    const res = await client.completions.create({ model: 'm', prompt, echo: true, logprobs: 1, max_tokens: 1 });
    expect(turns[0]).toMatchObject({ echo: true, logprobs: 1, maxTokens: 1 });
    const choice = res.choices[0]!;
    expect(choice.text).toBe('The quick fox j');
    const l = choice.logprobs!;
    expect(l.tokens).toEqual(['', 'The', ' quick', ' fox', ' j']);
    expect(l.token_logprobs).toEqual([null, -3.5, -2.25, -9999, -0.75]);
    expect(l.top_logprobs).toEqual([null, { The: -3.5 }, { ' quick': -2.25 }, { ' dog': -0.5 }, { ' j': -0.75 }]);
    // offsets into the returned text; the completion starts right after the echoed prompt
    expect(l.text_offset).toEqual([0, 0, 3, 9, prompt.length]);
    // lm-eval: sum(token_logprobs[ctxlen:-1]) over the continuation part of the prompt
    const ctxlen = 2;
    const continuation = (l.token_logprobs ?? []).slice(ctxlen, -1) as number[];
    expect(continuation.reduce((a, b) => a + b, 0)).toBe(-2.25 - 9999);
  });

  it('token-id prompts echo the prompt tokens’ texts', async () => {
    const { client, turns } = harness(fixed(SCORING));
    const res = await client.completions.create({
      model: 'm',
      prompt: [1, 450, 4996, 17354],
      echo: true,
      max_tokens: 1,
    });
    expect(turns[0]?.prompt).toEqual({ kind: 'ids', ids: [1, 450, 4996, 17354] });
    expect(res.choices[0]?.text).toBe('The quick fox j');
    expect(res.choices[0]?.logprobs).toBeNull();
  });

  it('return_token_ids adds choices[].prompt_token_ids and token_ids', async () => {
    const { client } = harness(fixed(SCORING));
    const params = { model: 'm', prompt: 'x', return_token_ids: true };
    const res = await client.completions.create(params);
    expect(res.choices[0]).toMatchObject({ prompt_token_ids: [1, 450, 4996, 17354], token_ids: [432] });
  });

  it('streams text deltas, echo first, finish_reason last, then usage', async () => {
    const { client } = harness(fixed(SCORING));
    const stream = await client.completions.create({
      model: 'm',
      prompt: 'The quick fox',
      echo: true,
      logprobs: 1,
      max_tokens: 1,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks: OpenAI.Completion[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    const withChoices = chunks.filter((c) => c.choices.length > 0);
    expect(withChoices[0]?.choices[0]?.text).toBe('The quick fox');
    expect(withChoices[0]?.choices[0]?.logprobs?.token_logprobs).toEqual([null, -3.5, -2.25, -9999]);
    expect(withChoices.map((c) => c.choices[0]?.text).join('')).toBe('The quick fox j');
    expect(withChoices[1]?.choices[0]?.logprobs).toEqual({
      tokens: [' j'],
      token_logprobs: [-0.75],
      top_logprobs: [{ ' j': -0.75 }],
      text_offset: [13],
    });
    const finishes = withChoices.map((c) => c.choices[0]?.finish_reason);
    expect(finishes.slice(0, -1).every((f) => f === null)).toBe(true);
    expect(finishes.at(-1)).toBe('length');
    expect(chunks.at(-1)?.choices).toEqual([]);
    expect(chunks.at(-1)?.usage).toMatchObject({ prompt_tokens: 4, completion_tokens: 1, total_tokens: 5 });
    expect(chunks.slice(0, -1).every((c) => c.usage === null)).toBe(true);
  });

  it('streams the same text as the non-streaming response', async () => {
    const { client } = harness(fixed(HELLO));
    const whole = await client.completions.create({ model: 'm', prompt: 'Say hello' });
    const stream = await client.completions.create({ model: 'm', prompt: 'Say hello', stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
    expect(text).toBe(whole.choices[0]?.text);
  });

  it('rejects a batch of two prompts with a clear 400', async () => {
    const { client } = harness(fixed(HELLO));
    const err = await client.completions.create({ model: 'm', prompt: ['a', 'b'] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect(err).toMatchObject({ param: 'prompt' });
    expect((err as Error).message).toMatch(/batches of prompts are not supported yet/);
  });

  it('an error event mid-stream surfaces as an SDK error', async () => {
    const { client } = harness(fixed([START, { type: 'error', error: ERROR }]));
    const stream = await client.completions.create({ model: 'm', prompt: 'x', stream: true });
    const err = await (async () => {
      for await (const _chunk of stream) {
        // no chunks expected
      }
    })().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'engine_error', message: 'the engine failed' });
  });
});
