// Inside workerd: the Responses API through the `openai` SDK (and raw fetch where the SDK hides things). A chain
// of responses is one session; continuing restores the stored state (cached_tokens) and must give exactly
// what the same conversation gives from scratch: the engine's expectation (global-setup.ts) for the scenario
// chain, a Chat Completions request over the equivalent message list otherwise.

import { runInDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import OpenAI from 'openai';
import type { Response as OpenAIResponse, ResponseStreamEvent } from 'openai/resources/responses/responses';
import { beforeAll, describe, expect, it } from 'vitest';
import type { TurnEvent } from '../../engine/serve/protocol.js';
import type { SessionDO } from '../../durable-objects/session/session-do.js';
import { SessionStore } from '../../durable-objects/session/store.js';
import { sha256 } from '../../workers/auth.js';
import app from '../../workers/index.js';
import { collectResponse, streamResponse, type ResponseHead } from '../../workers/api/responses-format.js';
import { BASE, call, expected, expectError, openaiClient, post, seedModel } from './api-helpers.js';
import { MAX_TOKENS, SYSTEM, USER_TURNS } from './scenario.js';

beforeAll(seedModel);

type Msg = { role: 'system' | 'user' | 'assistant' | 'tool'; content: string; tool_calls?: unknown[] };

const client = (): OpenAI => openaiClient();

/** A greedy response of MAX_TOKENS through the SDK. */
function respond(params: Partial<OpenAI.Responses.ResponseCreateParamsNonStreaming>): Promise<OpenAIResponse> {
  return client().responses.create({
    model: 'hymba',
    input: '',
    max_output_tokens: MAX_TOKENS,
    temperature: 0,
    ...params,
  } as OpenAI.Responses.ResponseCreateParamsNonStreaming);
}

/** What Chat Completions gives for `messages` (greedy, no cache key: computed from scratch). */
async function chat(messages: Msg[]): Promise<{ text: string; promptTokens: number }> {
  const res = await post('/v1/chat/completions', { model: 'hymba', messages, max_tokens: MAX_TOKENS, temperature: 0 });
  expect(res.status).toBe(200);
  const body = (await res.json()) as {
    choices: { message: { content: string | null } }[];
    usage: { prompt_tokens: number };
  };
  return { text: body.choices[0]!.message.content ?? '', promptTokens: body.usage.prompt_tokens };
}

/** Tokens of a conversation rendered without a generation prompt: what a snapshot after it holds. */
async function conversationTokens(messages: Msg[]): Promise<number> {
  const res = await post('/tokenize', { messages, add_generation_prompt: false });
  expect(res.status).toBe(200);
  return ((await res.json()) as { count: number }).count;
}

const cachedOf = (r: OpenAIResponse): number => r.usage!.input_tokens_details.cached_tokens;
/** The session part of a response id: equal for responses of one session. */
const sessionOf = (id: string): string => id.split('_')[1]!;
const replyOf = (r: OpenAIResponse): Msg => ({ role: 'assistant', content: r.output_text });

const conversation = () => expected().conversation;

describe('a chain of responses', () => {
  let r1: OpenAIResponse;
  let r2: OpenAIResponse;
  let r3: OpenAIResponse;
  let fork: OpenAIResponse;
  const history = (): Msg[] => [
    { role: 'system', content: SYSTEM },
    { role: 'user', content: USER_TURNS[0] },
    replyOf(r1),
    { role: 'user', content: USER_TURNS[1] },
    replyOf(r2),
    { role: 'user', content: USER_TURNS[2] },
    replyOf(r3),
  ];

  beforeAll(async () => {
    r1 = await respond({ instructions: SYSTEM, input: USER_TURNS[0] });
    r2 = await respond({ previous_response_id: r1.id, input: USER_TURNS[1] });
    // a fork from the first response while the second is the chain's newest
    fork = await respond({ previous_response_id: r1.id, input: 'Tell me about the weather.' });
    r3 = await respond({ previous_response_id: r2.id, input: [{ role: 'user', content: USER_TURNS[2] }] });
  });

  it('each response is the from-scratch greedy reply of the conversation so far', () => {
    [r1, r2, r3].forEach((r, k) => {
      const want = conversation()[k]!;
      expect(r.object).toBe('response');
      expect(r.id).toMatch(/^resp_[0-9a-f]{64}_[0-9a-f]{16}$/);
      expect(r.output_text, `response ${k + 1}`).toBe(want.text);
      expect(r.status).toBe(want.finishReason === 'length' ? 'incomplete' : 'completed');
      expect(r.incomplete_details).toEqual(want.finishReason === 'length' ? { reason: 'max_output_tokens' } : null);
      expect(r.usage!.input_tokens).toBe(want.promptIds.length);
      expect(r.usage!.output_tokens).toBe(want.tokenIds.length);
      expect(r.usage!.total_tokens).toBe(want.promptIds.length + want.tokenIds.length);
    });
  });

  it('continuations resume from the stored state: cached_tokens = the conversation before the new input', () => {
    expect(cachedOf(r1)).toBe(0);
    expect(cachedOf(r2)).toBe(conversation()[1]!.previousConversationTokens);
    expect(cachedOf(r3)).toBe(conversation()[2]!.previousConversationTokens);
    expect(cachedOf(r2)).toBeGreaterThan(0);
    expect(sessionOf(r2.id)).toBe(sessionOf(r1.id));
    expect(sessionOf(r3.id)).toBe(sessionOf(r1.id));
  });

  it('the response object has the documented fields', () => {
    expect(r2).toMatchObject({
      object: 'response',
      error: null,
      model: 'hymba',
      instructions: null,
      previous_response_id: r1.id,
      parallel_tool_calls: true,
      tool_choice: 'auto',
      tools: [],
      temperature: 0,
      top_p: 1,
      max_output_tokens: MAX_TOKENS,
      store: true,
      metadata: {},
      text: { format: { type: 'text' } },
    });
    expect(r1.instructions).toBe(SYSTEM);
    expect(r2.output).toHaveLength(1);
    expect(r2.output[0]).toMatchObject({ type: 'message', role: 'assistant', content: [{ type: 'output_text' }] });
    expect((r2.output[0] as { id: string }).id).toMatch(/^msg_/);
    expect(r2.usage!.output_tokens_details.reasoning_tokens).toBe(0);
  });

  it("a fork from the first response does not see the second's content and resumes from its state", async () => {
    expect(sessionOf(fork.id)).not.toBe(sessionOf(r1.id));
    const messages: Msg[] = [
      { role: 'system', content: SYSTEM },
      { role: 'user', content: USER_TURNS[0] },
      replyOf(r1),
      { role: 'user', content: 'Tell me about the weather.' },
    ];
    const want = await chat(messages);
    expect(fork.output_text).toBe(want.text);
    expect(fork.usage!.input_tokens).toBe(want.promptTokens);
    expect(cachedOf(fork)).toBe(await conversationTokens(messages.slice(0, 3)));
    expect(cachedOf(fork)).toBeGreaterThan(0);
  });

  it('the same instructions keep the session; other instructions continue in a fork, recomputed', async () => {
    const same = await respond({ previous_response_id: r3.id, instructions: SYSTEM, input: 'And again?' });
    expect(sessionOf(same.id)).toBe(sessionOf(r3.id));
    const sameMessages: Msg[] = [...history(), { role: 'user', content: 'And again?' }];
    expect(cachedOf(same)).toBe(await conversationTokens(history()));
    const wantSame = await chat(sameMessages);
    expect(same.output_text).toBe(wantSame.text);
    expect(same.usage!.input_tokens).toBe(wantSame.promptTokens);

    const other = await respond({ previous_response_id: r3.id, instructions: 'Be verbose.', input: 'And again?' });
    expect(sessionOf(other.id)).not.toBe(sessionOf(r3.id));
    expect(cachedOf(other)).toBe(0);
    const otherMessages: Msg[] = [{ role: 'system', content: 'Be verbose.' }, ...sameMessages.slice(1)];
    const wantOther = await chat(otherMessages);
    expect(other.output_text).toBe(wantOther.text);
    expect(other.usage!.input_tokens).toBe(wantOther.promptTokens);
    expect(other.instructions).toBe('Be verbose.');
  });

  it('retrieve returns the stored response', async () => {
    const got = await client().responses.retrieve(r2.id);
    expect(got).toEqual(r2);
  });

  it('two concurrent continuations of the newest response both succeed, each as if alone', async () => {
    const base = await respond({ previous_response_id: r1.id, input: 'Concurrency base.' });
    const inputs = ['First branch.', 'Second branch, different.'];
    const [a, b] = await Promise.all(inputs.map((input) => respond({ previous_response_id: base.id, input })));
    const prefix: Msg[] = [
      { role: 'system', content: SYSTEM },
      { role: 'user', content: USER_TURNS[0] },
      replyOf(r1),
      { role: 'user', content: 'Concurrency base.' },
      replyOf(base),
    ];
    const cached = await conversationTokens(prefix);
    for (const [k, r] of [a!, b!].entries()) {
      const want = await chat([...prefix, { role: 'user', content: inputs[k]! }]);
      expect(r.output_text).toBe(want.text);
      expect(r.usage!.input_tokens).toBe(want.promptTokens); // neither saw the other's input
      expect(cachedOf(r)).toBe(cached);
    }
    // one continued the session, the other forked
    expect([a!, b!].filter((r) => sessionOf(r.id) === sessionOf(base.id))).toHaveLength(1);
  });

  it('a deleted response can be neither retrieved nor continued; the rest of the chain still works', async () => {
    const base = await respond({ previous_response_id: r1.id, input: 'Delete me later.' });
    const next = await respond({ previous_response_id: base.id, input: 'After the deleted one.' });
    const res = await call(`/v1/responses/${base.id}`, { method: 'DELETE' });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ id: base.id, object: 'response', deleted: true });
    await expectError(await call(`/v1/responses/${base.id}`), 404);
    await expectError(await call(`/v1/responses/${base.id}`, { method: 'DELETE' }), 404);
    const cont = await post('/v1/responses', { previous_response_id: base.id, input: 'x', max_output_tokens: 2 });
    const err = await expectError(cont, 404, 'previous_response_not_found');
    expect(err.param).toBe('previous_response_id');
    expect((await client().responses.retrieve(next.id)).output_text).toBe(next.output_text);
    expect((await client().responses.retrieve(r1.id)).output_text).toBe(r1.output_text);
    // the response after the deleted one continues from its state (its turn's transcript is kept)
    const after = await respond({ previous_response_id: next.id, input: 'Still here?' });
    expect(sessionOf(after.id)).toBe(sessionOf(next.id));
    expect(cachedOf(after)).toBeGreaterThan(0);
  });

  it('store: false returns a response that cannot be retrieved; its continuation recomputes the chain', async () => {
    const r = await respond({ previous_response_id: r1.id, input: USER_TURNS[1], store: false });
    expect(r.id).toMatch(/^resp_[0-9a-f]{64}_[0-9a-f]{16}$/);
    expect((r as unknown as { store: boolean }).store).toBe(false);
    expect(r.output_text).toBe(r2.output_text);
    expect(cachedOf(r)).toBe(0);
    await expectError(await call(`/v1/responses/${r.id}`), 404);
    const cont = await post('/v1/responses', { previous_response_id: r.id, input: 'x' });
    await expectError(cont, 404, 'previous_response_not_found');
  });

  it('a response whose body was never saved is rebuilt from its turn', async () => {
    const r = await respond({ previous_response_id: r1.id, input: 'Rebuild me.' });
    const stub = env.SESSIONS.get(env.SESSIONS.idFromString(sessionOf(r.id)));
    await runInDurableObject(stub, (_i: SessionDO, state) => {
      state.storage.sql.exec('UPDATE responses SET body = NULL WHERE id = ?', r.id);
    });
    const got = await client().responses.retrieve(r.id);
    expect(got.id).toBe(r.id);
    expect(got.status).toBe(r.status);
    expect(got.output_text).toBe(r.output_text);
    expect(got.usage).toEqual(r.usage);
  });
});

