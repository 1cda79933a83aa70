// One Hymba-1.5B-shaped layer (layer 1: a sliding-window KV producer) as a hidden-in/hidden-out stage graph,
// per dtype, and its feeds. Shared by the engine benchmark and its child processes (profile, memory).

import { loadConfig, type HymbaDims, type ModelConfig } from '../../engine/model/config.js';
import { emitGraph } from '../../engine/onnx/emit.js';
import { buildStageGraph } from '../../engine/stages/stage-graph.js';
import { stageIO } from '../../engine/stages/stage-io.js';
import type { StageSpec } from '../../engine/stages/stage-spec.js';
import { expandQ4Graph } from '../../engine/onnx/q4-expand.js';
import { ort } from '../../engine/run/ort.js';
import { kvEntries } from '../../engine/state/state.js';
import { layerTensorShapes, type WeightMap } from '../../engine/model/weights.js';
import { initTensor } from '../test-model/make-test-model.js';
import { presetConfig, pyJson } from '../test-model/presets.js';

export type LayerDtype = 'f32' | 'int8' | 'q4';
export const LAYER = 1;
const LAYER_SPEC: StageSpec = { first: LAYER, last: LAYER + 1, embed: false, head: false };

export const layerModel = (): ModelConfig => loadConfig(JSON.parse(pyJson(presetConfig('hymba-1.5b', 2))));
export const fullModelLayers = (): number => loadConfig(JSON.parse(pyJson(presetConfig('hymba-1.5b')))).dims.L;

export interface LayerGraph {
  dtype: LayerDtype;
  /** the graph ORT runs (q4: expanded to its int8 execution form) */
  graph: Uint8Array;
  /** weight bytes stored in the emitted (pre-expansion) graph */
  storageBytes: number;
  /** weight bytes of the graph that runs */
  execBytes: number;
  /** parameters of the layer (all tensors) */
  params: number;
}

export function layerWeights(d: HymbaDims): WeightMap {
  const w: WeightMap = new Map();
  for (const [name, shape] of layerTensorShapes(d, LAYER))
    w.set(name, { dims: shape, data: initTensor(name, shape, d, 1) });
  return w;
}

export function buildLayer(model: ModelConfig, w: WeightMap, dtype: LayerDtype): LayerGraph {
  const emitted = emitGraph(buildStageGraph(model, w, LAYER_SPEC, { dtype }));
  const params = layerTensorShapes(model.dims, LAYER).reduce((n, [, s]) => n + s.reduce((a, b) => a * b, 1), 0);
  if (dtype !== 'q4') {
    return { dtype, graph: emitted.graph, storageBytes: emitted.weightBytes, execBytes: emitted.weightBytes, params };
  }
  const graph = expandQ4Graph(emitted.graph);
  // the expanded graph's weights: its size less the (small) non-weight part of the emitted graph
  const execBytes = graph.length - (emitted.graph.length - emitted.weightBytes);
  return { dtype, graph, storageBytes: emitted.weightBytes, execBytes, params };
}

/**
 * Feeds for T hidden rows of each of B sessions, all continuing from `context` positions of (zero) state:
 * the KV inputs hold the entries the runner would pass (meta tokens plus up to W earlier tokens).
 */
export function layerFeeds(d: HymbaDims, T: number, context: number, B = 1): Record<string, ort.Tensor> {
  const n = stageIO(d, LAYER_SPEC).layers.get(LAYER)!;
  const kv = kvEntries(d, LAYER, context);
  const f = (data: Float32Array, dims: number[]): ort.Tensor => new ort.Tensor('float32', data, dims);
  return {
    position: new ort.Tensor('int64', new BigInt64Array(B).fill(BigInt(context)), [B]),
    hidden_in: f(new Float32Array(B * T * d.H).fill(0.1), [B, T, d.H]),
    [n.conv.input.name]: f(new Float32Array(B * (d.dConv - 1) * d.dIn), [B, d.dConv - 1, d.dIn]),
    [n.ssm.input.name]: f(new Float32Array(B * d.dIn * d.dState), [B, d.dIn, d.dState]),
    [n.kv!.past.key.name]: f(new Float32Array(B * d.kvHeads * kv * d.dqk), [B, d.kvHeads, kv, d.dqk]),
    [n.kv!.past.value.name]: f(new Float32Array(B * d.kvHeads * kv * d.dv), [B, d.kvHeads, kv, d.dv]),
  };
}

/** Anything with ORT's `run` (onnxruntime-web and onnxruntime-node sessions). */
export interface Runner {
  run(feeds: Record<string, ort.Tensor>): Promise<unknown>;
}

export const PREFILL_CHUNK = 128;

/** Sessions decoded together in the batched-decode workload. */
export const DECODE_BATCH = 8;

/**
 * The workloads of the table: decode at context M+512, alone and for DECODE_BATCH sessions in one run;
 * prefill of a fresh prompt after the meta tokens.
 */
export function workloads(
  d: HymbaDims,
): Record<'decode' | 'decodeBatch' | 'prefill128' | 'prefill512', () => Record<string, ort.Tensor>[]> {
  return {
    decode: () => [layerFeeds(d, 1, d.M + 512)],
    decodeBatch: () => [layerFeeds(d, 1, d.M + 512, DECODE_BATCH)],
    prefill128: () => [layerFeeds(d, PREFILL_CHUNK, d.M)],
    // 512 tokens as the runner chunks them: 4 runs of 128 at growing positions
    prefill512: () => [0, 1, 2, 3].map((k) => layerFeeds(d, PREFILL_CHUNK, d.M + k * PREFILL_CHUNK)),
  };
}

export async function runAll(s: Runner, feeds: Record<string, ort.Tensor>[]): Promise<void> {
  for (const f of feeds) await s.run(f);
}
