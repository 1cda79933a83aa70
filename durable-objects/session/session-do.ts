// SessionDO: one SQLite-backed Durable Object per conversation: transcript, turn log, the index of state
// snapshots, tokenizer and chat template. The model's layers run in StageDOs (durable-objects/stage/stage-do.ts),
// which hold the state slices; a one-stage model is the same code with one stage.
//
// The model's front (manifest, config, tokenizer) is cached at module level: every object of this class in
// an isolate shares one load.

import { DurableObject } from 'cloudflare:workers';
import { loadFront, type ModelFront } from '../../engine/run/loaded-model.js';
import type { StatePipeline } from '../../engine/run/pipeline.js';
import type { Env } from '../env.js';
import { r2ModelSource } from '../model-source/r2.js';
import type { ChatMessage } from '../../engine/text/chat-template.js';
import type { ApiErrorBody, TurnEvent, TurnRequest } from '../../engine/serve/protocol.js';
import { SessionStore, type ResponseRecord, type SessionMeta, type StoredMessage, type TurnRecord } from './store.js';
import type { StageLoadInfo } from '../stage/stage-do.js';
import { StagePipeline, stageRoutes } from './stage-pipeline.js';
import {
  detokenizeIds,
  encodeConversation,
  KEEP_SNAPSHOTS,
  prepareTurn,
  runTurn,
  tokenizeInput,
  TurnError,
  type TokenizeInput,
} from '../../engine/serve/turn.js';
import { stageSpecOf } from '../../engine/convert/manifest.js';
import {
  checkWholeState,
  deserializeState,
  mergeStageStates,
  serializeState,
  splitState,
  StateFingerprintError,
  StateFormatError,
  type HymbaState,
} from '../../engine/state/state.js';
import type { LoadTiming } from '../model-source/timed.js';

/** How the model was loaded: the front here, each stage in its own object. */
export interface EngineInfo extends LoadTiming {
  prefix: string;
  fingerprint: string;
  vocab: number;
  stages: number;
  /** ORT was instantiated through the precompiled-module redirect by some stage's load */
  redirected: boolean;
  /** wall time until the front and every stage were loaded (stages load in parallel) */
  loadMs: number;
  perStage: StageLoadInfo[];
}

export interface LogitsResult {
  /** row-major [rows, vocab], one row per input id */
  logits: Float32Array;
  rows: number;
  vocab: number;
  /** wall time of the forward pass */
  forwardMs: number;
}

const fronts = new Map<string, Promise<ModelFront>>();

/** The isolate's model front for `prefix`, loaded on first use; a failed load is retried next time. */
function frontFor(env: Env, prefix: string): Promise<ModelFront> {
  let loading = fronts.get(prefix);
  if (!loading) {
    const p = loadFront(r2ModelSource(env.MODEL_STORE, prefix));
    fronts.set(prefix, p);
    p.catch(() => {
      if (fronts.get(prefix) === p) fronts.delete(prefix);
    });
    loading = p;
  }
  return loading;
}

/** How a turn reaches this object, which decides what it stores. */
export type TurnMode =
  /** the session API: the transcript is kept here; the request carries only the new user message */
  | 'session'
  /** prompt_cache_key: the client sends the whole history; snapshots are kept, no transcript */
  | 'cache'
  /** no key: compute only, nothing stored */
  | 'ephemeral';

export interface TurnCall {
  mode: TurnMode;
  owner: string | null;
  /** session mode: the Responses API id of this turn, committed with it */
  responseId?: string;
  /**
   * session mode: run only if the session's last turn is still this one (checked under the turn lock), else
   * 409 `turn_superseded`: a continuation of a response that another continuation has already followed
   */
  afterTurn?: number;
}

/** The NDJSON events a turn stream carries: TurnEvents, preceded by `accepted` once the turn may run. */
export type StreamEvent = TurnEvent | { type: 'accepted' };

/** Where a stored response sits in its session (Responses API). */
export interface ResponseLocation {
  /** the turn that answered it */
  turn: number;
  /** the session's last turn: equal to `turn` when the response is the newest of its chain */
  lastTurn: number;
  /** the chain's system message (turn 0), null when it has none */
  system: string | null;
}