describe('input items', () => {
  it('function calls and their outputs become assistant tool calls and tool messages, kept by the session', async () => {
    const call1 = { name: 'get_weather', arguments: '{"city":"Paris"}' };
    const r = await respond({
      instructions: SYSTEM,
      input: [
        { role: 'user', content: [{ type: 'input_text', text: 'Weather in Paris?' }] },
        { type: 'function_call', call_id: 'call_1', ...call1 },
        { type: 'function_call_output', call_id: 'call_1', output: 'Sunny, 21 C' },
      ],
    });
    const messages: Msg[] = [
      { role: 'system', content: SYSTEM },
      { role: 'user', content: 'Weather in Paris?' },
      { role: 'assistant', content: '', tool_calls: [{ id: 'call_1', type: 'function', function: call1 }] },
      { role: 'tool', content: 'Sunny, 21 C', tool_call_id: 'call_1' } as Msg,
    ];
    const want = await chat(messages);
    expect(r.output_text).toBe(want.text);
    expect(r.usage!.input_tokens).toBe(want.promptTokens);
    const next = await respond({ previous_response_id: r.id, input: 'Thanks.' });
    const all: Msg[] = [...messages, replyOf(r), { role: 'user', content: 'Thanks.' }];
    expect(cachedOf(next)).toBe(await conversationTokens(all.slice(0, -1)));
    expect(next.output_text).toBe((await chat(all)).text);
  });
});

