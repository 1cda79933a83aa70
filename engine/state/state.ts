// A session's inference state: per layer conv + SSM state, per KV producer the K/V cache, and the position.
// The layout is typed data derived from the config; the binary snapshot format is defined here too.

import type { HymbaDims } from '../model/config.js';
import { mixerLayers, type StageSpec } from '../model/graph.js';
import { crc32 } from './crc32.js';
import { f16ToF32, f32ToF16 } from '../convert/dtype.js';

export interface LayerState {
  /** [d_conv-1, d_in]: the last inputs u of the causal conv; empty in a mirror entry */
  conv: Float32Array;
  /** [d_in, N]; empty in a mirror entry */
  ssm: Float32Array;
  /** producers only: [kv_heads, kvLen, dqk] and [kv_heads, kvLen, dv]; meta entries first */
  key: Float32Array | null;
  value: Float32Array | null;
  kvLen: number;
}

export interface HymbaState {
  /** absolute position of the next token; meta tokens count, so text starts at M */
  position: number;
  /** indexed by layer; a stage's state holds only its own layers */
  layers: (LayerState | undefined)[];
}

const isProducer = (d: HymbaDims, i: number): boolean => d.layers[i]!.kv.kind === 'producer';

/** The state before any token, meta tokens included (position 0), for layers [first, last). */
export function emptyState(d: HymbaDims, first = 0, last = d.L): HymbaState {
  const layers: (LayerState | undefined)[] = new Array(d.L);
  for (let i = first; i < last; i++) {
    const kv = isProducer(d, i);
    layers[i] = {
      conv: new Float32Array((d.dConv - 1) * d.dIn),
      ssm: new Float32Array(d.dIn * d.dState),
      key: kv ? new Float32Array(0) : null,
      value: kv ? new Float32Array(0) : null,
      kvLen: 0,
    };
  }
  return { position: 0, layers };
}

/**
 * A mirror entry: a stage's own copy of a producer's K/V cache (StageSpec.kvIn), without conv/SSM state
 * (those stay with the producer's mixer). It always equals the producer's entry's key/value.
 */
export const isMirror = (l: LayerState): boolean => l.conv.length === 0 && l.key !== null;

/** The mirror entry of a producer's entry (arrays shared: states replace arrays, never mutate them). */
export function mirrorOf(l: LayerState): LayerState {
  if (!l.key || !l.value) throw new Error('only a KV producer can be mirrored');
  return { conv: EMPTY, ssm: EMPTY, key: l.key, value: l.value, kvLen: l.kvLen };
}
const EMPTY = new Float32Array(0);

/**
 * Stage `spec`'s share of a whole-model state: the entries of the layers whose mixer it holds, and mirror
 * entries of the producers it mirrors (kvIn). A stage's meta-prefix state is this of the full prefix state.
 */
export function stageState(d: HymbaDims, spec: StageSpec, full: HymbaState): HymbaState {
  const layers: (LayerState | undefined)[] = new Array(d.L);
  for (const i of mixerLayers(spec)) {
    const l = full.layers[i];
    if (!l || isMirror(l)) throw new Error(`the state has no layer ${i}`);
    layers[i] = l;
  }
  for (const p of spec.kvIn ?? []) {
    const l = full.layers[p];
    if (!l) throw new Error(`the state has no layer ${p} to mirror`);
    layers[p] = mirrorOf(l);
  }
  return { position: full.position, layers };
}

/** A stage's state before any token (position 0): its mixers' layers and its mirrors. */
export function emptyStageState(d: HymbaDims, spec: StageSpec): HymbaState {
  return stageState(d, spec, emptyState(d));
}

/**
 * The whole-model state of a snapshot held as per-stage slices (`states[k]` is stage `specs[k]`'s share, as
 * stageState makes it): every layer's entry taken from the stage that holds its mixer; mirror entries (copies
 * of producers' K/V) are checked and skipped. Throws StateFormatError unless every layer is present exactly
 * once, every stage holds exactly its own layers and mirrors, and all positions agree. The inverse of
 * splitState; arrays are shared, not copied.
 */
export function mergeStageStates(d: HymbaDims, specs: readonly StageSpec[], states: readonly HymbaState[]): HymbaState {
  if (specs.length !== states.length)
    throw new StateFormatError(`${states.length} stage states for ${specs.length} stages`);
  if (states.length === 0) throw new StateFormatError('no stage states to merge');
  const position = states[0]!.position;
  const layers: (LayerState | undefined)[] = new Array(d.L);
  const mirrors: { stage: number; layer: number; kvLen: number }[] = [];
  specs.forEach((spec, k) => {
    const s = states[k]!;
    if (s.position !== position)
      throw new StateFormatError(`stage ${k} is at position ${s.position}, stage 0 at ${position}`);
    const own = new Set(mixerLayers(spec));
    const mirrored = new Set(spec.kvIn ?? []);
    s.layers.forEach((l, i) => {
      if (l && !own.has(i) && !mirrored.has(i)) throw new StateFormatError(`stage ${k} holds layer ${i}, not its own`);
    });
    for (const i of own) {
      const l = s.layers[i];
      if (!l || isMirror(l)) throw new StateFormatError(`stage ${k} has no layer ${i}`);
      if (layers[i]) throw new StateFormatError(`layer ${i} is held by two stages`);
      layers[i] = l;
    }
    for (const p of mirrored) {
      const l = s.layers[p];
      if (!l || !isMirror(l)) throw new StateFormatError(`stage ${k} has no mirror of layer ${p}`);
      mirrors.push({ stage: k, layer: p, kvLen: l.kvLen });
    }
  });
  for (let i = 0; i < d.L; i++) if (!layers[i]) throw new StateFormatError(`no stage holds layer ${i}`);
  for (const m of mirrors)
    if (layers[m.layer]!.kvLen !== m.kvLen)
      throw new StateFormatError(`stage ${m.stage}'s mirror of layer ${m.layer} differs from the layer`);
  return { position, layers };
}