/** A stored response: its saved body, or what is needed to rebuild one (a turn whose body was never saved). */
export interface StoredResponse {
  created: number;
  body: string | null;
  turn: TurnRecord | null;
  /** the turn's assistant message(s) */
  output: StoredMessage[];
}

/** What a client needs to continue a session from its downloaded state (session handoff). */
export interface HandoffMeta {
  fingerprint: string;
  /** the turn the state ends */
  turn: number;
  /** the state's absolute position: meta tokens + tokens.length */
  position: number;
  /** the token ids the state covers (meta tokens excluded): the transcript up to `turn`, rendered */
  tokens: number[];
  /** the transcript up to `turn` */
  messages: StoredMessage[];
  /** bytes of the whole-model state in the engine's snapshot format */
  bytes: number;
}

/** A session's state, sent back by a client that continued it elsewhere (session handoff). */
export interface HandoffUpload {
  /** the session's last turn when the client took the state; it must still be the last */
  baseTurn: number;
  /** the messages since baseTurn: each turn one or more user/tool messages, then the assistant's reply */
  messages: ChatMessage[];
  /** every token id the uploaded state covers (meta tokens excluded) */
  tokens: number[];
}

export interface HandoffResult {
  /** the session's last turn after the commit */
  turn: number;
  tokens: number;
  /** bytes of the state as the stages store it */
  snapshotBytes: number;
}

export interface SessionInfo {
  created: number;
  messages: StoredMessage[];
  turns: TurnRecord[];
  /** tokens the newest snapshot has processed (meta tokens excluded) */
  stateTokens: number;
  snapshots: number;
  snapshotBytes: number;
}

/**
 * Let other events in between a turn's steps: requests to this object (a concurrent turn's 409, reads)
 * and to the other objects of the isolate. The model's compute never yields on its own: ONNX
 * Runtime's WASM runs synchronously behind already-resolved promises, so without this a turn holds the
 * isolate until it ends.
 */
const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 0));

const encoder = new TextEncoder();
const line = (e: StreamEvent): Uint8Array => encoder.encode(JSON.stringify(e) + '\n');

function errorEvent(e: unknown): StreamEvent {
  if (e instanceof TurnError) return { type: 'error', error: e.body };
  console.error('turn failed:', e); // the client gets a generic message, never internals
  const message = 'The server had an error while processing your request.';
  return { type: 'error', error: { status: 500, type: 'server_error', code: 'internal_error', param: null, message } };
}

const notFound = (what: string, param: string | null = null): TurnError =>
  new TurnError({ status: 404, type: 'not_found_error', code: 'not_found', param, message: `${what} not found` });

const superseded = (): TurnError =>
  new TurnError({
    status: 409,
    type: 'conflict_error',
    code: 'turn_superseded',
    param: null,
    message: 'The session has moved past the turn this request continues.',
  });

const responseNotFound = (): { error: ApiErrorBody } => ({
  error: { status: 404, type: 'not_found_error', code: 'not_found', param: null, message: 'response not found' },
});

const busy = (): TurnError =>
  new TurnError({
    status: 409,
    type: 'conflict_error',
    code: 'session_busy',
    param: null,
    message: 'The session is busy with another turn; retry when it has finished.',
  });

const noSnapshot = (turn: number, why: string): TurnError =>
  new TurnError({
    status: 409,
    type: 'conflict_error',
    code: 'no_snapshot',
    param: null,
    message: `The session has no stored state for its last turn (turn ${turn}): ${why}. Send the session a message (its state is stored after every turn) or continue it from its transcript.`,
  });

const snapshotInvalid = (message: string, code = 'snapshot_invalid', param: string | null = 'state'): TurnError =>
  new TurnError({ status: 400, type: 'invalid_request_error', code, param, message });

/** A byte stream of `bytes` in 1 MiB chunks (RPC messages are limited; streams are not). */
function streamOf(bytes: Uint8Array): ReadableStream<Uint8Array> {
  let o = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (o >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(o, o + (1 << 20)));
      o += 1 << 20;
    },
  });
}

