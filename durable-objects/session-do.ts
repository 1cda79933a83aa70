// SessionDO: one SQLite-backed Durable Object per conversation. For now it only loads the model and runs a
// forward pass; the serving work adds transcripts, snapshots and generation on top.
//
// The engine is cached at module level: every object of this class in an isolate shares one load (weights
// are copied into ORT's WASM heap once per isolate, platform.md).

import { DurableObject } from 'cloudflare:workers';
// precompiled by the bundler (CompiledWasm rule): workerd refuses to compile WASM bytes at run time
import ortWasm from 'onnxruntime-web/ort-wasm-simd-threaded.wasm';
import { HymbaEngine, type ModelSource } from '../engine/model.js';
import { initOrt } from '../engine/runtime/ort.js';
import type { Env } from '../workers/env.js';
import { r2ModelSource } from './r2-model-source.js';
import type { ChatMessage } from '../engine/chat-template.js';
import type { TurnEvent, TurnRequest } from './protocol.js';
import { SessionStore, type SessionMeta, type StoredMessage, type TurnRecord } from './session-store.js';
import { prepareTurn, runTurn, TurnError } from './turn.js';

/** How the model of this isolate was loaded. */
export interface EngineInfo {
  prefix: string;
  fingerprint: string;
  vocab: number;
  stages: number;
  /** ORT was instantiated through the precompiled-module redirect during this load (true on an isolate's first load) */
  redirected: boolean;
  /** wall time of HymbaEngine.load: R2 reads, ORT instantiation, session creation, tokenizer */
  loadMs: number;
  /** the part of loadMs spent waiting for R2 */
  readMs: number;
  /** bytes read from R2 (characters for the text files) */
  bytesRead: number;
  /**
   * Compute time between reads, keyed by the file read just before: after a stage graph it is that graph's
   * session creation (the first one includes ORT's instantiation); after the last file, the tokenizer.
   */
  computeMs: Record<string, number>;
}

export interface LogitsResult {
  /** row-major [rows, vocab], one row per input id */
  logits: Float32Array;
  rows: number;
  vocab: number;
  /** wall time of the forward pass */
  forwardMs: number;
}

interface Loaded {
  engine: HymbaEngine;
  info: EngineInfo;
}

const engines = new Map<string, Promise<Loaded>>();

/** Times a source's reads and the compute between them (HymbaEngine.load reads and works in turn). */
function timedSource(src: ModelSource) {
  let readMs = 0;
  let bytes = 0;
  const computeMs: Record<string, number> = {};
  let last: { name: string; end: number } | null = null;
  const computeUntil = (now: number): void => {
    if (last) computeMs[last.name] = (computeMs[last.name] ?? 0) + (now - last.end);
  };
  const timed =
    <T extends string | Uint8Array>(read: (name: string) => Promise<T | null>) =>
    async (name: string): Promise<T | null> => {
      const t0 = performance.now();
      computeUntil(t0);
      try {
        const out = await read(name);
        if (out !== null) bytes += typeof out === 'string' ? out.length : out.byteLength;
        return out;
      } finally {
        const t1 = performance.now();
        readMs += t1 - t0;
        last = { name, end: t1 };
      }
    };
  return {
    src: { readText: timed((n) => src.readText(n)), readBytes: timed((n) => src.readBytes(n)) } as ModelSource,
    finish: () => {
      computeUntil(performance.now());
      last = null;
      return { readMs, bytesRead: bytes, computeMs };
    },
  };
}

async function loadEngine(env: Env, prefix: string): Promise<Loaded> {
  initOrt({ wasmModule: ortWasm });
  const timed = timedSource(r2ModelSource(env.MODEL_STORE, prefix));
  const t0 = performance.now();
  const engine = await HymbaEngine.load(timed.src);
  const loadMs = performance.now() - t0;
  const info: EngineInfo = {
    prefix,
    fingerprint: engine.fingerprint,
    vocab: engine.model.dims.V,
    stages: engine.runner.stages.length,
    redirected: engine.runner.stages.some((s) => s.graph.redirected),
    loadMs,
    ...timed.finish(),
  };
  return { engine, info };
}

