// StageDO: one pipeline stage of one model replica, a SQLite-backed Durable Object. It holds its layers' ONNX
// session (loaded once per isolate from the model store: ./stage-load.ts) and, per conversation, its layers'
// slice of the state: working cursors while a turn runs, snapshots hot in memory (./hot-states.ts) and in
// SQLite (./store.ts) under the SessionDO's snapshot ids. Decode steps of different sessions that wait here
// together run as one batched ONNX run. The SessionDO drives the stages (durable-objects/session/stage-pipeline.ts).

import { DurableObject } from 'cloudflare:workers';
import { DecodeBatcher, type BatchStats } from '../../engine/run/decode-batcher.js';
import type { LoadedStage } from '../../engine/run/loaded-model.js';
import { shareState } from '../../engine/run/pipeline.js';
import type { StageInput, StageOutput } from '../../engine/run/stage-runner.js';
import type { HymbaState } from '../../engine/state/state.js';
import { deserializeState, serializeState } from '../../engine/state/codec.js';
import type { Env } from '../env.js';
import { settingsOf } from '../settings.js';
import { HotStates } from './hot-states.js';
import { stageFor, type StageAddress, type StageLoadInfo } from './stage-load.js';
import { StageStore } from './store.js';

export interface StageStats {
  batch: BatchStats;
  cursors: number;
  hotSnapshots: number;
  hotBytes: number;
}

interface Step {
  state: HymbaState;
  input: StageInput;
}

/** A working state idle this long belongs to a turn that is gone. */
const CURSOR_IDLE_MS = 5 * 60_000;

export class StageDO extends DurableObject<Env> {
  private storeCache: StageStore | null = null;
  private readonly cursors = new Map<string, { state: HymbaState; used: number }>();
  private readonly hot = new HotStates(settingsOf(this.env).stageHotStateMb * 2 ** 20);
  private batcher: DecodeBatcher<Step, StageOutput> | null = null;

  private get store(): StageStore {
    this.storeCache ??= new StageStore(this.ctx.storage.sql, this.ctx.storage);
    return this.storeCache;
  }

  /** Load this stage (once per isolate) and describe the load. */
  async load(addr: StageAddress): Promise<StageLoadInfo> {
    return (await stageFor(this.env, addr)).info;
  }

  /** Start a working state: the meta prefix (base null) or a stored snapshot; not ok if it cannot be restored. */
  async open(
    addr: StageAddress,
    session: string,
    cursor: string,
    base: number | null,
  ): Promise<{ ok: true; position: number } | { ok: false; reason: string }> {
    const { stage } = await stageFor(this.env, addr);
    this.sweep();
    let state: HymbaState | undefined;
    if (base === null) state = stage.prefix;
    else {
      state = this.hot.get(`${session}#${base}`);
      if (!state) {
        const bytes = this.store.get(session, base);
        if (!bytes) return { ok: false, reason: `stage ${addr.stage} has no snapshot ${base}` };
        try {
          state = deserializeState(stage.model.dims, bytes, stage.manifest.fingerprint);
        } catch (e) {
          return { ok: false, reason: `stage ${addr.stage}: ${e instanceof Error ? e.message : String(e)}` };
        }
        this.hot.set(`${session}#${base}`, state);
      }
    }
    this.cursors.set(`${session}/${cursor}`, { state: shareState(state), used: Date.now() });
    return { ok: true, position: state.position };
  }

  async fork(session: string, from: string, to: string): Promise<void> {
    this.cursors.set(`${session}/${to}`, { state: shareState(this.cursor(session, from)), used: Date.now() });
  }

  /**
   * Run new tokens through this stage's layers for one cursor at `position` (a guard against steps arriving
   * out of order). Single-token steps queue for batching with other sessions' steps.
   */
  async run(
    addr: StageAddress,
    session: string,
    cursor: string,
    position: number,
    input: StageInput,
    logitsFrom: number,
  ): Promise<StageOutput> {
    const { stage } = await stageFor(this.env, addr);
    const state = this.cursor(session, cursor);
    if (state.position !== position)
      throw new Error(`stage ${addr.stage}: cursor is at position ${state.position}, the step is for ${position}`);
    const T = 'ids' in input ? input.ids.length : input.hidden.length / stage.model.dims.H;
    if (T === 1 && settingsOf(this.env).stageMaxBatch > 1) return this.batch(stage).submit({ state, input });
    return stage.runner.run(state, input, logitsFrom);
  }

  /** Store the cursor's state as snapshot `id` (before the SessionDO commits it). */
  async persist(addr: StageAddress, session: string, cursor: string, id: number): Promise<number> {
    const { stage } = await stageFor(this.env, addr);
    const state = shareState(this.cursor(session, cursor));
    const bytes = serializeState(stage.model.dims, state, stage.manifest.fingerprint);
    this.store.put(session, id, bytes);
    this.hot.set(`${session}#${id}`, state);
    return bytes.length;
  }

  /** After the SessionDO's commit: drop the session's other snapshots. */
  async retain(session: string, keep: number[]): Promise<void> {
    for (const id of this.store.retain(session, keep)) this.hot.delete(`${session}#${id}`);
  }

  async close(session: string, cursor: string): Promise<void> {
    this.cursors.delete(`${session}/${cursor}`);
  }

  /** A stored slice's bytes (forks copy them between sessions, possibly across replicas). */
  async exportSlice(session: string, id: number): Promise<Uint8Array | null> {
    return this.store.get(session, id);
  }

  async importSlice(session: string, id: number, bytes: Uint8Array): Promise<void> {
    this.store.put(session, id, bytes);
  }

  /** The snapshot ids stored for a session (tests, operations). */
  async snapshotIds(session: string): Promise<number[]> {
    return this.store.ids(session);
  }

  async stats(): Promise<StageStats> {
    return {
      batch: this.batcher?.stats ?? { runs: 0, steps: 0, largest: 0 },
      cursors: this.cursors.size,
      hotSnapshots: this.hot.size,
      hotBytes: this.hot.bytes,
    };
  }

  private cursor(session: string, cursor: string): HymbaState {
    const c = this.cursors.get(`${session}/${cursor}`);
    if (!c) throw new Error(`no working state ${cursor} for this session here (evicted?)`);
    c.used = Date.now();
    return c.state;
  }

  private batch(stage: LoadedStage): DecodeBatcher<Step, StageOutput> {
    const { stageMaxBatch, stageBatchWaitMs } = settingsOf(this.env);
    this.batcher ??= new DecodeBatcher<Step, StageOutput>((steps) => stage.runner.runBatch(steps), {
      maxBatch: stageMaxBatch,
      maxWaitMs: stageBatchWaitMs,
    });
    return this.batcher;
  }

  private sweep(): void {
    const now = Date.now();
    for (const [k, c] of this.cursors) if (now - c.used > CURSOR_IDLE_MS) this.cursors.delete(k);
  }
}
