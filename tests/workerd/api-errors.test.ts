// Inside workerd: what the API answers when a turn cannot run or does not finish, and that none of it
// changes what a session has stored (transcript, turn log, snapshots).

import { runInDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  call,
  createSession,
  expectError,
  expected,
  post,
  postMessage,
  readSession,
  seedModel,
  sendMessage,
  sleep,
  SseReader,
  sseFrames,
  type ChatReply,
  type SessionView,
} from './api-helpers.js';
import type { SessionDO } from '../../durable-objects/session/session-do.js';
import { DETOUR, DETOUR_MAX_TOKENS, MAX_TOKENS, SYSTEM, USER_TURNS } from './scenario.js';

beforeAll(seedModel);

interface Chunk {
  id: string;
  object: string;
  choices: { delta: { role?: string; content?: string }; finish_reason: string | null; token_ids?: number[] }[];
}

/** A session with the first scenario turn done, and how it looks. */
async function sessionAfterTurn1(): Promise<{ id: string; view: SessionView }> {
  const id = await createSession(SYSTEM);
  await sendMessage(id, USER_TURNS[0]!, { max_tokens: MAX_TOKENS });
  const view = await readSession(id);
  expect(view.turns).toHaveLength(1);
  expect(view.state.snapshots).toBe(1);
  return { id, view };
}

/** What must not change: transcript, turn log and snapshots. */
async function expectUnchanged(id: string, before: SessionView): Promise<void> {
  const now = await readSession(id);
  expect(now.messages).toEqual(before.messages);
  expect(now.turns).toEqual(before.turns);
  expect(now.state).toEqual(before.state);
}

/** Retry a request while it answers 409 (what clients do); returns the response and the retries. */
async function retryWhileBusy(send: () => Promise<Response>): Promise<{ res: Response; retries: number }> {
  for (let retries = 0; ; retries++) {
    const res = await send();
    if (res.status !== 409 || retries >= 200) return { res, retries };
    await res.body?.cancel();
    await sleep(25);
  }
}

describe('a turn while another runs on the same session', () => {
  it('gets 409 session_busy; the running turn completes; the rejected one stores nothing', async () => {
    const { id, view: before } = await sessionAfterTurn1();
    const detour = expected().detour;

    // the running turn generates DETOUR_MAX_TOKENS tokens (the setup checked greedy does not stop sooner)
    const t0 = Date.now();
    const first = await postMessage(id, DETOUR, { stream: true, max_tokens: DETOUR_MAX_TOKENS });
    expect(first.status).toBe(200);
    const reader = new SseReader(first.body!);
    const firstChunk = (await reader.next()) as Chunk;
    expect(firstChunk.choices[0]!.delta.role).toBe('assistant');

    const second = await postMessage(id, USER_TURNS[1]!, { max_tokens: MAX_TOKENS });
    expect(second.headers.get('retry-after')).toBe('1'); // clients retry 409s
    const error = await expectError(second, 409, 'session_busy');
    expect(error.param).toBeNull();
    expect(error.type).toBe('conflict_error');

    const rest = (await reader.rest()) as (Chunk | string)[];
    console.log(`[api] a ${DETOUR_MAX_TOKENS}-token turn streamed in ${Date.now() - t0} ms`);
    expect(rest.at(-1)).toBe('[DONE]');
    const chunks = [firstChunk, ...(rest.slice(0, -1) as Chunk[])];
    expect(chunks.at(-1)!.choices[0]!.finish_reason).toBe('length');
    // the rejected request did not disturb it: the same ids as one from-scratch pass
    expect(chunks.flatMap((c) => c.choices[0]?.token_ids ?? [])).toEqual(detour.tokenIds);

    const after = await readSession(id);
    expect(after.messages).toEqual([
      ...before.messages,
      { turn: 2, role: 'user', content: DETOUR },
      { turn: 2, role: 'assistant', content: detour.text },
    ]);
    expect(after.turns.map((t) => t.turn)).toEqual([1, 2]);
    expect(after.turns[1]!.completionTokens).toBe(DETOUR_MAX_TOKENS);
    expect(after.state.snapshots).toBe(2);

    // and the session takes turns again
    const next = await sendMessage(id, USER_TURNS[1]!, { max_tokens: MAX_TOKENS });
    expect(next.usage.prompt_tokens_details.cached_tokens).toBe(after.state.tokens);
  });
});