/** The stream's bytes, or null once they pass `max`. */
async function readAll(stream: ReadableStream<Uint8Array>, max: number): Promise<Uint8Array | null> {
  const parts: Uint8Array[] = [];
  let n = 0;
  const reader = stream.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      n += value.length;
      if (n > max) return null;
      parts.push(value);
    }
  } finally {
    reader.releaseLock();
  }
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** The turns of a handoff's messages: each one or more user/tool messages, then one assistant message. */
function handoffTurns(messages: ChatMessage[]): ChatMessage[][] {
  const bad = (i: number, why: string): TurnError => invalidMeta(`messages[${i}]: ${why}`, `meta.messages[${i}]`);
  if (messages.length === 0)
    throw invalidMeta('at least one turn (a user message and the reply) is needed', 'meta.messages');
  const turns: ChatMessage[][] = [];
  let current: ChatMessage[] = [];
  messages.forEach((m, i) => {
    if (m.role === 'assistant') {
      if (current.length === 0) throw bad(i, 'an assistant message must follow a user or tool message');
      turns.push([...current, m]);
      current = [];
    } else if (m.role === 'user' || m.role === 'tool') current.push(m);
    else throw bad(i, `role ${m.role} cannot be part of a turn (the system message is the session's)`);
  });
  if (current.length > 0)
    throw bad(messages.length - 1, 'the messages must end with the assistant reply the state covers');
  return turns;
}

const invalidMeta = (message: string, param: string): TurnError =>
  new TurnError({ status: 400, type: 'invalid_request_error', code: null, param, message });

const asErrorValue = (e: unknown): { error: ApiErrorBody } => {
  if (e instanceof TurnError) return { error: e.body };
  throw e;
};

export class SessionDO extends DurableObject<Env> {
  private busy = false;
  private storeCache: SessionStore | null = null;
  /**
   * A running turn whose stream nobody has pulled for this long is aborted: its reader is gone. A stream
   * returned over RPC and cancelled by the caller does not reach this side's `cancel` in workerd
   * (cloudflare/workerd#7298), and the Worker of a client that disconnected is torn down without a word, so
   * without this the session would stay busy (409) until the object is evicted. The Worker reads turn
   * streams as fast as they come, so a healthy turn never waits this long between pulls.
   */
  turnIdleAbortMs = 10_000;

  private get prefix(): string {
    return this.env.MODEL_PREFIX;
  }

  private get store(): SessionStore {
    this.storeCache ??= new SessionStore(this.ctx.storage.sql, this.ctx.storage);
    return this.storeCache;
  }

  /** The key the stages file this conversation's state under. */
  private get sessionKey(): string {
    return this.ctx.id.toString();
  }

  private pipeline(front: ModelFront, session: string): StatePipeline {
    return new StagePipeline(front, stageRoutes(this.env, front, this.prefix, session), session);
  }

  /** Whether this isolate's model front is loaded; starts loading it if not (health checks). */
  async status(): Promise<{ ready: boolean; fingerprint?: string; error?: string }> {
    const waitMs = 50;
    try {
      return await Promise.race([
        frontFor(this.env, this.prefix).then((f) => ({ ready: true, fingerprint: f.fingerprint })),
        new Promise<{ ready: boolean }>((ok) => setTimeout(() => ok({ ready: false }), waitMs)),
      ]);
    } catch (e) {
      return { ready: false, error: e instanceof Error ? e.message : String(e) };
    }
  }

  /** Load the model (the front here, each stage in its object) and describe that load. */
  async model(): Promise<EngineInfo> {
    const t0 = performance.now();
    const front = await frontFor(this.env, this.prefix);
    const perStage = await Promise.all(
      stageRoutes(this.env, front, this.prefix, this.sessionKey).map((s) => s.stub.load(s.addr)),
    );
    const computeMs: Record<string, number> = {};
    for (const st of perStage)
      for (const [k, v] of Object.entries(st.computeMs)) computeMs[k] = (computeMs[k] ?? 0) + v;
    return {
      prefix: this.prefix,
      fingerprint: front.fingerprint,
      vocab: front.model.dims.V,
      stages: perStage.length,
      redirected: perStage.some((st) => st.redirected),
      loadMs: performance.now() - t0,
      readMs: perStage.reduce((n, st) => n + st.readMs, 0),
      bytesRead: perStage.reduce((n, st) => n + st.bytesRead, 0),
      computeMs,
      perStage,
    };
  }

