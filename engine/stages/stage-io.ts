// A stage graph's inputs and outputs, named and shaped in one place: the builder (stage-graph.ts) declares
// them, the runner (engine/run/stage-runner.ts) feeds and reads them.
//
// Symbolic dims: B sessions, T new tokens per session, R = B*T rows (logits: B * (T - logits_from)),
// S<i> the entries of producer i's cache (the longest session's; the rest is right padding).

import type { HymbaDims } from '../model/config.js';
import { DataType, type DataTypeId, type Dim } from '../onnx/proto.js';
import { givesLogits, mixerLayers, sliceRange, takesIds, type StageSpec } from './stage-spec.js';

/** One graph input or output. */
export interface TensorIO {
  name: string;
  shape: Dim[];
  dataType: DataTypeId;
}

/** A state tensor before the run (a graph input) and after it (a graph output). */
export interface StateIO {
  input: TensorIO;
  output: TensorIO;
}

/**
 * A producer's K/V: the cache so far, past [B, kv, S, d] (an input), and this run's new entries, fresh
 * [B, kv, T, d] (rotated keys): an output where the producer's mixer is in the stage (the caller appends them
 * to the cache), an input where the stage mirrors the producer (the producer's stage output them).
 */
export interface KvIO {
  past: { key: TensorIO; value: TensorIO };
  fresh: { key: TensorIO; value: TensorIO };
}

/** A layer whose mixer the stage holds. */
export interface LayerIO {
  conv: StateIO; // [B, d_conv-1, d_in]: the last d_conv-1 inputs of the causal conv
  ssm: StateIO; // [B, d_in, N]: the scan state
  kv: KvIO | null; // producers only
}

export interface StageIO {
  /** input_ids [B, T] int64 (id V+j is meta token j) or hidden_in [B, T, H] */
  input: TensorIO;
  /** position [B] int64: each session's position before the run (meta tokens count); not in slices */
  position: TensorIO | null;
  /** logits_from [] int64: first row of each session that gets logits (stages with the head or a head slice) */
  logitsFrom: TensorIO | null;
  /** the layers whose mixer the stage holds, in order */
  layers: Map<number, LayerIO>;
  /** the producers the stage mirrors (kvIn), in kvIn order */
  mirrors: Map<number, KvIO>;
  /** logits [R, V] (a head slice: [R, V_k]) or hidden_out [B, T, H] */
  output: TensorIO;
  /** every input, in the graph's order */
  inputs: TensorIO[];
}

const f32 = (name: string, shape: Dim[]): TensorIO => ({ name, shape, dataType: DataType.FLOAT });
const i64 = (name: string, shape: Dim[]): TensorIO => ({ name, shape, dataType: DataType.INT64 });

/** Producer p's K/V; `fresh` suffix "_out" (entries the stage outputs) or "_new" (entries a mirror takes in). */
function kvIO(d: HymbaDims, p: number, fresh: '_out' | '_new'): KvIO {
  const S = `S${p}`;
  return {
    past: { key: f32(`key.${p}`, ['B', d.kvHeads, S, d.dqk]), value: f32(`value.${p}`, ['B', d.kvHeads, S, d.dv]) },
    fresh: {
      key: f32(`key.${p}${fresh}`, ['B', d.kvHeads, 'T', d.dqk]),
      value: f32(`value.${p}${fresh}`, ['B', d.kvHeads, 'T', d.dv]),
    },
  };
}

function layerIO(d: HymbaDims, i: number): LayerIO {
  const state = (name: string, shape: Dim[]): StateIO => ({
    input: f32(name, shape),
    output: f32(`${name}_out`, shape),
  });
  return {
    conv: state(`conv.${i}`, ['B', d.dConv - 1, d.dIn]),
    ssm: state(`ssm.${i}`, ['B', d.dIn, d.dState]),
    kv: d.layers[i]!.kv.kind === 'producer' ? kvIO(d, i, '_out') : null,
  };
}

export function stageIO(d: HymbaDims, spec: StageSpec): StageIO {
  const input = takesIds(spec) ? i64('input_ids', ['B', 'T']) : f32('hidden_in', ['B', 'T', d.H]);
  const position = spec.slice ? null : i64('position', ['B']);
  const logitsFrom = givesLogits(spec) ? i64('logits_from', []) : null;
  const layers = new Map(mixerLayers(spec).map((i) => [i, layerIO(d, i)]));
  const mirrors = new Map((spec.kvIn ?? []).map((p) => [p, kvIO(d, p, '_new')]));
  const vocab = spec.slice?.kind === 'head' ? sliceRange(d.V, spec.slice.part, spec.slice.parts) : [0, d.V];
  const output = givesLogits(spec) ? f32('logits', ['R', vocab[1]! - vocab[0]!]) : f32('hidden_out', ['B', 'T', d.H]);
  // the order the graph has always declared them in (the bytes, and so the fingerprint, depend on it)
  const inputs = [...(position ? [position] : []), input];
  for (const m of mirrors.values()) inputs.push(m.fresh.key, m.fresh.value, m.past.key, m.past.value);
  for (const l of layers.values()) {
    if (l.kv) inputs.push(l.kv.past.key, l.kv.past.value);
    inputs.push(l.conv.input, l.ssm.input);
  }
  if (logitsFrom) inputs.push(logitsFrom);
  return { input, position, logitsFrom, layers, mirrors, output, inputs };
}

/** The concrete shape of a fed tensor: B and T as given, S<i> as `S` (a producer's padded cache length). */
export function feedShape(t: TensorIO, sizes: { B: number; T?: number; S?: number }): number[] {
  return t.shape.map((dim) => {
    if (typeof dim === 'number') return dim;
    const size = dim === 'B' ? sizes.B : dim === 'T' ? sizes.T : dim.startsWith('S') ? sizes.S : undefined;
    if (size === undefined) throw new Error(`input ${t.name}: no size given for its dimension ${dim}`);
    return size;
  });
}