describe('function calling', () => {
  const weather = {
    type: 'object',
    properties: {
      city: { type: 'string', enum: ['Paris', 'Tokyo'] },
      days: { type: 'integer', minimum: 1, maximum: 7 },
    },
    required: ['city', 'days'],
    additionalProperties: false,
  };
  const tools = [
    { type: 'function' as const, name: 'get_weather', description: 'A forecast.', parameters: weather, strict: null },
  ];
  const ask = 'What is the weather in Paris for three days?';

  it('a required call is a function_call item; its output continues the chain from the stored state', async () => {
    const first = await client().responses.create({
      model: 'hymba',
      instructions: 'You can call tools.',
      input: ask,
      tools,
      tool_choice: 'required',
      parallel_tool_calls: false,
      max_output_tokens: 120,
      temperature: 0,
    });
    expect(first.status).toBe('completed');
    const calls = first.output.filter((o) => o.type === 'function_call');
    expect(calls).toHaveLength(1);
    const fc = calls[0]!;
    expect(fc.id).toMatch(/^fc_/);
    expect(fc.name).toBe('get_weather');
    expect(fc.status).toBe('completed');
    const args = JSON.parse(fc.arguments) as { city: string; days: number };
    expect(['Paris', 'Tokyo']).toContain(args.city);
    expect(first.output_text).toBe('');

    const result = JSON.stringify({ forecast: 'sunny' });
    const second = await respond({
      previous_response_id: first.id,
      input: [{ type: 'function_call_output', call_id: fc.call_id, output: result }],
      tools,
    });
    expect(sessionOf(second.id)).toBe(sessionOf(first.id));
    // the stored state covers the prompt and the call as the template renders it
    expect(cachedOf(second)).toBeGreaterThan(first.usage!.input_tokens);
    const res = await post('/v1/chat/completions', {
      model: 'hymba',
      messages: [
        { role: 'system', content: 'You can call tools.' },
        { role: 'user', content: ask },
        {
          role: 'assistant',
          content: null,
          tool_calls: [{ id: fc.call_id, type: 'function', function: { name: fc.name, arguments: fc.arguments } }],
        },
        { role: 'tool', tool_call_id: fc.call_id, content: result },
      ],
      tools: tools.map(({ type, name, description, parameters }) => ({
        type,
        function: { name, description, parameters },
      })),
      max_tokens: MAX_TOKENS,
      temperature: 0,
    });
    const want = (await res.json()) as {
      choices: { message: { content: string | null } }[];
      usage: { prompt_tokens: number };
    };
    expect(second.usage!.input_tokens).toBe(want.usage.prompt_tokens);
    expect(second.output_text).toBe(want.choices[0]!.message.content ?? '');
  });

  it('streamed: the call is added, its arguments streamed and done, and the final response carries it', async () => {
    const stream = await client().responses.create({
      model: 'hymba',
      input: ask,
      tools,
      tool_choice: { type: 'function', name: 'get_weather' },
      max_output_tokens: 120,
      temperature: 0,
      stream: true,
    });
    const events: ResponseStreamEvent[] = [];
    for await (const e of stream) events.push(e);
    const types = events.map((e) => e.type);
    expect(types.slice(0, 2)).toEqual(['response.created', 'response.in_progress']);
    expect(types.at(-1)).toBe('response.completed');
    const at = types.indexOf('response.function_call_arguments.done');
    expect(types.slice(at - 2, at + 2)).toEqual([
      'response.output_item.added',
      'response.function_call_arguments.delta',
      'response.function_call_arguments.done',
      'response.output_item.done',
    ]);
    const done = events[at] as Extract<ResponseStreamEvent, { type: 'response.function_call_arguments.done' }>;
    expect(done.name).toBe('get_weather');
    const last = events.at(-1) as Extract<ResponseStreamEvent, { type: 'response.completed' }>;
    const item = last.response.output.find((o) => o.type === 'function_call')!;
    expect(item).toMatchObject({ arguments: done.arguments, name: 'get_weather', id: done.item_id });
    expect(JSON.parse(done.arguments)).toHaveProperty('city');
  });
});

