// Inside workerd: session handoff. A session's state leaves the edge as one whole-model snapshot (merged
// from the ten stages' slices) and comes back (split again, committed with the turns run elsewhere). The
// browser that will continue conversations locally is not here, so the round trip moves one session's
// state into another: if the uploaded state is used and exact, the next turn equals the original's.

import { runInDurableObject } from 'cloudflare:test';
import { env, exports } from 'cloudflare:workers';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { loadConfig } from '../../engine/model/config.js';
import { MANIFEST_FILE, parseManifest, stageSpecOf } from '../../engine/convert/manifest.js';
import { deserializeState, serializeState } from '../../engine/state/codec.js';
import { checkWholeState, splitState } from '../../engine/state/merge.js';
import { sha256 } from '../../workers/auth.js';
import app from '../../workers/index.js';
import {
  BASE,
  call,
  createSession,
  expected,
  expectError,
  postMessage,
  readSession,
  seedModel,
  sendMessage,
  SseReader,
  stageStub,
  type ChatReply,
  type SessionView,
} from './api-helpers.js';
import { DETOUR, DETOUR_MAX_TOKENS, MAX_TOKENS, SYSTEM, USER_TURNS } from './scenario.js';

beforeAll(seedModel);

const manifest = () => parseManifest(new TextDecoder().decode(inject('tinyModelFiles')[MANIFEST_FILE]!));
const dims = () => loadConfig(manifest().config).dims;
const FP = () => inject('tinyFingerprint');
const conversation = () => expected().conversation;

interface SnapshotMeta {
  id: string;
  object: string;
  fingerprint: string;
  turn: number;
  position: number;
  tokens: number[];
  messages: { role: string; content: string; turn: number }[];
  bytes: number;
}

interface UploadMeta {
  base_turn: number;
  messages: { role: string; content: string }[];
  tokens: number[];
}

type Fetcher = (req: Request) => Promise<Response>;
const viaWorker: Fetcher = (req) => exports.default.fetch(req);

function uploadRequest(id: string, meta: UploadMeta | string | null, state: Uint8Array | string | null): Request {
  const form = new FormData();
  if (meta !== null) form.append('meta', typeof meta === 'string' ? meta : JSON.stringify(meta));
  if (typeof state === 'string') form.append('state', state);
  else if (state !== null) form.append('state', new Blob([state.slice()]), 'state.bin');
  return new Request(`${BASE}/v1/sessions/${id}/snapshot`, { method: 'POST', body: form });
}

const upload = (id: string, meta: UploadMeta | string | null, state: Uint8Array | string | null, f = viaWorker) =>
  f(uploadRequest(id, meta, state));

async function download(id: string): Promise<{ bytes: Uint8Array; headers: Headers }> {
  const res = await call(`/v1/sessions/${id}/snapshot`);
  if (res.status !== 200) throw new Error(`download ${id}: HTTP ${res.status} ${await res.text()}`);
  return { bytes: new Uint8Array(await res.arrayBuffer()), headers: res.headers };
}

async function readMeta(id: string): Promise<SnapshotMeta> {
  const res = await call(`/v1/sessions/${id}/snapshot/meta`);
  expect(res.status).toBe(200);
  return (await res.json()) as SnapshotMeta;
}

/** The session's newest snapshot id (its SessionDO's index). */
const newestSnapshotId = (id: string): Promise<number> =>
  runInDurableObject(env.SESSIONS.get(env.SESSIONS.idFromString(id)), (_instance, state) => {
    const row = state.storage.sql.exec<{ id: number }>('SELECT MAX(id) AS id FROM snapshots').toArray()[0];
    return row!.id;
  });

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/** The user and assistant messages of stored turns, as an upload carries them. */
const newMessages = (m: SnapshotMeta, after: number) =>
  m.messages.filter((x) => x.turn > after).map(({ role, content }) => ({ role, content }));

