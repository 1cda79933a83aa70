// What a session's state costs in bytes, as docs/model.md accounts it (docs and benches compare against it).

import type { HymbaDims } from '../model/config.js';
import { holdsKv, holdsMixer, kvEntries, mixerKind, type HymbaState } from './state.js';

export type StateDtype = 'f32' | 'f16' | 'bf16';
const BYTES: Record<StateDtype, number> = { f32: 4, f16: 2, bf16: 2 };

export interface StateBytes {
  globalKv: number;
  slidingKv: number;
  ssm: number;
  conv: number;
  total: number;
}

/**
 * Bytes of a session's state after `tokens` text tokens (meta tokens added), with every tensor in `dtype`:
 * the accounting of docs/model.md (global K/V grow, sliding K/V keep M + W entries, consumers store nothing).
 */
export function stateBytes(d: HymbaDims, tokens: number, dtype: StateDtype = 'f16'): StateBytes {
  const e = BYTES[dtype];
  const perEntry = d.kvHeads * (d.dqk + d.dv) * e;
  let globalKv = 0;
  let slidingKv = 0;
  for (let i = 0; i < d.L; i++) {
    if (mixerKind(d, i) !== 'producer') continue;
    const bytes = kvEntries(d, i, d.M + tokens) * perEntry;
    if (d.layers[i]!.attention === 'global') globalKv += bytes;
    else slidingKv += bytes;
  }
  const ssm = d.L * d.dIn * d.dState * e;
  const conv = d.L * d.dIn * (d.dConv - 1) * e;
  return { globalKv, slidingKv, ssm, conv, total: globalKv + slidingKv + ssm + conv };
}

/** A Llama-style transformer of the same width and depth with full K/V in every layer (for comparison). */
export function fullKvTransformerBytes(d: HymbaDims, tokens: number, dtype: StateDtype = 'f16'): number {
  return d.L * tokens * d.kvHeads * 2 * d.dqk * BYTES[dtype];
}

/** Bytes a state's arrays take in memory now (f32 throughout): what a stage's in-memory cache accounts. */
export function heldBytes(s: HymbaState): number {
  let n = 0;
  for (const l of s.layers) {
    if (l && holdsMixer(l)) n += l.conv.byteLength + l.ssm.byteLength;
    if (l && holdsKv(l)) n += l.key.byteLength + l.value.byteLength;
  }
  return n;
}
