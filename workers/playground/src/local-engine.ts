// The in-browser engine: the same engine/ code the server runs (bundled by vite), on onnxruntime-web's WebGPU
// EP when the browser has an adapter, else its WASM EP. Model files come from the Worker
// (GET /v1/model/files/:name), ORT's WASM binary from our own assets (vite.config.ts). A turn goes through
// engine/serve/turn.ts `runTurn`, exactly as a SessionDO runs it: the same chat template and tokenizer, the
// same snapshot restore and the same canonical state after the reply, so a session continued here stays
// token-identical (greedy) to the same session continued on the server.
//
// Handoff (docs/browser.md): "continue here" downloads GET /v1/sessions/:id/snapshot (+ /meta), checks it
// against the local model's fingerprint and checksum, and stores it as the local session's snapshot: the next
// turn resumes from it (cached tokens = meta.tokens.length). "Send back" uploads the newest local snapshot with
// the messages of the local turns (POST /v1/sessions/:id/snapshot); the edge session then continues from it.

import { HymbaEngine, type ModelSource } from '../../../engine/run/loaded-model.js';
import { initOrt, ort, ortExecutionProviders } from '../../../engine/run/ort.js';
import { deserializeState, serializeState } from '../../../engine/state/codec.js';
import type { ChatMessage as EngineMessage } from '../../../engine/text/chat-template.js';
import type { LocalPipeline } from '../../../engine/run/pipeline.js';
import { runTurn } from '../../../engine/serve/turn.js';
import type { TurnRequest } from '../../../engine/serve/protocol.js';
import type { CommitTurn, NewSnapshot, TurnStore } from '../../../engine/serve/turn-store.js';
import type { Api, ToolCall } from './api.js';
import type { Engine, TurnEvent, TurnInput } from './engine.js';

export type ExecutionProvider = 'webgpu' | 'wasm';

/** Numbers of the last local turn and of the last handoff, for the page and its tests. */
export interface LocalTurnReport {
  ids: number[];
  text: string;
  promptTokens: number;
  cachedTokens: number;
  completionTokens: number;
  /** decode rate: tokens after the first / time after the first */
  decodeTokensPerSecond: number | null;
  ms: number;
}

export interface HandoffReport {
  direction: 'download' | 'upload';
  bytes: number;
  tokens: number;
  ms: number;
  turn: number;
}

interface RuntimeManifest {
  ort: string;
  wasm: string;
  bytes: number;
  parts: string[];
}