describe('a session state leaves and comes back', () => {
  let a: string;
  let first: ChatReply;
  let bytes: Uint8Array;
  let headers: Headers;
  let meta: SnapshotMeta;
  beforeAll(async () => {
    a = await createSession(SYSTEM);
    first = await sendMessage(a, USER_TURNS[0]!, { max_tokens: MAX_TOKENS });
    ({ bytes, headers } = await download(a));
    meta = await readMeta(a);
  });

  it('download: one whole-model state of the served model, covering the rendered conversation', () => {
    expect(first.choices[0]!.message.content).toBe(conversation()[0]!.text);
    const d = dims();
    expect(headers.get('content-type')).toBe('application/octet-stream');
    expect(headers.get('x-hymba-fingerprint')).toBe(FP());
    expect(Number(headers.get('x-hymba-turn'))).toBe(1);
    expect(Number(headers.get('x-hymba-position'))).toBe(meta.position);
    const state = deserializeState(d, bytes, FP());
    expect(() => checkWholeState(d, state)).not.toThrow();
    expect(state.position).toBe(d.M + meta.tokens.length);
    // the tokens are the conversation as the template renders it without a generation prompt: the next prompt's prefix
    const want = conversation()[1]!;
    expect(meta.tokens).toEqual(want.promptIds.slice(0, want.previousConversationTokens));
    expect(meta.tokens).toHaveLength(conversation()[0]!.conversationTokens);
    expect(meta).toMatchObject({ id: a, object: 'session.snapshot', fingerprint: FP(), turn: 1, bytes: bytes.length });
    expect(meta.messages).toEqual([
      { turn: 0, role: 'system', content: SYSTEM },
      { turn: 1, role: 'user', content: USER_TURNS[0] },
      { turn: 1, role: 'assistant', content: conversation()[0]!.text },
    ]);
  });

  it('download: split per stage again, it is byte for byte what the stages hold', async () => {
    const d = dims();
    const specs = manifest().stages.map(stageSpecOf);
    expect(specs).toHaveLength(inject('tinyStages'));
    const parts = splitState(d, specs, deserializeState(d, bytes, FP()));
    const sid = await newestSnapshotId(a);
    for (let k = 0; k < specs.length; k++) {
      const held = await stageStub(k).exportSlice(a, sid);
      expect(held, `stage ${k}`).not.toBeNull();
      expect(sameBytes(serializeState(d, parts[k]!, FP()), held!), `stage ${k}`).toBe(true);
    }
  });

  it('send back into a fresh session: the next turn equals the original exactly, all uploaded tokens cached', async () => {
    const c = await createSession(SYSTEM);
    const res = await upload(c, { base_turn: 0, messages: newMessages(meta, 0), tokens: meta.tokens }, bytes);
    expect(res.status).toBe(201);
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ id: c, object: 'session.snapshot', turn: 1, tokens: meta.tokens.length });
    expect(body.snapshot_bytes).toBeGreaterThan(0);
    const view = await readSession(c);
    expect(view.messages).toEqual(meta.messages);
    expect(view.turns).toMatchObject([
      { turn: 1, promptTokens: 0, completionTokens: 0, cachedTokens: 0, finishReason: 'handoff' },
    ]);
    expect(view.state).toEqual({ tokens: meta.tokens.length, snapshots: 1, snapshot_bytes: body.snapshot_bytes });
    // the uploaded state is the session's, as the meta describes it
    expect((await readMeta(c)).tokens).toEqual(meta.tokens);
    expect(sameBytes((await download(c)).bytes, bytes)).toBe(true);

    const fromUpload = await sendMessage(c, USER_TURNS[1]!, { max_tokens: MAX_TOKENS });
    const original = await sendMessage(a, USER_TURNS[1]!, { max_tokens: MAX_TOKENS });
    expect(fromUpload.choices[0]!.token_ids).toEqual(original.choices[0]!.token_ids);
    expect(fromUpload.choices[0]!.message.content).toBe(original.choices[0]!.message.content);
    expect(fromUpload.prompt_token_ids).toEqual(conversation()[1]!.promptIds);
    expect(fromUpload.choices[0]!.token_ids).toEqual(conversation()[1]!.tokenIds);
    expect(fromUpload.usage.prompt_tokens_details.cached_tokens).toBe(meta.tokens.length);
    expect(original.usage.prompt_tokens_details.cached_tokens).toBe(meta.tokens.length);
    // and both sessions now hold the same state after turn 2
    expect(sameBytes((await download(c)).bytes, (await download(a)).bytes)).toBe(true);
  });

  it('several turns at once: each becomes a turn, the state is the last one', async () => {
    // A after turn 2 holds [user1, reply1, user2, reply2]: hand both turns to a fresh session
    const m2 = await readMeta(a);
    expect(m2.turn).toBe(2);
    const d = await createSession(SYSTEM);
    const res = await upload(
      d,
      { base_turn: 0, messages: newMessages(m2, 0), tokens: m2.tokens },
      (await download(a)).bytes,
    );
    expect(res.status).toBe(201);
    expect(((await res.json()) as { turn: number }).turn).toBe(2);
    const view = await readSession(d);
    expect(view.turns.map((t) => [t.turn, t.cachedTokens])).toEqual([
      [1, 0],
      [2, 0],
    ]);
    expect(view.messages).toEqual(m2.messages);
    const third = await sendMessage(d, USER_TURNS[2]!, { max_tokens: MAX_TOKENS });
    expect(third.choices[0]!.token_ids).toEqual(conversation()[2]!.tokenIds);
    expect(third.usage.prompt_tokens_details.cached_tokens).toBe(m2.tokens.length);
  });

  describe('refused uploads leave the session exactly as it was', () => {
    let r: string;
    let good: UploadMeta;
    beforeAll(async () => {
      r = await createSession(SYSTEM);
      good = { base_turn: 0, messages: newMessages(meta, 0), tokens: meta.tokens };
    });

    /** Sends the upload, checks the error, and that the session and its stages are unchanged. */
    async function refused(
      send: () => Promise<Response>,
      status: number,
      code: string | null,
      message?: RegExp,
    ): Promise<void> {
      const before: SessionView = await readSession(r);
      const err = await expectError(await send(), status, code);
      if (message) expect(err.message).toMatch(message);
      expect(await readSession(r)).toEqual(before);
    }

    it('a flipped byte: 400 snapshot_invalid (checksum)', async () => {
      const flipped = bytes.slice();
      flipped[Math.floor(flipped.length / 2)]! ^= 0x10;
      await refused(() => upload(r, good, flipped), 400, 'snapshot_invalid', /checksum/);
      await refused(() => upload(r, good, bytes.slice(0, 100)), 400, 'snapshot_invalid');
      await refused(() => upload(r, good, new Uint8Array(10)), 400, 'snapshot_invalid', /too short/);
    });

    it("another model's state: 400 snapshot_fingerprint_mismatch naming both models", async () => {
      const d = dims();
      const other = serializeState(d, deserializeState(d, bytes, FP()), 'another-model-0123456789abcdef');
      await refused(
        () => upload(r, good, other),
        400,
        'snapshot_fingerprint_mismatch',
        new RegExp(`another-model-0123456789abcdef.*${FP()}`),
      );
    });

    it('tokens that are not the rendered messages, or a state at another position: 400', async () => {
      const changed = good.messages.map((m) => (m.role === 'assistant' ? { ...m, content: m.content + '!' } : m));
      await refused(() => upload(r, { ...good, messages: changed }, bytes), 400, 'snapshot_tokens_mismatch');
      const ids = [...good.tokens];
      ids[ids.length - 1] = (ids[ids.length - 1]! + 1) % dims().V;
      await refused(() => upload(r, { ...good, tokens: ids }, bytes), 400, 'snapshot_tokens_mismatch', /index/);
      await refused(
        () => upload(r, { ...good, tokens: good.tokens.slice(0, -1) }, bytes),
        400,
        'snapshot_invalid',
        /position/,
      );
      const userLast = [...good.messages, { role: 'user', content: 'more' }];
      await refused(() => upload(r, { ...good, messages: userLast }, bytes), 400, null, /end with the assistant/);
    });

    it('a base turn the session has moved past (or not reached): 409 session_moved_on', async () => {
      await refused(() => upload(r, { ...good, base_turn: 1 }, bytes), 409, 'session_moved_on');
      // the original session has run turns since: its turn-1 state cannot come back as turn 2
      const before = await readSession(a);
      await expectError(await upload(a, good, bytes), 409, 'session_moved_on');
      expect(await readSession(a)).toEqual(before);
    });

    it('over MAX_SNAPSHOT_BYTES: 413', async () => {
      const small = (req: Request) => Promise.resolve(app.fetch(req, { ...env, MAX_SNAPSHOT_BYTES: '1000' }));
      await refused(() => upload(r, good, bytes, small), 413, 'request_too_large');
    });

    it('malformed multipart, missing or malformed parts: 400', async () => {
      const raw = (body: string, type: string) =>
        call(`/v1/sessions/${r}/snapshot`, { method: 'POST', headers: { 'content-type': type }, body });
      await refused(() => raw('not multipart', 'multipart/form-data; boundary=xyz'), 400, 'invalid_multipart');
      await refused(() => raw(JSON.stringify(good), 'application/json'), 400, 'invalid_multipart');
      await refused(() => upload(r, good, null), 400, 'invalid_multipart');
      await refused(() => upload(r, null, bytes), 400, 'invalid_multipart');
      await refused(() => upload(r, good, 'text, not a file'), 400, 'invalid_multipart');
      await refused(() => upload(r, '{not json', bytes), 400, 'invalid_json');
      const err = await expectError(await upload(r, { ...good, base_turn: -1 }, bytes), 400);
      expect(err.param).toBe('meta.base_turn');
      await refused(() => upload(r, { ...good, messages: [] }, bytes), 400, null);
    });

    it('while a turn runs: 409 session_busy, and the turn completes undisturbed', async () => {
      const b = await createSession(SYSTEM);
      await sendMessage(b, USER_TURNS[0]!, { max_tokens: MAX_TOKENS });
      const res = await postMessage(b, DETOUR, { max_tokens: DETOUR_MAX_TOKENS, stream: true });
      expect(res.status).toBe(200);
      const sse = new SseReader(res.body!);
      expect(await sse.next()).not.toBeNull(); // the turn runs
      const m = await readMeta(b);
      await expectError(await upload(b, { ...good, base_turn: 1 }, bytes), 409, 'session_busy');
      const rest = await sse.rest();
      expect(rest.at(-1)).toBe('[DONE]');
      expect((await readSession(b)).turns).toHaveLength(2);
      expect(m.turn).toBe(1);
    });

    it('afterwards nothing was stored: no slice in any stage, and the next turn is exact from scratch', async () => {
      for (let k = 0; k < inject('tinyStages'); k++) expect(await stageStub(k).snapshotIds(r)).toEqual([]);
      const reply = await sendMessage(r, USER_TURNS[0]!, { max_tokens: MAX_TOKENS });
      expect(reply.choices[0]!.token_ids).toEqual(conversation()[0]!.tokenIds);
      expect(reply.usage.prompt_tokens_details.cached_tokens).toBe(0);
      expect((await readSession(r)).turns).toHaveLength(1);
    });
  });
});