describe('session routes racing a turn or a delete', () => {
  it('DELETE during a turn: 409 session_busy with Retry-After, nothing deleted; GET and fork read the last commit', async () => {
    const { id, view: before } = await sessionAfterTurn1();
    const running = await postMessage(id, DETOUR, { stream: true, max_tokens: DETOUR_MAX_TOKENS });
    expect(running.status).toBe(200);
    const reader = new SseReader(running.body!);
    await reader.next(); // the turn holds the session now

    const del = await call(`/v1/sessions/${id}`, { method: 'DELETE' });
    expect(del.headers.get('retry-after')).toBe('1');
    const error = await expectError(del, 409, 'session_busy');
    expect(error.type).toBe('conflict_error');
    // reads are served from the last committed turn while the next one runs
    const read = await call(`/v1/sessions/${id}`);
    expect(read.status).toBe(200);
    expect(((await read.json()) as SessionView).turns).toEqual(before.turns);
    const fork = await post(`/v1/sessions/${id}/fork`, { turn: 1 });
    expect(fork.status).toBe(201);

    const rest = (await reader.rest()) as (Chunk | string)[];
    expect(rest.at(-1)).toBe('[DONE]');
    expect((await readSession(id)).turns.map((t) => t.turn)).toEqual([1, 2]); // the DELETE took nothing
    // once the turn has committed, the delete goes through, and every route then answers 404
    expect((await call(`/v1/sessions/${id}`, { method: 'DELETE' })).status).toBe(200);
    await expectError(await call(`/v1/sessions/${id}`), 404, 'not_found');
    await expectError(await call(`/v1/sessions/${id}`, { method: 'DELETE' }), 404, 'not_found');
    await expectError(await post(`/v1/sessions/${id}/fork`, { turn: 1 }), 404, 'not_found');
    await expectError(await postMessage(id, 'again', { max_tokens: 2 }), 404, 'not_found');
  });
});

describe('a client that disconnects mid-stream', () => {
  it('commits nothing; the next turn answers as if the cancelled one never happened', async () => {
    const { id, view: before } = await sessionAfterTurn1();
    // The cancel does not reach the object (cloudflare/workerd#7298) and the Worker of a gone client is torn
    // down, so the object aborts a turn nobody reads after turnIdleAbortMs (10 s by default): shortened here.
    const idleAbortMs = 300;
    await runInDurableObject(env.SESSIONS.get(env.SESSIONS.idFromString(id)), (instance: SessionDO) => {
      instance.turnIdleAbortMs = idleAbortMs;
    });
    const t0 = Date.now();
    const res = await postMessage(id, DETOUR, { stream: true, max_tokens: DETOUR_MAX_TOKENS });
    expect(res.status).toBe(200);
    const reader = new SseReader(res.body!);
    const first = (await reader.next()) as Chunk;
    expect(first.choices[0]!.delta.role).toBe('assistant');
    await reader.cancel();
    await expectUnchanged(id, before);

    // the object notices the disconnect at its next token; until then it is busy (409, retried)
    const { res: nextRes, retries } = await retryWhileBusy(() =>
      postMessage(id, USER_TURNS[1]!, { max_tokens: MAX_TOKENS }),
    );
    const waited = Date.now() - t0;
    console.log(`[api] after a disconnect the next turn ran after ${retries} retries, ${waited} ms`);
    expect(nextRes.status).toBe(200);
    expect(waited).toBeLessThan(idleAbortMs + 5_000);
    const next = (await nextRes.json()) as ChatReply;
    const want = expected().conversation[1]!;
    expect(next.prompt_token_ids).toEqual(want.promptIds);
    expect(next.choices[0]!.token_ids).toEqual(want.tokenIds);
    expect(next.usage.prompt_tokens_details.cached_tokens).toBe(want.previousConversationTokens);

    const after = await readSession(id);
    expect(after.messages).toEqual([
      ...before.messages,
      { turn: 2, role: 'user', content: USER_TURNS[1] },
      { turn: 2, role: 'assistant', content: want.text },
    ]);
    expect(after.turns.map((t) => t.turn)).toEqual([1, 2]);
    expect(after.state.snapshots).toBe(2);
  });
});