describe('streaming', () => {
  it('typed events in order with increasing sequence numbers; the deltas make the text; then retrievable', async () => {
    const stream = await client().responses.create({
      model: 'hymba',
      instructions: SYSTEM,
      input: USER_TURNS[0],
      max_output_tokens: MAX_TOKENS,
      temperature: 0,
      stream: true,
    });
    const events: ResponseStreamEvent[] = [];
    for await (const e of stream) events.push(e);
    expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));
    const types = events.map((e) => e.type);
    const deltas = events.flatMap((e) => (e.type === 'response.output_text.delta' ? [e.delta] : []));
    expect(types).toEqual([
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
      ...deltas.map(() => 'response.output_text.delta'),
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      conversation()[0]!.finishReason === 'length' ? 'response.incomplete' : 'response.completed',
    ]);
    const first = events[0] as Extract<ResponseStreamEvent, { type: 'response.created' }>;
    expect(first.response.status).toBe('in_progress');
    const last = events.at(-1) as Extract<ResponseStreamEvent, { type: 'response.completed' }>;
    const want = conversation()[0]!;
    expect(deltas.join('')).toBe(want.text);
    const message = last.response.output[0] as { id: string; content: { text: string }[] };
    expect(message.content[0]!.text).toBe(want.text);
    const added = events[2] as Extract<ResponseStreamEvent, { type: 'response.output_item.added' }>;
    expect(added.item.id).toBe(message.id);
    expect(last.response.usage).toMatchObject({
      input_tokens: want.promptIds.length,
      output_tokens: want.tokenIds.length,
      input_tokens_details: { cached_tokens: 0 },
    });
    const got = await client().responses.retrieve(last.response.id);
    expect(got.output).toEqual(last.response.output);
    expect(got.usage).toEqual(last.response.usage);
  });

  it('errors known before the turn runs are plain HTTP errors, not a stream', async () => {
    const res = await post('/v1/responses', { previous_response_id: 'resp_nope', input: 'x', stream: true });
    await expectError(res, 404, 'previous_response_not_found');
  });
});