/** The EP to use: `?ep=wasm|webgpu` in the page URL, else WebGPU when an adapter is offered, else WASM. */
export async function chooseExecutionProvider(): Promise<ExecutionProvider> {
  const asked = new URLSearchParams(location.search).get('ep');
  if (asked === 'wasm') return 'wasm';
  const gpu = (navigator as Navigator & { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
  const adapter = gpu ? await gpu.requestAdapter().catch(() => null) : null;
  if (asked === 'webgpu' && !adapter)
    throw new Error('WebGPU was asked for (?ep=webgpu) but this browser has no adapter');
  return adapter ? 'webgpu' : 'wasm';
}

/** ORT's WASM binary, from the parts vite.config.ts put under /ort/. */
async function fetchOrtBinary(): Promise<Uint8Array> {
  const res = await fetch('/ort/runtime.json');
  if (!res.ok) throw new Error(`the ONNX Runtime files are not served (/ort/runtime.json: ${res.status})`);
  const rt = (await res.json()) as RuntimeManifest;
  const parts = await Promise.all(
    rt.parts.map(async (p) => {
      const r = await fetch(`/${p}`);
      if (!r.ok) throw new Error(`/${p}: ${r.status}`);
      return new Uint8Array(await r.arrayBuffer());
    }),
  );
  const out = new Uint8Array(rt.bytes);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  if (o !== rt.bytes) throw new Error(`the ONNX Runtime binary is ${o} bytes, expected ${rt.bytes}`);
  return out;
}

/** The served model's files through the Worker (the API key when one is set). */
function httpModelSource(api: Api): ModelSource {
  const get = async (name: string): Promise<Response | null> => {
    try {
      return await api.send('GET', `/v1/model/files/${encodeURIComponent(name)}`);
    } catch (e) {
      if ((e as { status?: number }).status === 404) return null;
      throw e;
    }
  };
  return {
    readText: async (name) => (await get(name))?.text() ?? null,
    readBytes: async (name) => {
      const res = await get(name);
      return res ? new Uint8Array(await res.arrayBuffer()) : null;
    },
  };
}

/** A stored local state: the bytes are in the pipeline; `turn`: the session turn it is the state after. */
type PageSnapshot = NewSnapshot & { turn: number };

/**
 * A local session's TurnStore, in memory: the snapshot index (the bytes are in the pipeline) and the turn
 * counter; the transcript is the LocalSession's. Commits never fail here.
 */
class PageStore implements TurnStore {
  snaps: PageSnapshot[] = [];
  turn: number;
  private next = 1;

  constructor(baseTurn: number) {
    this.turn = baseTurn;
  }

  snapshots(): PageSnapshot[] {
    return [...this.snaps];
  }

  allocateSnapshotId(): number {
    return this.next++;
  }

  deleteSnapshot(id: number): void {
    this.snaps = this.snaps.filter((s) => s.id !== id);
  }

  addSnapshot(s: Omit<PageSnapshot, 'id'>): number {
    const id = this.allocateSnapshotId();
    this.snaps.unshift({ id, ...s });
    return id;
  }

  commitTurn(c: CommitTurn): { keep: number[] } {
    const turn = ++this.turn;
    if (c.snapshot) this.snaps.unshift({ ...c.snapshot, turn });
    this.snaps = this.snaps.slice(0, c.keepSnapshots);
    return { keep: this.snaps.map((s) => s.id) };
  }
}

/** A server session continued in this browser. */
interface LocalSession {
  /** the server session's last turn when its state came here */
  baseTurn: number;
  /** the conversation up to baseTurn (system message included) */
  history: EngineMessage[];
  /** messages of the turns run here since (each turn: the user message, then the reply) */
  added: EngineMessage[];
  store: PageStore;
  pipeline: LocalPipeline;
}

export class LocalEngine implements Engine {
  readonly id = 'browser';
  private readonly sessions = new Map<string, LocalSession>();
  lastTurn: LocalTurnReport | null = null;
  lastHandoff: HandoffReport | null = null;
  /** test hook: flip one byte of the next downloaded snapshot before it is checked */
  tamperNextSnapshot = false;

  private constructor(
    private readonly api: Api,
    readonly engine: HymbaEngine,
    readonly ep: ExecutionProvider,
    readonly loadMs: number,
  ) {}

  static async load(api: Api, ep: ExecutionProvider): Promise<LocalEngine> {
    const t0 = performance.now();
    ort.env.logLevel = 'error';
    initOrt({
      wasmBinary: await fetchOrtBinary(),
      executionProviders: [ep],
      // not the WebGPU EP's "some nodes were not assigned" warning (shape ops stay on the CPU by design)
      logSeverityLevel: 3,
    });
    const engine = await HymbaEngine.load(httpModelSource(api));
    if (ortExecutionProviders()[0] !== ep)
      throw new Error(`ONNX Runtime was already set up for ${ortExecutionProviders()[0]}`);
    return new LocalEngine(api, engine, ep, performance.now() - t0);
  }

  get fingerprint(): string {
    return this.engine.fingerprint;
  }

  /** whether `sessionId` is continued here, and how many local turns are not sent back */
  localState(sessionId: string): { baseTurn: number; localTurns: number } | null {
    const s = this.sessions.get(sessionId);
    return s ? { baseTurn: s.baseTurn, localTurns: s.store.turn - s.baseTurn } : null;
  }

  forget(sessionId: string): void {
    this.sessions.delete(sessionId);
  }

  private newSession(baseTurn: number, history: EngineMessage[]): LocalSession {
    return { baseTurn, history, added: [], store: new PageStore(baseTurn), pipeline: this.engine.localPipeline() };
  }

  /** "Continue here": the session's newest state from the server, checked, as the local session's snapshot. */
  async continueHere(sessionId: string): Promise<HandoffReport> {
    const t0 = performance.now();
    const path = `/v1/sessions/${encodeURIComponent(sessionId)}/snapshot`;
    const [metaRes, stateRes] = await Promise.all([this.api.send('GET', `${path}/meta`), this.api.send('GET', path)]);
    const meta = (await metaRes.json()) as {
      fingerprint: string;
      turn: number;
      position: number;
      tokens: number[];
      messages: (EngineMessage & { turn: number })[];
    };
    const bytes = new Uint8Array(await stateRes.arrayBuffer());
    if (this.tamperNextSnapshot) {
      this.tamperNextSnapshot = false;
      bytes[bytes.length >> 1]! ^= 0x5a;
    }
    if (meta.fingerprint !== this.fingerprint)
      throw new Error(
        `the session's state belongs to model ${meta.fingerprint}, this browser runs ${this.fingerprint}`,
      );
    // the checksum and the fingerprint in the snapshot itself (a StateFormatError names what is wrong)
    const state = deserializeState(this.engine.model.dims, bytes, this.fingerprint);
    const M = this.engine.model.dims.M;
    if (state.position !== M + meta.tokens.length || state.position !== meta.position)
      throw new Error(`the snapshot is at position ${state.position}, its meta says ${meta.position}`);
    const headerTurn = Number(stateRes.headers.get('x-hymba-turn'));
    if (headerTurn !== meta.turn)
      throw new Error(`the snapshot is of turn ${headerTurn}, its meta of turn ${meta.turn}`);
    const s = this.newSession(
      meta.turn,
      meta.messages.map(({ turn: _turn, ...m }) => m),
    );
    const id = s.store.addSnapshot({
      fingerprint: this.fingerprint,
      tokens: meta.tokens,
      bytes: bytes.length,
      turn: meta.turn,
    });
    s.pipeline.snapshots.set(id, bytes);
    this.sessions.set(sessionId, s);
    this.lastHandoff = {
      direction: 'download',
      bytes: bytes.length,
      tokens: meta.tokens.length,
      ms: performance.now() - t0,
      turn: meta.turn,
    };
    return this.lastHandoff;
  }

  /** "Send back": the newest local state and the local turns' messages to the server session. */
  async sendBack(sessionId: string): Promise<HandoffReport & { serverTurn: number }> {
    const s = this.sessions.get(sessionId);
    if (!s || s.added.length === 0) throw new Error('no turns ran in this browser since the session came here');
    const snap = s.store.snaps[0];
    const bytes = snap ? s.pipeline.snapshots.get(snap.id) : undefined;
    if (!snap || !bytes || snap.turn !== s.store.turn) throw new Error('the local state of the last turn is missing');
    // re-encode through the engine (the bytes a LocalPipeline persisted are already this format; this checks them)
    const state = deserializeState(this.engine.model.dims, bytes, this.fingerprint);
    const upload = serializeState(this.engine.model.dims, state, this.fingerprint);
    const t0 = performance.now();
    const form = new FormData();
    form.append(
      'meta',
      JSON.stringify({
        base_turn: s.baseTurn,
        messages: s.added.map((m) => (m.tool_calls ? m : { role: m.role, content: m.content })),
        tokens: snap.tokens,
      }),
    );
    form.append('state', new Blob([upload.slice().buffer], { type: 'application/octet-stream' }), 'state.bin');
    const res = await this.api.send('POST', `/v1/sessions/${encodeURIComponent(sessionId)}/snapshot`, form);
    const body = (await res.json()) as { turn: number; tokens: number };
    this.sessions.delete(sessionId); // the server has it now; the next local turn starts from its state again
    this.lastHandoff = {
      direction: 'upload',
      bytes: upload.length,
      tokens: snap.tokens.length,
      ms: performance.now() - t0,
      turn: body.turn,
    };
    return { ...this.lastHandoff, serverTurn: body.turn };
  }

  storesTurn(): boolean {
    return false;
  }

  async *turn(input: TurnInput, signal: AbortSignal): AsyncGenerator<TurnEvent> {
    if (input.tools !== null) throw new Error('the in-browser engine runs plain chat turns: clear the tools');
    let s = this.sessions.get(input.sessionId);
    if (!s) {
      // not handed over: start from the transcript (recomputed here, nothing cached)
      const info = await this.api.session(input.sessionId);
      const last = info.turns.at(-1)?.turn ?? 0;
      s = this.newSession(
        last,
        info.messages.map(({ turn: _turn, role, content }) => ({ role, content: content ?? '' })),
      );
      this.sessions.set(input.sessionId, s);
    }
    const user: EngineMessage = { role: 'user', content: input.content };
    const req: TurnRequest = {
      prompt: { kind: 'chat', messages: [...s.history, ...s.added, user] },
      maxTokens: input.maxTokens,
      temperature: input.temperature,
      stop: [],
    };
    const t0 = performance.now();
    let tFirst = 0;
    let tLast = 0;
    const ids: number[] = [];
    let text = '';
    let prompt = 0;
    let cached = 0;
    for await (const ev of runTurn(this.engine, s.pipeline, s.store, req, {
      newMessages: [user],
      record: true,
      signal,
    })) {
      if (ev.type === 'start') {
        prompt = ev.promptTokens;
        cached = ev.cachedTokens;
      } else if (ev.type === 'token') {
        tLast = performance.now();
        if (ids.length === 0) tFirst = tLast;
        ids.push(ev.id);
        text += ev.text;
        if (ev.text) yield { type: 'text', text: ev.text };
      } else if (ev.type === 'tool_call') {
        const call: ToolCall = {
          id: ev.id,
          type: 'function',
          function: { name: ev.name, arguments: ev.arguments },
        };
        yield { type: 'tool_calls', calls: [call] };
      } else if (ev.type === 'done') {
        if (ev.tail) yield { type: 'text', text: ev.tail };
        text += ev.tail;
        s.added.push(user, { role: 'assistant', content: text });
        this.lastTurn = {
          ids,
          text,
          promptTokens: prompt,
          cachedTokens: cached,
          completionTokens: ev.completionTokens,
          decodeTokensPerSecond: ids.length > 1 && tLast > tFirst ? ((ids.length - 1) * 1000) / (tLast - tFirst) : null,
          ms: performance.now() - t0,
        };
        yield {
          type: 'usage',
          usage: {
            prompt_tokens: ev.promptTokens,
            completion_tokens: ev.completionTokens,
            total_tokens: ev.promptTokens + ev.completionTokens,
            prompt_tokens_details: { cached_tokens: ev.cachedTokens },
          },
        };
        yield { type: 'finish', reason: ev.finishReason };
      }
    }
  }
}