  /** Logits of every position of `ids`, run from a fresh session state (meta tokens already processed). */
  async logits(ids: number[]): Promise<LogitsResult> {
    const front = await frontFor(this.env, this.prefix);
    const pipeline = this.pipeline(front, `logits:${crypto.randomUUID()}`);
    const open = await pipeline.open(null);
    if (!open.ok) throw new Error(open.reason);
    try {
      const t0 = performance.now();
      const out = await pipeline.forward(open.cursor, ids, 'all');
      const forwardMs = performance.now() - t0;
      return { logits: out.logits, rows: out.rows, vocab: front.model.dims.V, forwardMs };
    } finally {
      await pipeline.close(open.cursor);
    }
  }

  /** /tokenize: the ids a prompt becomes (as a turn tokenizes it) and the context length. */
  async tokenize(input: TokenizeInput): Promise<{ tokens: number[]; maxModelLen: number } | { error: ApiErrorBody }> {
    const front = await frontFor(this.env, this.prefix);
    try {
      const { dims } = front.model;
      return { tokens: tokenizeInput(front, input), maxModelLen: dims.maxPositions - dims.M };
    } catch (e) {
      if (e instanceof TurnError) return { error: e.body };
      throw e;
    }
  }

  /** /detokenize: the text of token ids. */
  async detokenize(ids: number[]): Promise<{ prompt: string } | { error: ApiErrorBody }> {
    const front = await frontFor(this.env, this.prefix);
    try {
      return { prompt: detokenizeIds(front, ids) };
    } catch (e) {
      if (e instanceof TurnError) return { error: e.body };
      throw e;
    }
  }

  /** Create a session (session API). */
  async create(owner: string | null, messages: ChatMessage[]): Promise<void> {
    this.store.create({ owner, kind: 'session', messages });
  }

  private owned(owner: string | null): SessionMeta {
    const meta = this.store.meta();
    // another key's session is not found, never shown
    if (!meta || meta.owner !== owner) throw notFound('session', 'session_id');
    return meta;
  }

  /** As owned, and a session of the session API (a prompt_cache_key object is not reachable as a session). */
  private ownedSession(owner: string | null): void {
    if (this.owned(owner).kind !== 'session') throw notFound('session', 'session_id');
  }

  async info(owner: string | null): Promise<SessionInfo> {
    this.ownedSession(owner);
    const s = this.store;
    const snapshots = s.snapshots();
    return {
      created: s.meta()!.created,
      messages: s.messages(),
      turns: s.turns(),
      stateTokens: snapshots[0]?.tokens.length ?? 0,
      snapshots: snapshots.length,
      snapshotBytes: s.snapshotBytesTotal(),
    };
  }

  async destroy(owner: string | null): Promise<void> {
    this.ownedSession(owner);
    if (this.busy) throw busy();
    const front = await frontFor(this.env, this.prefix).catch(() => null);
    if (front) await this.pipeline(front, this.sessionKey).retain([]); // the stages' slices go first
    await this.ctx.storage.deleteAll();
    this.storeCache = null;
  }

  // ---- Responses API: a chain of responses is one session; each response is one of its turns ----