describe('the assembler with tool calls (synthetic turn events)', () => {
  const head: ResponseHead = { id: 'resp_x', createdAt: 1, model: 'hymba', body: { input: 'x' } };
  const done: TurnEvent = {
    type: 'done',
    finishReason: 'tool_calls',
    promptTokens: 10,
    completionTokens: 7,
    cachedTokens: 4,
    tail: '',
  };
  const turn = (withText: boolean): TurnEvent[] => [
    { type: 'start', promptTokens: 10, cachedTokens: 4 },
    ...(withText ? [{ type: 'token', id: 5, text: 'Let me check.' } as TurnEvent] : []),
    { type: 'token', id: 6, text: '' },
    { type: 'tool_call', index: 0, id: 'call_a', name: 'f', arguments: '{"x":1}' },
    { type: 'tool_call', index: 1, id: 'call_b', name: 'g', arguments: '{}' },
    done,
  ];
  async function* from(events: TurnEvent[]): AsyncGenerator<TurnEvent> {
    yield* events;
  }

  it('non-streaming: text as a message, then one function_call item per call', async () => {
    const r = await collectResponse(from(turn(true)), head);
    expect(r.status).toBe('completed');
    expect(r.output.map((o) => o.type)).toEqual(['message', 'function_call', 'function_call']);
    expect(r.output[1]).toMatchObject({ call_id: 'call_a', name: 'f', arguments: '{"x":1}', status: 'completed' });
    expect(r.output[1]!.id).toMatch(/^fc_/);
    expect(r.usage).toEqual({
      input_tokens: 10,
      input_tokens_details: { cached_tokens: 4 },
      output_tokens: 7,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: 17,
    });
    const callsOnly = await collectResponse(from(turn(false)), head);
    expect(callsOnly.output.map((o) => o.type)).toEqual(['function_call', 'function_call']);
  });

  it('streaming: each call is added, its arguments streamed and done, then the item done', async () => {
    const text = await new Response(streamResponse(from(turn(false)), head, { keepAliveMs: 0 })).text();
    const frames = text
      .trim()
      .split('\n\n')
      .map((f) => {
        const [ev, data] = f.split('\n');
        const payload = JSON.parse(data!.slice('data: '.length)) as { type: string; sequence_number: number };
        expect(ev).toBe(`event: ${payload.type}`);
        return payload;
      });
    expect(frames.map((f) => f.type)).toEqual([
      'response.created',
      'response.in_progress',
      ...['call_a', 'call_b'].flatMap(() => [
        'response.output_item.added',
        'response.function_call_arguments.delta',
        'response.function_call_arguments.done',
        'response.output_item.done',
      ]),
      'response.completed',
    ]);
    expect(frames.map((f) => f.sequence_number)).toEqual(frames.map((_, i) => i));
    expect(frames[2]).toMatchObject({
      output_index: 0,
      item: { type: 'function_call', arguments: '', call_id: 'call_a' },
    });
    expect(frames[3]).toMatchObject({ output_index: 0, delta: '{"x":1}' });
    expect(frames[4]).toMatchObject({ name: 'f', arguments: '{"x":1}' });
  });

  it('a turn that fails mid-stream ends with an error event', async () => {
    const failing: TurnEvent[] = [
      { type: 'start', promptTokens: 1, cachedTokens: 0 },
      { type: 'token', id: 1, text: 'a' },
      {
        type: 'error',
        error: { kind: 'internal', code: 'internal_error', param: null, message: 'boom' },
      },
    ];
    const text = await new Response(streamResponse(from(failing), head, { keepAliveMs: 0 })).text();
    const last = text.trim().split('\n\n').at(-1)!;
    expect(last.split('\n')[0]).toBe('event: error');
    const data = JSON.parse(last.split('\n')[1]!.slice('data: '.length)) as Record<string, unknown>;
    expect(data).toMatchObject({ type: 'error', code: 'internal_error', message: 'boom', param: null });
    expect(text).not.toContain('[DONE]');
  });
});