describe('who may take a state', () => {
  const hex = (b: Uint8Array): string => [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  const KEYS = { alice: 'sk-handoff-alice-01', bob: 'sk-handoff-bob-02' };
  const keyed = async () => ({
    ...env,
    API_KEYS: (await Promise.all(Object.entries(KEYS).map(async ([n, k]) => `${n}:${hex(await sha256(k))}`))).join(','),
  });
  const as = (e: object, key: string | null) => (req: Request) => {
    const headers = new Headers(req.headers);
    if (key) headers.set('authorization', `Bearer ${key}`);
    return Promise.resolve(app.fetch(new Request(req, { headers }), e));
  };

  it("another key's session: 404 for download, meta and upload; the owner's session is unchanged", async () => {
    const e = await keyed();
    const alice = as(e, KEYS.alice);
    const bob = as(e, KEYS.bob);
    const created = await alice(
      new Request(`${BASE}/v1/sessions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ system: SYSTEM }),
      }),
    );
    const { id } = (await created.json()) as { id: string };
    const msg = JSON.stringify({ content: USER_TURNS[0], max_tokens: MAX_TOKENS, temperature: 0 });
    const turn = await alice(
      new Request(`${BASE}/v1/sessions/${id}/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: msg,
      }),
    );
    expect(turn.status).toBe(200);
    const get = (path: string, f: Fetcher) => f(new Request(`${BASE}${path}`));
    await expectError(await get(`/v1/sessions/${id}/snapshot`, bob), 404);
    await expectError(await get(`/v1/sessions/${id}/snapshot/meta`, bob), 404);
    const metaRes = await get(`/v1/sessions/${id}/snapshot/meta`, alice);
    expect(metaRes.status).toBe(200);
    const m = (await metaRes.json()) as SnapshotMeta;
    const stateRes = await get(`/v1/sessions/${id}/snapshot`, alice);
    expect(stateRes.status).toBe(200);
    const state = new Uint8Array(await stateRes.arrayBuffer());
    const before = await (await get(`/v1/sessions/${id}`, alice)).json();
    const meta: UploadMeta = { base_turn: 1, messages: newMessages(m, 0), tokens: m.tokens };
    await expectError(await upload(id, meta, state, bob), 404);
    await expectError(await upload(id, meta, state, as(e, null)), 401);
    expect(await (await get(`/v1/sessions/${id}`, alice)).json()).toEqual(before);
  });

  it('unknown or malformed session ids: 404; a session without a turn has no state: 409 no_snapshot', async () => {
    await expectError(await call('/v1/sessions/not-a-session/snapshot'), 404);
    const anything: UploadMeta = { base_turn: 0, messages: [{ role: 'user', content: 'x' }], tokens: [] };
    await expectError(await upload('not-a-session', anything, new Uint8Array(8)), 404);
    const fresh = await createSession(SYSTEM);
    await expectError(await call(`/v1/sessions/${fresh}/snapshot`), 409, 'no_snapshot');
    await expectError(await call(`/v1/sessions/${fresh}/snapshot/meta`), 409, 'no_snapshot');
  });
});
