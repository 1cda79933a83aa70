// A session's inference state: per layer the mixer's conv + SSM state, per KV producer its K/V cache, and the
// position. Which layers produce K/V comes from the config (HymbaDims.layers[i].kv); each entry says which of
// the three kinds it is, so nothing is inferred from empty or null arrays.
// Around it: codec.ts (the binary snapshot), merge.ts (per-stage slices), bytes.ts (the byte accounting).

import type { HymbaDims } from '../model/config.js';

/** A K/V cache: [kv_heads, kvLen, dqk] keys (rotated) and [kv_heads, kvLen, dv] values, meta entries first. */
export interface KvCache {
  readonly key: Float32Array;
  readonly value: Float32Array;
  readonly kvLen: number;
}

/** What a layer's mixer carries from token to token besides attention. */
export interface MixerState {
  /** [d_conv-1, d_in]: the last inputs u of the causal conv */
  readonly conv: Float32Array;
  /** [d_in, N] */
  readonly ssm: Float32Array;
}

/** A layer whose attention computes its own K/V (a KV producer): its mixer's state and its cache. */
export interface ProducerState extends MixerState, KvCache {
  readonly kind: 'producer';
}

/** A layer whose attention reads its producer's cache (a KV consumer): it stores no K/V of its own. */
export interface ConsumerState extends MixerState {
  readonly kind: 'consumer';
}

/**
 * A mirror entry: a stage's own copy of a producer's K/V cache (StageSpec.kvIn), without conv/SSM state (that
 * stays with the producer's mixer, in another stage). It always equals the producer's entry's cache.
 */
export interface MirrorState extends KvCache {
  readonly kind: 'mirror';
}

export type LayerState = ProducerState | ConsumerState | MirrorState;
/** The entry of a layer whose mixer this state holds. */
export type MixerLayerState = ProducerState | ConsumerState;
/** An entry that holds a K/V cache. */
export type KvLayerState = ProducerState | MirrorState;
export type LayerKind = LayerState['kind'];

export interface HymbaState {
  /** absolute position of the next token; meta tokens count, so text starts at M */
  position: number;
  /** indexed by layer; a stage's state holds only its own layers and mirrors */
  layers: (LayerState | undefined)[];
}

/** The kind of layer i's own entry, as the config says: 'producer' or 'consumer'. */
export const mixerKind = (d: HymbaDims, i: number): MixerLayerState['kind'] => d.layers[i]!.kv.kind;

export const isMirror = (l: LayerState): l is MirrorState => l.kind === 'mirror';
export const holdsMixer = (l: LayerState): l is MixerLayerState => l.kind !== 'mirror';
export const holdsKv = (l: LayerState): l is KvLayerState => l.kind !== 'consumer';

/** Layer i's entry before any token: zero conv/SSM state and, for a producer, an empty cache. */
export function emptyLayer(d: HymbaDims, i: number): MixerLayerState {
  const conv = new Float32Array((d.dConv - 1) * d.dIn);
  const ssm = new Float32Array(d.dIn * d.dState);
  return mixerKind(d, i) === 'producer'
    ? { kind: 'producer', conv, ssm, key: new Float32Array(0), value: new Float32Array(0), kvLen: 0 }
    : { kind: 'consumer', conv, ssm };
}

/** The state before any token, meta tokens included (position 0), for layers [first, last). */
export function emptyState(d: HymbaDims, first = 0, last = d.L): HymbaState {
  const layers: (LayerState | undefined)[] = new Array(d.L);
  for (let i = first; i < last; i++) layers[i] = emptyLayer(d, i);
  return { position: 0, layers };
}

/** The mirror entry of a producer's (or another mirror's) cache: arrays shared, as states never mutate them. */
export function mirrorOf(l: LayerState): MirrorState {
  if (!holdsKv(l)) throw new Error('only a KV producer can be mirrored');
  return { kind: 'mirror', key: l.key, value: l.value, kvLen: l.kvLen };
}

/** Layer i's own entry in `state` (its mixer's), or an error naming what is there instead. */
export function mixerLayer(state: HymbaState, i: number): MixerLayerState {
  const l = state.layers[i];
  if (!l) throw new Error(`state has no layer ${i}`);
  if (!holdsMixer(l)) throw new Error(`state holds only a mirror of layer ${i}, not its mixer`);
  return l;
}

/** The K/V cache of layer i in `state` (a producer's entry or a mirror), or an error. */
export function kvLayer(state: HymbaState, i: number): KvLayerState {
  const l = state.layers[i];
  if (!l) throw new Error(`state has no layer ${i}`);
  if (!holdsKv(l)) throw new Error(`layer ${i} is a KV consumer and holds no K/V`);
  return l;
}

/** A deep copy (every array copied). */
export function cloneState(s: HymbaState): HymbaState {
  return { position: s.position, layers: s.layers.map((l) => (l ? cloneLayer(l) : undefined)) };
}

function cloneLayer(l: LayerState): LayerState {
  switch (l.kind) {
    case 'producer':
      return { ...l, conv: l.conv.slice(), ssm: l.ssm.slice(), key: l.key.slice(), value: l.value.slice() };
    case 'consumer':
      return { ...l, conv: l.conv.slice(), ssm: l.ssm.slice() };
    case 'mirror':
      return { ...l, key: l.key.slice(), value: l.value.slice() };
  }
}

/** K/V entries a producer keeps after `position` tokens: all in global layers, meta + last W in sliding ones. */
export function kvEntries(d: HymbaDims, layer: number, position: number): number {
  if (d.layers[layer]!.attention === 'global') return position;
  return Math.min(position, d.M) + Math.min(Math.max(position - d.M, 0), d.W);
}