describe('validation and ids', () => {
  it('unsupported input items, content parts and tools are 400s naming the field', async () => {
    const cases: [unknown, string][] = [
      [{ input: [{ type: 'reasoning', summary: [] }] }, 'input[0].type'],
      [{ input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'x' }] }] }, 'input[0].content[0].type'],
      [{ input: [{ type: 'item_reference', id: 'msg_1' }] }, 'input[0].type'],
      [{ input: [{ role: 'robot', content: 'x' }] }, 'input[0].role'],
      [{ input: 'x', tools: [{ type: 'web_search' }] }, 'tools[0].type'],
      [{ input: 'x', tool_choice: 'required' }, 'tool_choice'],
      [{ input: 'x', text: { format: { type: 'json_schema', schema: {} } } }, 'text.format.name'],
      [{ input: [] }, 'input'],
      [{}, 'input'],
    ];
    for (const [body, param] of cases) {
      const err = await expectError(await post('/v1/responses', body), 400);
      expect(err.param, JSON.stringify(body)).toBe(param);
    }
    const msg = await expectError(await post('/v1/responses', { input: [{ type: 'reasoning' }] }), 400);
    expect(msg.message).toMatch(/reasoning/);
  });

  it('unknown or malformed response ids are 404s, never 500s', async () => {
    const unknown = `resp_${env.SESSIONS.newUniqueId().toString()}_0123456789abcdef`;
    const ids = ['resp_nope', 'resp_' + 'f'.repeat(64) + '_0123456789abcdef', unknown, 'x'.repeat(300)];
    for (const id of ids) {
      const cont = await post('/v1/responses', { previous_response_id: id, input: 'x' });
      expect((await expectError(cont, 404, 'previous_response_not_found')).param).toBe('previous_response_id');
      await expectError(await call(`/v1/responses/${encodeURIComponent(id)}`), 404);
      await expectError(await call(`/v1/responses/${encodeURIComponent(id)}`, { method: 'DELETE' }), 404);
    }
  });

  it('looking up an unknown id leaves its object empty', async () => {
    const doId = env.SESSIONS.newUniqueId();
    await expectError(await call(`/v1/responses/resp_${doId.toString()}_0123456789abcdef`), 404);
    const tables = await runInDurableObject(env.SESSIONS.get(doId), (_i: SessionDO, state) =>
      state.storage.sql.exec(`SELECT name FROM sqlite_master WHERE type = 'table'`).toArray(),
    );
    expect(tables).toEqual([]);
  });

  it('the OpenAPI document describes the routes, with the request body from the validating schema', async () => {
    const doc = (await (await call('/openapi.json')).json()) as {
      paths: Record<
        string,
        Record<string, { requestBody?: { content: Record<string, { schema: { required?: string[] } }> } }>
      >;
    };
    const body = doc.paths['/v1/responses']!.post!.requestBody!.content['application/json']!.schema;
    expect(body.required).toContain('input');
    expect(doc.paths['/v1/responses/{id}']!.get).toBeDefined();
    expect(doc.paths['/v1/responses/{id}']!.delete).toBeDefined();
  });

  it('another model is a 404 model_not_found', async () => {
    await expectError(await post('/v1/responses', { model: 'gpt-9', input: 'x' }), 404, 'model_not_found');
  });
});

