// Inside workerd: a session's model state through the HTTP API. Every expected token id comes from the engine
// run in Node from a fresh state over the whole conversation at once (global-setup.ts), never from the
// session machinery; the tests check that resuming from stored snapshots gives exactly that.

import { abortAllDurableObjects, runInDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import {
  createSession,
  expected,
  expectError,
  post,
  postMessage,
  readSession,
  seedModel,
  sendMessage,
  stageStub,
  type ChatReply,
  type SessionView,
} from './api-helpers.js';
import type { TestStageDO } from './test-objects.js';
import { MAX_TOKENS, SYSTEM, USER_TURNS } from './scenario.js';

beforeAll(seedModel);

const conversation = () => expected().conversation;

/** The reply's ids, text and finish_reason equal turn `k` (0-based) of the from-scratch expectation. */
function expectTurn(reply: ChatReply, k: number): void {
  const want = conversation()[k]!;
  expect(reply.prompt_token_ids, `turn ${k + 1} prompt`).toEqual(want.promptIds);
  expect(reply.choices[0]!.token_ids, `turn ${k + 1} completion`).toEqual(want.tokenIds);
  expect(reply.choices[0]!.message.content).toBe(want.text);
  expect(reply.choices[0]!.finish_reason).toBe(want.finishReason);
  expect(reply.usage.prompt_tokens).toBe(want.promptIds.length);
  expect(reply.usage.completion_tokens).toBe(want.tokenIds.length);
}

/** cached_tokens of turn k: 0 on the first, else the whole conversation before turn k's user message. */
const cachedOf = (k: number): number => (k === 0 ? 0 : conversation()[k]!.previousConversationTokens);

/** The stage the fault and corruption tests pick: layers 2-3, with its mirror of layer 1's K/V (TINY_SLICED_PLAN). */
const MIRROR_STAGE = 5;

const stubOf = (id: string) => env.SESSIONS.get(env.SESSIONS.idFromString(id));

/** The session's snapshot ids, oldest first. */
const snapshotIdsOf = (id: string): Promise<number[]> =>
  runInDurableObject(stubOf(id), (_instance, state) =>
    state.storage.sql
      .exec<{ id: number }>('SELECT id FROM snapshots ORDER BY id')
      .toArray()
      .map((r) => r.id),
  );

/** Run `turns` scenario turns on a new session (greedy, return_token_ids); `between` runs before turns 2.. */
async function converse(turns: number, between?: () => Promise<void>): Promise<{ id: string; replies: ChatReply[] }> {
  const id = await createSession(SYSTEM);
  const replies: ChatReply[] = [];
  for (let k = 0; k < turns; k++) {
    if (k > 0 && between) await between();
    replies.push(await sendMessage(id, USER_TURNS[k]!, { max_tokens: MAX_TOKENS }));
  }
  return { id, replies };
}

describe('three turns of one session', () => {
  let id: string;
  let replies: ChatReply[];
  let view: SessionView;
  beforeAll(async () => {
    ({ id, replies } = await converse(3));
    view = await readSession(id);
  });

  it('give the token ids of one greedy pass over the whole conversation, turn by turn', () => {
    expect(replies).toHaveLength(3);
    replies.forEach(expectTurn);
  });

  it('report cached_tokens = the previous conversation on turns 2 and 3 (0 on turn 1)', () => {
    expect(replies.map((r) => r.usage.prompt_tokens_details.cached_tokens)).toEqual([0, cachedOf(1), cachedOf(2)]);
    expect(cachedOf(1)).toBeGreaterThan(0);
    expect(cachedOf(2)).toBeGreaterThan(cachedOf(1));
  });

  it('store the transcript, the turn log and a snapshot of the whole conversation', () => {
    const want = conversation();
    expect(view.messages).toEqual([
      { turn: 0, role: 'system', content: SYSTEM },
      ...want.flatMap((t, k) => [
        { turn: k + 1, role: 'user', content: USER_TURNS[k] },
        { turn: k + 1, role: 'assistant', content: t.text },
      ]),
    ]);
    expect(view.turns.map((t) => [t.turn, t.promptTokens, t.completionTokens, t.cachedTokens])).toEqual(
      want.map((t, k) => [k + 1, t.promptIds.length, t.tokenIds.length, cachedOf(k)]),
    );
    expect(view.state.snapshots).toBe(3);
    expect(view.state.tokens).toBe(want[2]!.conversationTokens);
    expect(view.state.snapshot_bytes).toBeGreaterThan(0);
  });
});

describe('eviction', () => {
  it('abortAllDurableObjects between turns: same ids and cached_tokens (the state survives in SQLite)', async () => {
    let evictions = 0;
    const { id, replies } = await converse(3, async () => {
      await abortAllDurableObjects();
      evictions++;
    });
    expect(evictions).toBe(2);
    replies.forEach(expectTurn);
    expect(replies.map((r) => r.usage.prompt_tokens_details.cached_tokens)).toEqual([0, cachedOf(1), cachedOf(2)]);
    await abortAllDurableObjects();
    expect((await readSession(id)).turns).toHaveLength(3);
  });
});

describe('Chat Completions with prompt_cache_key', () => {
  it('a client resending the whole history gets the same ids and cached_tokens = the previous conversation', async () => {
    const key = `conversation-${crypto.randomUUID()}`;
    const messages: { role: string; content: string }[] = [{ role: 'system', content: SYSTEM }];
    const cached: number[] = [];
    for (let k = 0; k < 3; k++) {
      messages.push({ role: 'user', content: USER_TURNS[k]! });
      const res = await post('/v1/chat/completions', {
        model: 'hymba',
        messages,
        max_tokens: MAX_TOKENS,
        temperature: 0,
        prompt_cache_key: key,
        return_token_ids: true,
      });
      expect(res.status).toBe(200);
      const reply = (await res.json()) as ChatReply;
      expectTurn(reply, k);
      cached.push(reply.usage.prompt_tokens_details.cached_tokens);
      messages.push({ role: 'assistant', content: reply.choices[0]!.message.content });
    }
    expect(cached).toEqual([0, cachedOf(1), cachedOf(2)]);

    // the same last request without a key is computed from scratch: same ids, nothing cached
    const res = await post('/v1/chat/completions', {
      model: 'hymba',
      messages: messages.slice(0, -1),
      max_tokens: MAX_TOKENS,
      temperature: 0,
      return_token_ids: true,
    });
    const plain = (await res.json()) as ChatReply;
    expectTurn(plain, 2);
    expect(plain.usage.prompt_tokens_details.cached_tokens).toBe(0);
  });
});

describe('snapshots that cannot be used', () => {
  /**
   * Flip bytes in one stage's stored slices of the given snapshots (all when none given), then evict every
   * object so no stage still holds them in memory; returns the chunks changed.
   */
  async function corrupt(id: string, snapshotIds?: number[]): Promise<number> {
    const changed = await runInDurableObject(stageStub(MIRROR_STAGE), (_instance, state) => {
      const sql = state.storage.sql;
      const rows = sql
        .exec<{ id: number; seq: number; data: ArrayBuffer }>(
          'SELECT id, seq, data FROM slice_chunks WHERE session = ?',
          id,
        )
        .toArray()
        .filter((r) => !snapshotIds || snapshotIds.includes(r.id));
      for (const r of rows) {
        const bytes = new Uint8Array(r.data.slice(0));
        for (let i = Math.floor(bytes.length / 2); i < bytes.length; i += 4093) bytes[i]! ^= 0x5a;
        sql.exec(
          'UPDATE slice_chunks SET data = ? WHERE session = ? AND id = ? AND seq = ?',
          bytes.buffer,
          id,
          r.id,
          r.seq,
        );
      }
      return rows.length;
    });
    await abortAllDurableObjects();
    return changed;
  }

  const snapshotIds = snapshotIdsOf;

  it('a corrupted snapshot row: the turn rebuilds from the transcript (cached 0) and gives the same answer', async () => {
    const { id } = await converse(1);
    expect(await corrupt(id)).toBeGreaterThan(0);
    const before = await readSession(id);
    expect(before.state.snapshots).toBe(1);

    const reply = await sendMessage(id, USER_TURNS[1]!, { max_tokens: MAX_TOKENS });
    expectTurn(reply, 1);
    expect(reply.usage.prompt_tokens_details.cached_tokens).toBe(0);

    const after = await readSession(id);
    expect(after.turns.map((t) => t.cachedTokens)).toEqual([0, 0]);
    expect(after.state.snapshots).toBe(1); // the corrupted one is gone, the new one is in
    expect(after.state.tokens).toBe(conversation()[1]!.conversationTokens);
    expect(after.messages).toEqual(before.messages.concat(after.messages.slice(before.messages.length)));

    // and the rebuilt state serves the next turn
    const next = await sendMessage(id, USER_TURNS[2]!, { max_tokens: MAX_TOKENS });
    expectTurn(next, 2);
    expect(next.usage.prompt_tokens_details.cached_tokens).toBe(cachedOf(2));
  });

  it('a corrupted newest snapshot: the turn resumes from the older one that still matches', async () => {
    const { id } = await converse(2);
    const ids = await snapshotIds(id);
    expect(ids).toHaveLength(2);
    expect(await corrupt(id, [ids[1]!])).toBeGreaterThan(0);

    const reply = await sendMessage(id, USER_TURNS[2]!, { max_tokens: MAX_TOKENS });
    expectTurn(reply, 2);
    expect(reply.usage.prompt_tokens_details.cached_tokens).toBe(conversation()[0]!.conversationTokens);
    const after = await readSession(id);
    expect(after.state.snapshots).toBe(2); // turn 1's, and the new turn 3's in place of the corrupted one
    expect((await snapshotIds(id))[0]).toBe(ids[0]);
    expect(after.state.tokens).toBe(conversation()[2]!.conversationTokens);
  });

  it("a snapshot of another model's fingerprint is discarded and the state rebuilt", async () => {
    const { id } = await converse(1);
    await runInDurableObject(stubOf(id), (_instance, state) => {
      state.storage.sql.exec("UPDATE snapshots SET fingerprint = 'another-model'");
    });
    const reply = await sendMessage(id, USER_TURNS[1]!, { max_tokens: MAX_TOKENS });
    expectTurn(reply, 1);
    expect(reply.usage.prompt_tokens_details.cached_tokens).toBe(0);
    expect((await readSession(id)).state.snapshots).toBe(1);
  });
});

describe('fork', () => {
  it('a fork at turn 1 answers turn 2 like the original, and does not see the original turn 2', async () => {
    const { id, replies } = await converse(2);
    const res = await post(`/v1/sessions/${id}/fork`, { turn: 1 });
    expect(res.status).toBe(201);
    const fork = (await res.json()) as { id: string; object: string; forked_from: string; turn: number };
    expect(fork).toMatchObject({ object: 'session', forked_from: id, turn: 1 });
    expect(fork.id).not.toBe(id);

    const forked = await readSession(fork.id);
    expect(forked.messages).toEqual([
      { turn: 0, role: 'system', content: SYSTEM },
      { turn: 1, role: 'user', content: USER_TURNS[0] },
      { turn: 1, role: 'assistant', content: conversation()[0]!.text },
    ]);
    expect(forked.turns).toHaveLength(1);
    expect(forked.state.snapshots).toBe(1);
    expect(forked.state.tokens).toBe(conversation()[0]!.conversationTokens);

    const reply = await sendMessage(fork.id, USER_TURNS[1]!, { max_tokens: MAX_TOKENS });
    expectTurn(reply, 1); // its prompt is [system, turn 1, this message]: nothing of the original's turn 2
    expect(reply.choices[0]!.token_ids).toEqual(replies[1]!.choices[0]!.token_ids);
    expect(reply.usage.prompt_tokens_details.cached_tokens).toBe(cachedOf(1));

    // the original is untouched by the fork's turn
    const original = await readSession(id);
    expect(original.turns).toHaveLength(2);
    expect(original.messages).toHaveLength(5);
  });
});

describe('stages', () => {
  const stages = (): number => inject('tinyStages');
  const stageIds = (id: string): Promise<number[][]> =>
    Promise.all(Array.from({ length: stages() }, (_, k) => stageStub(k).snapshotIds(id)));

  it('every stage stores its slice under the snapshot id the session committed, and only the kept ones', async () => {
    const { id } = await converse(3);
    const ids = await snapshotIdsOf(id);
    expect(ids).toHaveLength(3);
    for (const perStage of await stageIds(id)) expect(perStage).toEqual(ids);
  });

  it('all stages evicted mid-conversation: each restores its slice from SQLite and the conversation continues identically', async () => {
    const { replies } = await converse(3, async () => {
      await abortAllDurableObjects();
      for (let k = 0; k < stages(); k++) expect((await stageStub(k).stats()).hotSnapshots).toBe(0); // memory is gone
    });
    replies.forEach((r, k) => {
      expectTurn(r, k);
      expect(r.usage.prompt_tokens_details.cached_tokens).toBe(cachedOf(k));
    });
  });

  for (const fault of ['run', 'persist'] as const) {
    it(`a stage that throws in ${fault} mid-turn: a clean error, every stage and the session keep the previous snapshot, the retry answers as an undisturbed run`, async () => {
      const { id } = await converse(1);
      const before = await readSession(id);
      const committed = await snapshotIdsOf(id);
      await runInDurableObject(stageStub(MIRROR_STAGE), (instance: TestStageDO) => {
        if (fault === 'run')
          instance.failRunNumber = instance.runCalls + 3; // during the reply's decode
        else instance.failPersist = true;
      });
      const res = await postMessage(id, USER_TURNS[1]!, { max_tokens: MAX_TOKENS });
      const err = await expectError(res, 500, 'internal_error');
      expect(err.message).not.toMatch(/injected/); // internals stay inside
      await runInDurableObject(stageStub(MIRROR_STAGE), (instance: TestStageDO) => {
        instance.failRunNumber = null;
        instance.failPersist = false;
      });

      const after = await readSession(id);
      expect(after.turns).toEqual(before.turns);
      expect(after.messages).toEqual(before.messages);
      expect(await snapshotIdsOf(id)).toEqual(committed);
      for (const perStage of await stageIds(id)) expect(perStage).toEqual(expect.arrayContaining(committed));

      const retry = await sendMessage(id, USER_TURNS[1]!, { max_tokens: MAX_TOKENS });
      expectTurn(retry, 1);
      expect(retry.usage.prompt_tokens_details.cached_tokens).toBe(cachedOf(1));
      const kept = await snapshotIdsOf(id);
      for (const perStage of await stageIds(id)) expect(perStage).toEqual(kept); // a stray slice is gone too
    });
  }

  it('decode steps of concurrent sessions are batched at the stages and each equals its own run', async () => {
    // four sessions decoding 32 tokens each: long enough that their decode phases overlap however their
    // prefills are staggered by a loaded machine
    const { detour } = expected();
    const want = Array.from({ length: 4 }, () => ({
      promptIds: detour.promptIds,
      tokenIds: detour.tokenIds.slice(0, 32),
    }));
    const before = await Promise.all(Array.from({ length: stages() }, (_, k) => stageStub(k).stats()));
    const replies = await Promise.all(
      want.map(async (w) => {
        const res = await post('/v1/completions', {
          model: 'hymba',
          prompt: w.promptIds,
          max_tokens: w.tokenIds.length,
          temperature: 0,
          return_token_ids: true,
        });
        expect(res.status).toBe(200);
        return (await res.json()) as { choices: { token_ids: number[] }[] };
      }),
    );
    replies.forEach((r, i) => expect(r.choices[0]!.token_ids).toEqual(want[i]!.tokenIds));
    const after = await Promise.all(Array.from({ length: stages() }, (_, k) => stageStub(k).stats()));
    const batched = after.map((a, k) => ({
      runs: a.batch.runs - before[k]!.batch.runs,
      steps: a.batch.steps - before[k]!.batch.steps,
    }));
    console.log(`[workerd] decode steps per stage (runs, steps): ${JSON.stringify(batched)}`);
    expect(after.some((a) => a.batch.largest > 1)).toBe(true);
    for (const b of batched) expect(b.steps).toBeGreaterThan(b.runs); // fewer runs than steps: batches happened
  });
});