/** Each stage's share of a whole-model state (stageState per spec): what the stages of a pipeline hold. */
export function splitState(d: HymbaDims, specs: readonly StageSpec[], full: HymbaState): HymbaState[] {
  return specs.map((spec) => stageState(d, spec, full));
}

/**
 * Checks a whole-model state (one that came from outside, e.g. a client's upload): every layer present, none
 * a mirror, conv/SSM sizes as the model's, producers holding kvEntries(d, layer, position) K/V entries and
 * consumers none. Throws StateFormatError naming the first problem.
 */
export function checkWholeState(d: HymbaDims, s: HymbaState): void {
  if (!(Number.isInteger(s.position) && s.position >= 0 && s.position <= d.maxPositions))
    throw new StateFormatError(`position ${s.position} is outside the model's context`);
  for (let i = 0; i < d.L; i++) {
    const l = s.layers[i];
    if (!l) throw new StateFormatError(`layer ${i} is missing`);
    if (isMirror(l)) throw new StateFormatError(`layer ${i} is a mirror entry, not a whole layer`);
    if (l.conv.length !== (d.dConv - 1) * d.dIn || l.ssm.length !== d.dIn * d.dState)
      throw new StateFormatError(`layer ${i} has the wrong conv/SSM size`);
    if (!isProducer(d, i)) {
      if (l.key || l.value || l.kvLen !== 0) throw new StateFormatError(`layer ${i} holds K/V but is no producer`);
      continue;
    }
    const want = kvEntries(d, i, s.position);
    if (l.kvLen !== want) throw new StateFormatError(`layer ${i} holds ${l.kvLen} K/V entries, expected ${want}`);
    if (l.key?.length !== d.kvHeads * want * d.dqk || l.value?.length !== d.kvHeads * want * d.dv)
      throw new StateFormatError(`layer ${i} has the wrong K/V size`);
  }
  if (s.layers.length > d.L) throw new StateFormatError(`the state has more than ${d.L} layers`);
}

export function cloneState(s: HymbaState): HymbaState {
  return {
    position: s.position,
    layers: s.layers.map((l) =>
      l
        ? {
            conv: l.conv.slice(),
            ssm: l.ssm.slice(),
            key: l.key ? l.key.slice() : null,
            value: l.value ? l.value.slice() : null,
            kvLen: l.kvLen,
          }
        : undefined,
    ),
  };
}

/** K/V entries a producer keeps after `position` tokens: all in global layers, meta + last W in sliding ones. */
export function kvEntries(d: HymbaDims, layer: number, position: number): number {
  if (d.layers[layer]!.attention === 'global') return position;
  return Math.min(position, d.M) + Math.min(Math.max(position - d.M, 0), d.W);
}

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
 * the accounting of hymba.md (global K/V grow, sliding K/V keep M + W entries, consumers store nothing).
 */