describe('ownership', () => {
  const KEYS = { alice: 'sk-alice-resp-0123', bob: 'sk-bob-resp-4567' };
  const hex = (b: Uint8Array): string => [...b].map((x) => x.toString(16).padStart(2, '0')).join('');

  it('another key cannot retrieve, continue or delete a response: 404, and the owner still can', async () => {
    const entries = await Promise.all(Object.entries(KEYS).map(async ([n, k]) => `${n}:${hex(await sha256(k))}`));
    const e = { ...env, API_KEYS: entries.join(',') };
    const as = (key: string, path: string, init: RequestInit = {}): Promise<Response> => {
      const headers = new Headers(init.headers);
      headers.set('authorization', `Bearer ${key}`);
      if (init.body) headers.set('content-type', 'application/json');
      return Promise.resolve(app.fetch(new Request(BASE + path, { ...init, headers }), e));
    };
    const created = await as(KEYS.alice, '/v1/responses', {
      method: 'POST',
      body: JSON.stringify({ input: 'Hello', max_output_tokens: 2, temperature: 0 }),
    });
    expect(created.status).toBe(200);
    const { id } = (await created.json()) as { id: string };
    await expectError(await as(KEYS.bob, `/v1/responses/${id}`), 404);
    const cont = JSON.stringify({ previous_response_id: id, input: 'x', max_output_tokens: 2 });
    await expectError(await as(KEYS.bob, '/v1/responses', { method: 'POST', body: cont }), 404);
    const storeless = JSON.stringify({ previous_response_id: id, input: 'x', max_output_tokens: 2, store: false });
    await expectError(await as(KEYS.bob, '/v1/responses', { method: 'POST', body: storeless }), 404);
    await expectError(await as(KEYS.bob, `/v1/responses/${id}`, { method: 'DELETE' }), 404);
    expect((await as(KEYS.alice, `/v1/responses/${id}`)).status).toBe(200);
  });
});