/** The isolate's engine for the model under `prefix`, loaded on first use; a failed load is retried next time. */
function engineFor(env: Env, prefix: string): Promise<Loaded> {
  let loading = engines.get(prefix);
  if (!loading) {
    const p = loadEngine(env, prefix);
    engines.set(prefix, p);
    p.catch(() => {
      if (engines.get(prefix) === p) engines.delete(prefix);
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
}

/** The NDJSON events a turn stream carries: TurnEvents, preceded by `accepted` once the turn may run. */
export type StreamEvent = TurnEvent | { type: 'accepted' };

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

const notFound = (what: string): TurnError =>
  new TurnError({ status: 404, type: 'not_found_error', code: 'not_found', param: null, message: `${what} not found` });

const busy = (): TurnError =>
  new TurnError({
    status: 409,
    type: 'conflict_error',
    code: 'session_busy',
    param: null,
    message: 'The session is busy with another turn; retry when it has finished.',
  });

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

  /** Whether this isolate's model is loaded; starts loading it if not (health checks). */
  async status(): Promise<{ ready: boolean; fingerprint?: string; error?: string }> {
    const waitMs = 50;
    try {
      return await Promise.race([
        engineFor(this.env, this.prefix).then((l) => ({ ready: true, fingerprint: l.engine.fingerprint })),
        new Promise<{ ready: boolean }>((ok) => setTimeout(() => ok({ ready: false }), waitMs)),
      ]);
    } catch (e) {
      return { ready: false, error: e instanceof Error ? e.message : String(e) };
    }
  }

  /** Load the model (once per isolate) and describe that load. */
  async model(): Promise<EngineInfo> {
    return (await engineFor(this.env, this.prefix)).info;
  }

  /** Logits of every position of `ids`, run from a fresh session state (meta tokens already processed). */
  async logits(ids: number[]): Promise<LogitsResult> {
    const { engine } = await engineFor(this.env, this.prefix);
    const t0 = performance.now();
    const out = await engine.runner.forward(engine.newState(), ids, 'all');
    const forwardMs = performance.now() - t0;
    return { logits: out.logits, rows: out.rows, vocab: engine.model.dims.V, forwardMs };
  }

  /** Create a session (session API). */
  async create(owner: string | null, messages: ChatMessage[]): Promise<void> {
    this.store.create({ owner, kind: 'session', messages });
  }

  private owned(owner: string | null): SessionMeta {
    const meta = this.store.meta();
    if (!meta || meta.owner !== owner) throw notFound('session'); // another key's session is not found, never shown
    return meta;
  }

  async info(owner: string | null): Promise<SessionInfo> {
    this.owned(owner);
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
    this.owned(owner);
    if (this.busy) throw busy();
    await this.ctx.storage.deleteAll();
    this.storeCache = null;
  }

  /** What a fork at `turn` copies: the transcript up to it and that turn's snapshot, if still kept. */
  async exportFork(owner: string | null, turn: number): Promise<ForkData> {
    this.owned(owner);
    const s = this.store;
    if (!Number.isInteger(turn) || turn < 0 || turn > s.lastTurn()) throw notFound(`turn ${turn}`);
    const snap = s.snapshots().find((x) => x.turn === turn) ?? null;
    const bytes = snap ? s.snapshotBytes(snap.id) : null;
    return {
      messages: s.messages(turn),
      turns: s.turns().filter((t) => t.turn <= turn),
      snapshot: snap && bytes ? { turn, fingerprint: snap.fingerprint, tokens: snap.tokens, bytes } : null,
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
    if (data.snapshot) s.importSnapshot(data.snapshot.turn, data.snapshot);
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
          controller.enqueue(line(r.value));
          if (r.value.type === 'done') {
            // committed: the session is free now, whether or not the reader pulls once more
            await turn.return(undefined);
            release();
            controller.close();
            return;
          }
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

  private async startTurn(req: TurnRequest, call: TurnCall, signal: AbortSignal): Promise<AsyncGenerator<TurnEvent>> {
    if (call.mode === 'ephemeral') {
      // nothing stored: turns of unrelated requests may share this object concurrently
      const { engine } = await engineFor(this.env, this.prefix);
      const prepared = prepareTurn(engine, req);
      return runTurn(engine, null, req, { newMessages: [], signal, record: false }, prepared);
    }
    if (this.busy) throw busy();
    let store: SessionStore | null = null;
    let newMessages: ChatMessage[] = [];
    let request = req;
    if (call.mode === 'session') {
      this.owned(call.owner);
      if (req.prompt.kind !== 'chat')
        throw new TurnError({
          status: 400,
          type: 'invalid_request_error',
          code: null,
          param: 'content',
          message: 'a session turn takes a chat message',
        });
      store = this.store;
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
      const { engine } = await engineFor(this.env, this.prefix);
      const prepared = prepareTurn(engine, request); // prompt errors surface before the stream starts
      return runTurn(engine, store, request, { newMessages, signal, record: call.mode === 'session' }, prepared);
    } catch (e) {
      this.busy = false;
      throw e;
    }
  }
}

export interface ForkData {
  messages: StoredMessage[];
  turns: TurnRecord[];
  snapshot: { turn: number; fingerprint: string; tokens: number[]; bytes: Uint8Array } | null;
}
