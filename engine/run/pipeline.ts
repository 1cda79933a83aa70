// How a turn drives the model's state without knowing where it lives: in this process (LocalPipeline) or
// in stage Durable Objects (durable-objects/session/stage-pipeline.ts). A cursor is one working state; snapshots
// are states stored under a number at turn boundaries.

import type { ForwardResult, HymbaRunner, LogitsWanted } from './runner.js';
import type { HymbaDims } from '../model/config.js';
import type { HymbaState } from '../state/state.js';
import { deserializeState, serializeState } from '../state/codec.js';

/** A working state: its position (meta tokens count) advances as tokens go through it. */
export interface Cursor {
  readonly id: string;
  position: number;
}

export type OpenResult = { ok: true; cursor: Cursor } | { ok: false; reason: string };

export interface StatePipeline {
  /** A cursor at the meta-token prefix (base null) or at a stored snapshot; a missing or corrupt one is not ok. */
  open(base: number | null): Promise<OpenResult>;
  /** Feed text token ids; a failure leaves the cursor unusable (close it), never a stored snapshot changed. */
  forward(c: Cursor, ids: number[], want: LogitsWanted): Promise<ForwardResult>;
  /** A second cursor at the same state. */
  fork(c: Cursor): Promise<Cursor>;
  /** Store the cursor's state as snapshot `id` (the prepare step of a commit); returns its size in bytes. */
  persist(c: Cursor, id: number): Promise<number>;
  /** After a commit: drop every stored snapshot except `keep`. */
  retain(keep: number[]): Promise<void>;
  close(c: Cursor): Promise<void>;
}

/** The shallow copy a cursor works on: runners replace layer arrays, never mutate them. */
export const shareState = (s: HymbaState): HymbaState => ({ position: s.position, layers: s.layers.slice() });

/** Everything in this process: the engine's runner, snapshots as bytes in a map (tests, the CLI). */
export class LocalPipeline implements StatePipeline {
  private readonly cursors = new Map<string, HymbaState>();
  private next = 0;

  constructor(
    private readonly runner: HymbaRunner,
    private readonly dims: HymbaDims,
    private readonly fingerprint: string,
    private readonly prefix: () => HymbaState,
    readonly snapshots = new Map<number, Uint8Array>(),
  ) {}

  private add(state: HymbaState): Cursor {
    const id = `c${this.next++}`;
    this.cursors.set(id, state);
    return { id, position: state.position };
  }

  private state(c: Cursor): HymbaState {
    const s = this.cursors.get(c.id);
    if (!s) throw new Error(`cursor ${c.id} is closed`);
    return s;
  }

  async open(base: number | null): Promise<OpenResult> {
    if (base === null) return { ok: true, cursor: this.add(this.prefix()) };
    const bytes = this.snapshots.get(base);
    if (!bytes) return { ok: false, reason: `snapshot ${base} is not stored` };
    try {
      return { ok: true, cursor: this.add(deserializeState(this.dims, bytes, this.fingerprint)) };
    } catch (e) {
      return { ok: false, reason: e instanceof Error ? e.message : String(e) };
    }
  }

  async forward(c: Cursor, ids: number[], want: LogitsWanted): Promise<ForwardResult> {
    const s = this.state(c);
    const out = await this.runner.forward(s, ids, want);
    c.position = s.position;
    return out;
  }

  async fork(c: Cursor): Promise<Cursor> {
    return this.add(shareState(this.state(c)));
  }

  async persist(c: Cursor, id: number): Promise<number> {
    const bytes = serializeState(this.dims, this.state(c), this.fingerprint);
    this.snapshots.set(id, bytes);
    return bytes.length;
  }

  async retain(keep: number[]): Promise<void> {
    for (const id of [...this.snapshots.keys()]) if (!keep.includes(id)) this.snapshots.delete(id);
  }

  async close(c: Cursor): Promise<void> {
    this.cursors.delete(c.id);
  }
}