describe('requests that are refused', () => {
  let id: string;
  let before: SessionView;
  beforeAll(async () => {
    ({ id, view: before } = await sessionAfterTurn1());
  });

  it('malformed JSON: 400 invalid_json, nothing stored', async () => {
    const res = await post(`/v1/sessions/${id}/messages`, '{"content": "hi", ');
    await expectError(res, 400, 'invalid_json');
    const chat = await post('/v1/chat/completions', '{"messages": [');
    await expectError(chat, 400, 'invalid_json');
    await expectUnchanged(id, before);
  });

  it.each([
    ['content', { content: 42 }, 'content'],
    ['max_tokens', { content: 'hi', max_tokens: 'eight' }, 'max_tokens'],
    ['temperature', { content: 'hi', temperature: 'warm' }, 'temperature'],
    ['stream', { content: 'hi', stream: 'yes' }, 'stream'],
    ['a content part', { content: [{ type: 'text', text: 7 }] }, 'content[0].text'],
  ])('wrong type of %s in a session message: 400 naming the param, nothing stored', async (_what, body, param) => {
    const res = await post(`/v1/sessions/${id}/messages`, body);
    const error = await expectError(res, 400);
    expect(error.type).toBe('invalid_request_error');
    expect(error.param).toBe(param);
    await expectUnchanged(id, before);
  });

  it('wrong field types in Chat Completions, Completions and fork: 400 naming the param', async () => {
    const cases: [string, unknown, string][] = [
      ['/v1/chat/completions', { messages: [{ role: 'user', content: 5 }] }, 'messages[0].content'],
      ['/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], max_tokens: '4' }, 'max_tokens'],
      ['/v1/completions', { prompt: 'hi', temperature: 'hot' }, 'temperature'],
      [`/v1/sessions/${id}/fork`, { turn: 'one' }, 'turn'],
    ];
    for (const [path, body, param] of cases) {
      const error = await expectError(await post(path, body), 400);
      expect({ path, param: error.param }).toEqual({ path, param });
    }
    await expectUnchanged(id, before);
  });

  it('an unknown session: 404 for every session route; it is not created by the attempt', async () => {
    const unknown = env.SESSIONS.newUniqueId().toString();
    await expectError(await postMessage(unknown, 'hi'), 404, 'not_found');
    await expectError(await call(`/v1/sessions/${unknown}`), 404, 'not_found');
    await expectError(await post(`/v1/sessions/${unknown}/fork`, { turn: 0 }), 404, 'not_found');
    await expectError(await call(`/v1/sessions/${unknown}`, { method: 'DELETE' }), 404, 'not_found');
    await expectError(await postMessage('not-a-session-id', 'hi'), 404, 'not_found');
    await expectError(await call(`/v1/sessions/${unknown}`), 404, 'not_found');
  });

  it('a fork at a turn the session does not have: 404 naming the turn, nothing stored', async () => {
    const error = await expectError(await post(`/v1/sessions/${id}/fork`, { turn: 2 }), 404, 'not_found');
    expect(error.param).toBe('turn');
    await expectUnchanged(id, before);
  });

  it('a prompt_cache_key entry is not reachable through the session API', async () => {
    const key = `not-a-session-${crypto.randomUUID()}`;
    const res = await post('/v1/chat/completions', {
      messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 1,
      temperature: 0,
      prompt_cache_key: key,
    });
    expect(res.status).toBe(200);
    const reply = ((await res.json()) as { choices: { message: { content: string } }[] }).choices[0]!.message.content;
    const entry = env.SESSIONS.idFromName(`cache::${key}`).toString(); // owner null: no API keys here
    await expectError(await call(`/v1/sessions/${entry}`), 404, 'not_found');
    await expectError(await postMessage(entry, 'hi'), 404, 'not_found');
    await expectError(await post(`/v1/sessions/${entry}/fork`, { turn: 0 }), 404, 'not_found');
    await expectError(await call(`/v1/sessions/${entry}`, { method: 'DELETE' }), 404, 'not_found');
    // the entry itself is intact: the same prompt again resumes from it
    const again = (await (
      await post('/v1/chat/completions', {
        messages: [
          { role: 'user', content: 'hi' },
          { role: 'assistant', content: reply },
          { role: 'user', content: 'y' },
        ],
        max_tokens: 1,
        temperature: 0,
        prompt_cache_key: key,
      })
    ).json()) as { usage: { prompt_tokens_details: { cached_tokens: number } } };
    expect(again.usage.prompt_tokens_details.cached_tokens).toBeGreaterThan(0);
  });

  it('a session message longer than the context: 422 context_length_exceeded, nothing stored', async () => {
    const words = expected().contextTokens + 16; // " hello" is one token
    const res = await postMessage(id, 'hello '.repeat(words));
    await expectError(res, 422, 'context_length_exceeded');
    await expectUnchanged(id, before);
  });

  it('a token-id prompt longer than the context: 422 context_length_exceeded', async () => {
    const { contextTokens, completion } = expected();
    const prompt = Array.from(
      { length: contextTokens },
      (_, i) => completion.promptIds[i % completion.promptIds.length],
    );
    const res = await post('/v1/completions', { model: 'hymba', prompt, max_tokens: 1 });
    const error = await expectError(res, 422, 'context_length_exceeded');
    expect(error.type).toBe('invalid_request_error');
    expect(error.param).toBe('prompt');
    expect(error.message).toMatch(/^This model's maximum context length is \d+ tokens/);
    expect(error.message).toContain(String(contextTokens));
  });

  it('the refused requests left the session working: its next turn resumes from the stored state', async () => {
    const reply = await sendMessage(id, USER_TURNS[1]!, { max_tokens: MAX_TOKENS });
    const want = expected().conversation[1]!;
    expect(reply.choices[0]!.token_ids).toEqual(want.tokenIds);
    expect(reply.usage.prompt_tokens_details.cached_tokens).toBe(want.previousConversationTokens);
  });
});

describe('SSE framing', () => {
  it('a streamed session reply ends with [DONE] and joins to the non-streamed reply', async () => {
    const id = await createSession(SYSTEM);
    const res = await postMessage(id, USER_TURNS[0]!, { stream: true, max_tokens: MAX_TOKENS });
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const frames = sseFrames(await res.text());
    expect(frames.at(-1)).toBe('[DONE]');
    const chunks = frames.slice(0, -1) as Chunk[];
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe(expected().conversation[0]!.text);
  });
});