export function stateBytes(d: HymbaDims, tokens: number, dtype: StateDtype = 'f16'): StateBytes {
  const e = BYTES[dtype];
  const perEntry = d.kvHeads * (d.dqk + d.dv) * e;
  let globalKv = 0;
  let slidingKv = 0;
  for (let i = 0; i < d.L; i++) {
    if (!isProducer(d, i)) continue;
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

// ---- binary snapshot format ----
// "HYMBASTA" | u32 version | u32 header length | header JSON | pad to 4 | tensors | u32 CRC-32 of all before.

const MAGIC = 'HYMBASTA';
export const STATE_FORMAT_VERSION = 1;

export class StateFormatError extends Error {
  constructor(message: string) {
    super(`state snapshot rejected: ${message}`);
    this.name = 'StateFormatError';
  }
}

/** A well-formed snapshot of another model (its header names another fingerprint). */
export class StateFingerprintError extends StateFormatError {
  constructor(
    readonly found: string,
    readonly expected: string,
  ) {
    super(`it belongs to model ${found}, not ${expected}`);
    this.name = 'StateFingerprintError';
  }
}

interface SnapshotHeader {
  fingerprint: string;
  position: number;
  kvDtype: 'f32' | 'f16';
  dims: { dIn: number; dState: number; dConv: number; kvHeads: number; dqk: number; dv: number };
  /** kvOnly: a mirror entry (K/V, no conv/SSM); absent in older snapshots */
  layers: { index: number; kvLen: number; kvOnly?: true }[];
}

const shapeOf = (d: HymbaDims): SnapshotHeader['dims'] => ({
  dIn: d.dIn,
  dState: d.dState,
  dConv: d.dConv,
  kvHeads: d.kvHeads,
  dqk: d.dqk,
  dv: d.dv,
});

export function serializeState(
  d: HymbaDims,
  s: HymbaState,
  fingerprint: string,
  kvDtype: 'f32' | 'f16' = 'f32',
): Uint8Array {
  const present = s.layers.flatMap((l, index) => (l ? [{ index, l }] : []));
  const header: SnapshotHeader = {
    fingerprint,
    position: s.position,
    kvDtype,
    dims: shapeOf(d),
    layers: present.map(({ index, l }) =>
      isMirror(l) ? { index, kvLen: l.kvLen, kvOnly: true } : { index, kvLen: l.kvLen },
    ),
  };
  const headerBytes = new TextEncoder().encode(JSON.stringify(header));
  const parts: Uint8Array[] = [];
  const asBytes = (a: Float32Array | Uint16Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  for (const { l } of present) {
    parts.push(asBytes(l.conv), asBytes(l.ssm));
    for (const kv of [l.key, l.value]) if (kv) parts.push(asBytes(kvDtype === 'f16' ? f32ToF16(kv) : kv));
  }
  const start = align4(16 + headerBytes.length);
  const total = start + parts.reduce((n, p) => n + align4(p.length), 0) + 4;
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  out.set(new TextEncoder().encode(MAGIC), 0);
  view.setUint32(8, STATE_FORMAT_VERSION, true);
  view.setUint32(12, headerBytes.length, true);
  out.set(headerBytes, 16);
  let o = start;
  for (const p of parts) {
    out.set(p, o);
    o += align4(p.length);
  }
  view.setUint32(o, crc32(out.subarray(0, o)), true);
  return out;
}

const align4 = (n: number): number => Math.ceil(n / 4) * 4;

export function deserializeState(d: HymbaDims, bytes: Uint8Array, fingerprint: string): HymbaState {
  if (bytes.length < 20) throw new StateFormatError(`${bytes.length} bytes is too short`);
  if (new TextDecoder().decode(bytes.subarray(0, 8)) !== MAGIC) throw new StateFormatError('bad magic');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(8, true);
  if (version !== STATE_FORMAT_VERSION) throw new StateFormatError(`format version ${version} is not supported`);
  const end = bytes.length - 4;
  if (crc32(bytes.subarray(0, end)) !== view.getUint32(end, true)) throw new StateFormatError('checksum mismatch');
  const headerLen = view.getUint32(12, true);
  let header: SnapshotHeader;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(16, 16 + headerLen))) as SnapshotHeader;
  } catch {
    throw new StateFormatError('unreadable header');
  }
  if (header.fingerprint !== fingerprint) throw new StateFingerprintError(String(header.fingerprint), fingerprint);
  if (JSON.stringify(header.dims) !== JSON.stringify(shapeOf(d))) throw new StateFormatError('layout differs');
  const state: HymbaState = { position: header.position, layers: new Array(d.L) };
  let o = align4(16 + headerLen);
  const take = (count: number, dtype: 'f32' | 'f16'): Float32Array => {
    const n = count * (dtype === 'f32' ? 4 : 2);
    if (o + n > end) throw new StateFormatError('truncated tensor data');
    const copy = new Uint8Array(bytes.subarray(o, o + n)); // an aligned copy (a Node Buffer's slice would be a view)
    o += align4(n);
    return dtype === 'f32' ? new Float32Array(copy.buffer) : f16ToF32(new Uint16Array(copy.buffer));
  };
  if (!Array.isArray(header.layers)) throw new StateFormatError('unreadable header');
  for (const { index, kvLen, kvOnly } of header.layers) {
    if (!(index >= 0 && index < d.L)) throw new StateFormatError(`layer ${index} is outside the model`);
    if (state.layers[index]) throw new StateFormatError(`layer ${index} appears twice`);
    const producer = isProducer(d, index);
    if (producer && kvLen !== kvEntries(d, index, header.position))
      throw new StateFormatError(
        `layer ${index} holds ${kvLen} K/V entries, expected ${kvEntries(d, index, header.position)}`,
      );
    if (kvOnly && !producer) throw new StateFormatError(`layer ${index} is no KV producer and cannot be mirrored`);
    state.layers[index] = {
      conv: kvOnly ? new Float32Array(0) : take((d.dConv - 1) * d.dIn, 'f32'),
      ssm: kvOnly ? new Float32Array(0) : take(d.dIn * d.dState, 'f32'),
      key: producer ? take(d.kvHeads * kvLen * d.dqk, header.kvDtype) : null,
      value: producer ? take(d.kvHeads * kvLen * d.dv, header.kvDtype) : null,
      kvLen: producer ? kvLen : 0,
    };
  }
  if (o !== end) throw new StateFormatError('trailing bytes after the tensors');
  return state;
}