describe('the session object', () => {
  it('a continuation that names a turn the session has moved past is refused (409 turn_superseded)', async () => {
    const r = await respond({ input: 'Hello' });
    const stub = env.SESSIONS.get(env.SESSIONS.idFromString(sessionOf(r.id)));
    const req = {
      prompt: { kind: 'chat', messages: [{ role: 'user', content: 'x' }] },
      maxTokens: 1,
      temperature: 0,
      stop: [],
    };
    const stream = await stub.turn(req as never, { mode: 'session', owner: null, afterTurn: 0 });
    const first = JSON.parse((await new Response(stream).text()).split('\n')[0]!) as {
      type: string;
      error?: { kind: string; code: string };
    };
    // kind conflict: the Worker answers 409 (workers/api/errors.ts)
    expect(first).toMatchObject({ type: 'error', error: { kind: 'conflict', code: 'turn_superseded' } });
  });

  it('schema version 2 storage is upgraded in place: the responses table is added, the data kept', async () => {
    const stub = env.SESSIONS.get(env.SESSIONS.newUniqueId());
    await runInDurableObject(stub, (_i: SessionDO, state) => {
      const sql = state.storage.sql;
      sql.exec(`CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)`);
      sql.exec(`CREATE TABLE messages (
        seq INTEGER PRIMARY KEY, turn INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL, extra TEXT)`);
      sql.exec(`CREATE TABLE turns (
        turn INTEGER PRIMARY KEY, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL, finish_reason TEXT NOT NULL, snapshot_id INTEGER, created INTEGER NOT NULL)`);
      sql.exec(`CREATE TABLE snapshots (
        id INTEGER PRIMARY KEY, turn INTEGER NOT NULL, fingerprint TEXT NOT NULL, tokens BLOB NOT NULL,
        n_tokens INTEGER NOT NULL, bytes INTEGER NOT NULL)`);
      sql.exec(`INSERT INTO meta (key, value) VALUES ('schema', '2'), ('created', '1'), ('kind', 'session')`);
      sql.exec(`INSERT INTO messages (turn, role, content) VALUES (0, 'system', 'kept')`);
      const store = new SessionStore(sql, state.storage);
      expect(store.messages()).toEqual([{ turn: 0, role: 'system', content: 'kept' }]);
      expect(store.response('resp_x')).toBeNull();
      const schema = sql.exec<{ value: string }>(`SELECT value FROM meta WHERE key = 'schema'`).one().value;
      expect(schema).toBe('3');
    });
  });
});
