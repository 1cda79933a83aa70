// A stage's snapshots hot in memory: restoring a session's state from here skips SQLite and deserialization.

import type { HymbaState } from '../../engine/state/state.js';
import { heldBytes } from '../../engine/state/bytes.js';

/** Snapshots kept in memory, least recently used dropped first once over the byte bound. */
export class HotStates {
  /** insertion order is recency: a get moves its entry to the end */
  private readonly map = new Map<string, { state: HymbaState; bytes: number }>();
  private total = 0;
  constructor(private readonly maxBytes: number) {}

  get(key: string): HymbaState | undefined {
    const e = this.map.get(key);
    if (!e) return undefined;
    this.map.delete(key);
    this.map.set(key, e);
    return e.state;
  }

  /** Keep `state`; the newest entry stays even when it alone is over the bound. */
  set(key: string, state: HymbaState): void {
    this.delete(key);
    const bytes = heldBytes(state);
    this.map.set(key, { state, bytes });
    this.total += bytes;
    for (const [k, e] of this.map) {
      if (this.total <= this.maxBytes || k === key) break;
      this.map.delete(k);
      this.total -= e.bytes;
    }
  }

  delete(key: string): void {
    const e = this.map.get(key);
    if (e) {
      this.map.delete(key);
      this.total -= e.bytes;
    }
  }

  get size(): number {
    return this.map.size;
  }
  get bytes(): number {
    return this.total;
  }
}