  /** This session's live response `id` if `owner` may see it. */
  private ownedResponse(owner: string | null, id: string): ResponseRecord | null {
    // an object that has never stored anything stays empty: looking up an unknown id writes no schema
    const tables = this.ctx.storage.sql.exec(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'`);
    if (tables.toArray().length === 0) return null;
    const meta = this.store.meta();
    if (!meta || meta.owner !== owner || meta.kind !== 'session') return null;
    const r = this.store.response(id);
    return r && !r.deleted ? r : null;
  }

  /** Where response `id` sits in this session (errors as values: RPC loses error classes). */
  async locateResponse(owner: string | null, id: string): Promise<ResponseLocation | { error: ApiErrorBody }> {
    const r = this.ownedResponse(owner, id);
    if (!r) return responseNotFound();
    const system = this.store.messages(0).find((m) => m.role === 'system');
    return { turn: r.turn, lastTurn: this.store.lastTurn(), system: system?.content ?? null };
  }

  /** Save the body of a response after its turn (a no-op for an unknown or deleted one). */
  async saveResponse(owner: string | null, id: string, body: string): Promise<void> {
    if (this.ownedResponse(owner, id)) this.store.saveResponseBody(id, body);
  }

  async readResponse(owner: string | null, id: string): Promise<StoredResponse | { error: ApiErrorBody }> {
    const r = this.ownedResponse(owner, id);
    if (!r) return responseNotFound();
    if (r.body !== null) return { created: r.created, body: r.body, turn: null, output: [] };
    return {
      created: r.created,
      body: null,
      turn: this.store.turns().find((t) => t.turn === r.turn) ?? null,
      output: this.store.messages(r.turn).filter((m) => m.turn === r.turn && m.role === 'assistant'),
    };
  }

  /** Delete a response: it can no longer be read or continued; its turn stays in the session. */
  async deleteResponse(owner: string | null, id: string): Promise<{ deleted: true } | { error: ApiErrorBody }> {
    if (!this.ownedResponse(owner, id)) return responseNotFound();
    this.store.deleteResponse(id);
    return { deleted: true };
  }

  /** What a fork at `turn` copies: the transcript up to it and that turn's snapshot, if still kept. */
  async exportFork(owner: string | null, turn: number): Promise<ForkData> {
    this.ownedSession(owner);
    const s = this.store;
    if (!Number.isInteger(turn) || turn < 0 || turn > s.lastTurn()) throw notFound(`turn ${turn}`, 'turn');
    const snap = s.snapshots().find((x) => x.turn === turn) ?? null;
    return {
      messages: s.messages(turn),
      turns: s.turns().filter((t) => t.turn <= turn),
      snapshot: snap ? { ...snap, turn, from: this.sessionKey } : null,
    };
  }

  async importFork(owner: string | null, data: ForkData): Promise<void> {
    const s = this.store;
    const strip = ({ turn: _turn, ...m }: StoredMessage): ChatMessage => m;
    s.create({ owner, kind: 'session', messages: data.messages.filter((m) => m.turn === 0).map(strip) });
    s.importTurns(
      data.turns,
      data.messages.filter((m) => m.turn > 0),
    );
    if (data.snapshot) await this.importSnapshot(data.snapshot);
  }

  /** Copy a fork's snapshot slices from the source session's stages to this one's (replicas may differ). */
  private async importSnapshot(snap: NonNullable<ForkData['snapshot']>): Promise<void> {
    const front = await frontFor(this.env, this.prefix);
    if (snap.fingerprint !== front.fingerprint) return;
    const from = stageRoutes(this.env, front, this.prefix, snap.from);
    const to = stageRoutes(this.env, front, this.prefix, this.sessionKey);
    const id = this.store.allocateSnapshotId();
    const slices = await Promise.all(from.map((st) => st.stub.exportSlice(snap.from, snap.id)));
    if (slices.some((b) => b === null)) return; // the fork re-prefills its transcript instead
    await Promise.all(to.map((st, k) => st.stub.importSlice(this.sessionKey, id, slices[k]!)));
    this.store.importSnapshot(snap.turn, { id, fingerprint: snap.fingerprint, tokens: snap.tokens, bytes: snap.bytes });
  }

  // ---- session handoff: the state leaves the edge (a browser continues locally) and comes back ----

  /**
   * The session's newest state as one whole-model snapshot (every stage's slice, merged) with what a client
   * needs to continue it; `withState` false: the description only. Errors as values (RPC loses classes): 404
   * for another key's session, 409 `no_snapshot` when the last turn's state is not stored (none yet, dropped).
   */
  async exportHandoff(
    owner: string | null,
    withState: boolean,
  ): Promise<{ meta: HandoffMeta; state: ReadableStream<Uint8Array> | null } | { error: ApiErrorBody }> {
    try {
      this.ownedSession(owner);
      const front = await frontFor(this.env, this.prefix);
      const s = this.store;
      const turn = s.lastTurn();
      const snap = s.snapshots()[0];
      const messages = s.messages(turn);
      if (!snap || snap.turn !== turn) throw noSnapshot(turn, turn === 0 ? 'no turn has run yet' : 'it was dropped');
      if (snap.fingerprint !== front.fingerprint) throw noSnapshot(turn, 'it belongs to another model');
      const d = front.model.dims;
      const routes = stageRoutes(this.env, front, this.prefix, this.sessionKey);
      const slices = await Promise.all(routes.map((st) => st.stub.exportSlice(this.sessionKey, snap.id)));
      let merged: HymbaState;
      try {
        const states = slices.map((b, k) => {
          if (!b) throw new StateFormatError(`stage ${k} no longer holds its slice`);
          return deserializeState(d, b, front.fingerprint);
        });
        merged = mergeStageStates(d, front.manifest.stages.map(stageSpecOf), states);
      } catch (e) {
        if (!(e instanceof StateFormatError)) throw e;
        console.warn(`snapshot ${snap.id} cannot be exported: ${e.message}`);
        throw noSnapshot(turn, 'it is incomplete');
      }
      if (merged.position !== d.M + snap.tokens.length) throw noSnapshot(turn, 'it is inconsistent');
      const bytes = serializeState(d, merged, front.fingerprint);
      const meta: HandoffMeta = {
        fingerprint: front.fingerprint,
        turn,
        position: merged.position,
        tokens: snap.tokens,
        messages,
        bytes: bytes.length,
      };
      return { meta, state: withState ? streamOf(bytes) : null };
    } catch (e) {
      return asErrorValue(e);
    }
  }

  /**
   * Take back a state a client continued elsewhere: validate everything first (owner, busy, the snapshot's
   * format, checksum, model and layout, its position against `tokens`, base turn, and that `tokens` are the
   * transcript + new messages as a turn here would render them), then commit as a turn does: the stages store
   * their slices under a fresh snapshot id, one transaction appends the turns and indexes the snapshot, then
   * older slices go. A failure before the transaction leaves the session exactly as it was.
   */
  async importHandoff(
    owner: string | null,
    upload: HandoffUpload,
    state: ReadableStream<Uint8Array>,
    maxBytes: number,
  ): Promise<HandoffResult | { error: ApiErrorBody }> {
    try {
      this.ownedSession(owner);
      if (this.busy) throw busy();
    } catch (e) {
      await state.cancel().catch(() => undefined);
      return asErrorValue(e);
    }
    this.busy = true; // a turn that starts meanwhile gets 409, as does a second upload
    try {
      return await this.takeHandoff(upload, state, maxBytes);
    } catch (e) {
      return asErrorValue(e);
    } finally {
      this.busy = false;
    }
  }

  private async takeHandoff(
    upload: HandoffUpload,
    stream: ReadableStream<Uint8Array>,
    maxBytes: number,
  ): Promise<HandoffResult> {
    const bytes = await readAll(stream, maxBytes);
    if (!bytes)
      throw new TurnError({
        status: 413,
        type: 'invalid_request_error',
        code: 'request_too_large',
        param: 'state',
        message: `The state is larger than the limit of ${maxBytes} bytes.`,
      });
    const front = await frontFor(this.env, this.prefix);
    const d = front.model.dims;
    let state: HymbaState;
    try {
      state = deserializeState(d, bytes, front.fingerprint);
      checkWholeState(d, state);
    } catch (e) {
      if (e instanceof StateFingerprintError)
        throw snapshotInvalid(
          `The state belongs to model ${e.found}; this server runs model ${e.expected}.`,
          'snapshot_fingerprint_mismatch',
        );
      if (e instanceof StateFormatError) throw snapshotInvalid(`The state is not a usable snapshot: ${e.message}.`);
      throw snapshotInvalid('The state is not a usable snapshot: its header is unreadable.');
    }
    const { tokens } = upload;
    if (state.position !== d.M + tokens.length)
      throw snapshotInvalid(
        `The state is at position ${state.position} (${d.M} meta tokens + ${state.position - d.M}), ` +
          `but meta.tokens has ${tokens.length} ids.`,
      );
    const s = this.store;
    const last = s.lastTurn();
    if (upload.baseTurn !== last)
      throw new TurnError({
        status: 409,
        type: 'conflict_error',
        code: 'session_moved_on',
        param: 'meta.base_turn',
        message: `The session's last turn is ${last}, not ${upload.baseTurn}: it was continued meanwhile. Download its state again.`,
      });
    const turns = handoffTurns(upload.messages);
    const tok = front.tokenizer;
    if (!tok) throw invalidMeta('this model has no tokenizer: its sessions cannot be handed off', 'meta.messages');
    const history: ChatMessage[] = s.messages().map(({ turn: _turn, ...m }) => m);
    let rendered: number[];
    try {
      rendered = encodeConversation(tok, [...history, ...upload.messages], [], false);
    } catch (e) {
      throw invalidMeta(e instanceof Error ? e.message : String(e), 'meta.messages');
    }
    const differs = rendered.findIndex((id, i) => tokens[i] !== id);
    if (differs >= 0 || rendered.length !== tokens.length) {
      const at = differs >= 0 ? differs : Math.min(rendered.length, tokens.length);
      throw snapshotInvalid(
        `meta.tokens (${tokens.length} ids) are not the transcript and the new messages as this server renders ` +
          `them (${rendered.length} ids): they differ from index ${at}.`,
        'snapshot_tokens_mismatch',
        'meta.tokens',
      );
    }
    // valid: commit as a turn does (docs/serving.md, commit protocol)
    const specs = front.manifest.stages.map(stageSpecOf);
    const slices = splitState(d, specs, state).map((p) => serializeState(d, p, front.fingerprint));
    const routes = stageRoutes(this.env, front, this.prefix, this.sessionKey);
    const id = s.allocateSnapshotId();
    await Promise.all(routes.map((st, k) => st.stub.importSlice(this.sessionKey, id, slices[k]!))); // 1. the slices
    const snapshotBytes = slices.reduce((n, b) => n + b.length, 0);
    const { turn, keep } = s.commitHandoff({
      // 2. current, atomically with the turns
      baseTurn: upload.baseTurn,
      turns,
      snapshot: { id, fingerprint: front.fingerprint, tokens, bytes: snapshotBytes },
      keepSnapshots: KEEP_SNAPSHOTS,
    });
    // 3. only now may older slices go; a failure here leaves garbage the next commit removes
    await Promise.all(routes.map((st) => st.stub.retain(this.sessionKey, keep))).catch((e: unknown) =>
      console.warn('dropping old snapshots failed:', e),
    );
    return { turn, tokens: tokens.length, snapshotBytes };
  }

  /**
   * Run one turn and stream its events as NDJSON. The first event is `accepted` or an `error` (busy, unknown
   * session, bad prompt), so the caller can pick the HTTP status before streaming. Cancelling the stream
   * or leaving it unread for `turnIdleAbortMs` aborts the turn, and an aborted or failed turn
   * commits nothing. The session is free again once the turn has committed (with its `done` event).
   */
  async turn(req: TurnRequest, call: TurnCall): Promise<ReadableStream<Uint8Array>> {
    const abort = new AbortController();
    let events: AsyncGenerator<TurnEvent> | null = null;
    let first: StreamEvent;
    try {
      events = await this.startTurn(req, call, abort.signal);
      first = { type: 'accepted' };
    } catch (e) {
      first = errorEvent(e);
    }
    const holdsLock = call.mode !== 'ephemeral';
    let idle: ReturnType<typeof setTimeout> | undefined;
    const release = (): void => {
      clearTimeout(idle);
      if (events && holdsLock) this.busy = false;
      events = null;
    };
    /** Abort the turn: nothing is committed (a pull in progress finishes its step first). */
    const abortTurn = async (): Promise<void> => {
      abort.abort();
      try {
        await events?.return(undefined);
      } finally {
        release();
      }
    };
    const waitForPull = (): void => {
      clearTimeout(idle);
      if (events) idle = setTimeout(() => void abortTurn(), this.turnIdleAbortMs);
    };
    let sentFirst = false;
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        clearTimeout(idle);
        if (!sentFirst) {
          sentFirst = true;
          controller.enqueue(line(first));
          if (!events) controller.close();
          else waitForPull();
          return;
        }
        await yieldToEventLoop();
        const turn = events;
        if (!turn) {
          controller.close(); // aborted
          return;
        }
        try {
          const r = await turn.next();
          if (r.done) {
            release();
            controller.close();
            return;
          }
          if (r.value.type === 'done') {
            // committed: the session is free before the reader hears so (a client's next turn must not find
            // it busy); closing this turn's cursors afterwards touches nothing a next turn uses
            release();
            controller.enqueue(line(r.value));
            controller.close();
            await turn.return(undefined).catch((e: unknown) => console.warn('closing a finished turn failed:', e));
            return;
          }
          controller.enqueue(line(r.value));
          waitForPull();
        } catch (e) {
          release();
          controller.enqueue(line(errorEvent(e)));
          controller.close();
        }
      },
      cancel: abortTurn,
    });
  }

  private async startTurn(given: TurnRequest, call: TurnCall, signal: AbortSignal): Promise<AsyncGenerator<TurnEvent>> {
    const req = withPromptLimit(given, this.env.MAX_PROMPT_TOKENS);
    if (call.mode === 'ephemeral') {
      // nothing stored: turns of unrelated requests may share this object concurrently
      const front = await frontFor(this.env, this.prefix);
      const prepared = prepareTurn(front, req);
      const pipeline = this.pipeline(front, `ephemeral:${crypto.randomUUID()}`);
      return runTurn(front, pipeline, null, req, { newMessages: [], signal, record: false }, prepared);
    }
    if (this.busy) throw busy();
    let store: SessionStore | null = null;
    let newMessages: ChatMessage[] = [];
    let request = req;
    if (call.mode === 'session') {
      this.ownedSession(call.owner);
      if (req.prompt.kind !== 'chat')
        throw new TurnError({
          status: 400,
          type: 'invalid_request_error',
          code: null,
          param: 'content',
          message: 'a session turn takes a chat message',
        });
      store = this.store;
      if (call.afterTurn !== undefined && store.lastTurn() !== call.afterTurn) throw superseded();
      newMessages = req.prompt.messages;
      const history: ChatMessage[] = store.messages().map(({ turn: _turn, ...m }) => m);
      request = { ...req, prompt: { ...req.prompt, messages: [...history, ...newMessages] } };
    } else if (call.mode === 'cache') {
      store = this.store;
      const meta = store.meta();
      if (!meta) store.create({ owner: call.owner, kind: 'cache' });
      else if (meta.owner !== call.owner) throw notFound('cache entry');
    }
    this.busy = true;
    try {
      const front = await frontFor(this.env, this.prefix);
      const prepared = prepareTurn(front, request); // prompt errors surface before the stream starts
      const pipeline = this.pipeline(front, this.sessionKey);
      const opts = {
        newMessages,
        signal,
        record: call.mode === 'session',
        ...(call.mode === 'session' && call.responseId !== undefined ? { responseId: call.responseId } : {}),
      };
      return runTurn(front, pipeline, store, request, opts, prepared);
    } catch (e) {
      this.busy = false;
      throw e;
    }
  }
}

export interface ForkData {
  messages: StoredMessage[];
  turns: TurnRecord[];
  /** the snapshot at the fork's turn, by reference: its slices are copied between the stages */
  snapshot: { turn: number; from: string; id: number; fingerprint: string; tokens: number[]; bytes: number } | null;
}

/** The request with the server's MAX_PROMPT_TOKENS limit (unset or malformed: the model's context only). */
function withPromptLimit(req: TurnRequest, setting: string | undefined): TurnRequest {
  const n = Number(setting ?? '');
  return setting && Number.isInteger(n) && n > 0 ? { ...req, maxPromptTokens: n } : req;
}
