// Inside workerd: the OpenAI wire format, parsed by the `openai` npm SDK pointed at the Worker's fetch handler
// (real routes, SessionDOs and the tiny model from R2). Expected replies come from the engine in Node
// (global-setup.ts), so every field is checked against numbers computed without the server.

import OpenAI from 'openai';
import type {
  ChatCompletionChunk,
  ChatCompletionCreateParamsNonStreaming,
  ChatCompletionMessageParam,
} from 'openai/resources/chat/completions';
import type { CompletionCreateParamsNonStreaming } from 'openai/resources/completions';
import { beforeAll, describe, expect, it } from 'vitest';
import { createSession, expected, openaiClient, postMessage, seedModel, sseFrames } from './api-helpers.js';
import { MAX_TOKENS, SYSTEM, USER_TURNS } from './scenario.js';

beforeAll(seedModel);

/** vLLM's return_token_ids, which the SDK passes through (unknown fields are sent as given). */
interface TokenIds {
  prompt_token_ids?: number[];
  choices: { token_ids?: number[] }[];
}

const firstTurn = (): ChatCompletionMessageParam[] => [
  { role: 'system', content: SYSTEM },
  { role: 'user', content: USER_TURNS[0] },
];

describe('Chat Completions through the openai SDK', () => {
  it('non-streaming: a chat.completion with the greedy reply, finish_reason and usage', async () => {
    const want = expected().conversation[0]!;
    const res = await openaiClient().chat.completions.create({
      model: 'hymba',
      messages: firstTurn(),
      max_tokens: MAX_TOKENS,
      temperature: 0,
    });
    expect(res.object).toBe('chat.completion');
    expect(res.id).toMatch(/^chatcmpl-/);
    expect(res.model).toBe('hymba');
    expect(res.choices).toHaveLength(1);
    const [choice] = res.choices;
    expect(choice!.index).toBe(0);
    expect(choice!.message.role).toBe('assistant');
    expect(choice!.message.content).toBe(want.text);
    expect(choice!.finish_reason).toBe(want.finishReason);
    expect(res.usage).toEqual({
      prompt_tokens: want.promptIds.length,
      completion_tokens: want.tokenIds.length,
      total_tokens: want.promptIds.length + want.tokenIds.length,
      prompt_tokens_details: { cached_tokens: 0 },
    });
  });

  it('non-streaming with return_token_ids: the prompt and completion ids of one from-scratch pass', async () => {
    const want = expected().conversation[0]!;
    const params = {
      model: 'hymba',
      messages: firstTurn(),
      max_tokens: MAX_TOKENS,
      temperature: 0,
      return_token_ids: true,
    } as ChatCompletionCreateParamsNonStreaming;
    const res = (await openaiClient().chat.completions.create(params)) as unknown as TokenIds;
    expect(res.prompt_token_ids).toEqual(want.promptIds);
    expect(res.choices[0]!.token_ids).toEqual(want.tokenIds);
  });

  it('streaming with include_usage: role first, one id, finish_reason last, then the usage chunk', async () => {
    const want = expected().conversation[0]!;
    const stream = await openaiClient().chat.completions.create({
      model: 'hymba',
      messages: firstTurn(),
      max_tokens: MAX_TOKENS,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks: ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);

    expect(chunks.length).toBeGreaterThanOrEqual(3); // role/content, finish_reason, usage
    const ids = new Set(chunks.map((c) => c.id));
    expect(ids.size).toBe(1);
    expect([...ids][0]).toMatch(/^chatcmpl-/);
    expect(new Set(chunks.map((c) => c.created)).size).toBe(1);
    for (const c of chunks) expect(c.object).toBe('chat.completion.chunk');

    const withChoices = chunks.filter((c) => c.choices.length > 0);
    const deltas = withChoices.map((c) => c.choices[0]!);
    expect(deltas[0]!.delta.role).toBe('assistant');
    for (const d of deltas.slice(1)) expect(d.delta.role).toBeUndefined();
    for (const d of deltas.slice(0, -1)) expect(d.finish_reason).toBeNull();
    expect(deltas.at(-1)!.finish_reason).toBe(want.finishReason);
    expect(deltas.map((d) => d.delta.content ?? '').join('')).toBe(want.text);

    // include_usage: usage null on every chunk but the last, which has no choices and the totals
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toEqual({
      prompt_tokens: want.promptIds.length,
      completion_tokens: want.tokenIds.length,
      total_tokens: want.promptIds.length + want.tokenIds.length,
      prompt_tokens_details: { cached_tokens: 0 },
    });
    for (const c of chunks.slice(0, -1)) expect(c.usage).toBeNull();
  });

  it('streaming with return_token_ids: the chunks carry the same ids as one from-scratch pass', async () => {
    const want = expected().conversation[0]!;
    const stream = await openaiClient().chat.completions.create({
      model: 'hymba',
      messages: firstTurn(),
      max_tokens: MAX_TOKENS,
      temperature: 0,
      stream: true,
      return_token_ids: true,
    } as unknown as OpenAI.ChatCompletionCreateParamsStreaming);
    const chunks: (ChatCompletionChunk & TokenIds)[] = [];
    for await (const chunk of stream) chunks.push(chunk as ChatCompletionChunk & TokenIds);
    expect(chunks[0]!.prompt_token_ids).toEqual(want.promptIds);
    expect(chunks.slice(1).every((c) => c.prompt_token_ids === undefined)).toBe(true);
    expect(chunks.flatMap((c) => c.choices[0]?.token_ids ?? [])).toEqual(want.tokenIds);
  });

  it('an unknown model is a 404 the SDK raises as NotFoundError with code model_not_found', async () => {
    const request = openaiClient().chat.completions.create({
      model: 'gpt-nope',
      messages: firstTurn(),
      max_tokens: 1,
    });
    await expect(request).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    await expect(request).rejects.toMatchObject({ status: 404, code: 'model_not_found', param: 'model' });
  });
});

describe('Completions through the openai SDK', () => {
  it('a token-id prompt with return_token_ids: text, ids and usage of one from-scratch pass', async () => {
    const want = expected().completion;
    const params = {
      model: 'hymba',
      prompt: want.promptIds,
      max_tokens: MAX_TOKENS,
      temperature: 0,
      return_token_ids: true,
    } as CompletionCreateParamsNonStreaming;
    const res = await openaiClient().completions.create(params);
    expect(res.object).toBe('text_completion');
    expect(res.id).toMatch(/^cmpl-/);
    expect(res.choices).toHaveLength(1);
    const choice = res.choices[0]! as (typeof res.choices)[number] & {
      prompt_token_ids?: number[];
      token_ids?: number[];
    };
    expect(choice.text).toBe(want.text);
    expect(choice.finish_reason).toBe(want.finishReason);
    expect(choice.prompt_token_ids).toEqual(want.promptIds);
    expect(choice.token_ids).toEqual(want.tokenIds);
    expect(res.usage).toEqual({
      prompt_tokens: want.promptIds.length,
      completion_tokens: want.tokenIds.length,
      total_tokens: want.promptIds.length + want.tokenIds.length,
      prompt_tokens_details: { cached_tokens: 0 },
    });
  });

  it('streaming a token-id prompt: the chunks join to the same text, the last one has finish_reason', async () => {
    const want = expected().completion;
    const stream = await openaiClient().completions.create({
      model: 'hymba',
      prompt: want.promptIds,
      max_tokens: MAX_TOKENS,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks: OpenAI.Completion[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    const choices = chunks.flatMap((c) => c.choices);
    expect(choices.map((c) => c.text).join('')).toBe(want.text);
    for (const c of choices.slice(0, -1)) expect(c.finish_reason).toBeNull();
    expect(choices.at(-1)!.finish_reason).toBe(want.finishReason);
    expect(chunks.at(-1)!.usage?.completion_tokens).toBe(want.tokenIds.length);
  });
});

describe('session API streaming', () => {
  it('streams a session turn as chat.completion chunks, with the usage chunk when asked', async () => {
    const id = await createSession(SYSTEM);
    const res = await postMessage(id, USER_TURNS[0]!, {
      max_tokens: MAX_TOKENS,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(res.status).toBe(200);
    const frames = sseFrames(await res.text());
    expect(frames[frames.length - 1]).toBe('[DONE]');
    const chunks = frames.slice(0, -1) as ChatCompletionChunk[];
    const text = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
    expect(text).toBe(expected().conversation[0]!.text);
    const usage = chunks[chunks.length - 1]!;
    expect(usage.choices).toEqual([]);
    expect(usage.usage).toMatchObject({
      prompt_tokens: expected().conversation[0]!.promptIds.length,
      completion_tokens: expected().conversation[0]!.tokenIds.length,
      prompt_tokens_details: { cached_tokens: 0 },
    });
  });
});
