// Checkpoint -> converted model: stage graphs with external weights, the meta-token prefix state, a manifest.

import type { Checkpoint } from './checkpoint.js';
import type { HymbaDims } from './config.js';
import { modelFingerprint, sha256Hex } from './fingerprint.js';
import { GRAPH_VERSION, MANIFEST_FILE, type Manifest, type ManifestStage } from './manifest.js';
import { emitGraph } from './onnx/emit.js';
import { expandQ4Graph } from './onnx/q4-expand.js';
import { buildStageGraph, checkStage, DEFAULT_MAX_RUN_TOKENS, type StageSpec } from './onnx/hymba-graph.js';
import { HymbaRunner, type Stage } from './runner.js';
import { loadGraph } from './runtime/ort.js';
import { serializeState } from './state.js';
import { globalTensorShapes, layerTensorShapes, type WeightMap } from './weights.js';
import type { ModelDtype } from './quantize.js';

export interface ConvertOptions {
  /** f32; f16 storage; int8 per output channel; q4 blocks of 32 (storage), run as int8 */
  dtype: ModelDtype;
  /** layer ranges [first, last); default one stage with every layer */
  stages?: { first: number; last: number }[];
  /** whether tokenizer files are shipped beside the model (the caller copies them) */
  tokenizer: boolean;
}

export type WriteFile = (name: string, bytes: Uint8Array) => Promise<void>;

export const PREFIX_FILE = 'prefix.state';

function stageSpecs(dims: HymbaDims, ranges: { first: number; last: number }[]): StageSpec[] {
  return ranges.map((r, i) => {
    if (i > 0 && r.first !== ranges[i - 1]!.last) throw new Error('stages must cover consecutive layers');
    const spec = { ...r, embed: i === 0, head: i === ranges.length - 1 };
    checkStage(dims, spec);
    return spec;
  });
}

/** Only the tensors one stage needs, read from the checkpoint one at a time. */
async function stageWeights(ckpt: Checkpoint, spec: StageSpec): Promise<WeightMap> {
  const names: string[] = [];
  for (let i = spec.first; i < spec.last; i++) names.push(...layerTensorShapes(ckpt.dims, i).map(([n]) => n));
  for (const [n] of globalTensorShapes(ckpt.dims)) {
    const needed =
      n === 'model.embed_tokens.weight'
        ? spec.embed || spec.head
        : n === 'model.memory_tokens'
          ? spec.embed
          : spec.head;
    if (needed) names.push(n);
  }
  const w: WeightMap = new Map();
  for (const n of names) w.set(n, await ckpt.readTensor(n));
  return w;
}

export async function convertCheckpoint(ckpt: Checkpoint, opts: ConvertOptions, write: WriteFile): Promise<Manifest> {
  const model = { config: ckpt.config, dims: ckpt.dims };
  const specs = stageSpecs(ckpt.dims, opts.stages ?? [{ first: 0, last: ckpt.dims.L }]);
  const entries: ManifestStage[] = [];
  const stages: Stage[] = [];
  const digests: string[] = [];
  for (const [k, spec] of specs.entries()) {
    const weights = await stageWeights(ckpt, spec);
    const graphFile = `stage-${k}.onnx`;
    const emitted = emitGraph(buildStageGraph(model, weights, spec, { dtype: opts.dtype }), `hymba-stage-${k}`);
    weights.clear();
    await write(graphFile, emitted.graph);
    digests.push(await sha256Hex(emitted.graph));
    entries.push({ ...spec, graph: graphFile, weightBytes: emitted.weightBytes });
    // q4 is what is stored; ORT runs its int8 form (expanded here in JS rather than by ORT's folding)
    const runnable = opts.dtype === 'q4' ? expandQ4Graph(emitted.graph) : emitted.graph;
    stages.push({ spec, graph: await loadGraph(runnable) });
  }
  const description = { config: ckpt.rawConfig, dtype: opts.dtype, graphVersion: GRAPH_VERSION, stages: entries };
  const fingerprint = await modelFingerprint(description, digests);
  const runner = new HymbaRunner(model, stages, DEFAULT_MAX_RUN_TOKENS);
  let prefixState: string | null = null;
  if (ckpt.dims.M > 0) {
    prefixState = PREFIX_FILE;
    await write(PREFIX_FILE, serializeState(ckpt.dims, await runner.metaPrefix(), fingerprint));
  }
  for (const s of stages) await s.graph.session.release();
  const eos = ckpt.rawConfig.eos_token_id;
  const manifest: Manifest = {
    format: 'hymba-edge-model',
    version: 1,
    graphVersion: GRAPH_VERSION,
    fingerprint,
    dtype: opts.dtype,
    config: ckpt.rawConfig,
    maxRunTokens: DEFAULT_MAX_RUN_TOKENS,
    stages: entries,
    prefixState,
    tokenizer: opts.tokenizer,
    generation: {
      bosTokenId: ckpt.config.bos_token_id,
      eosTokenIds: Array.isArray(eos) ? (eos as number[]) : [ckpt.config.eos_token_id],
    },
  };
  await write(MANIFEST_FILE, new TextEncoder().encode(JSON.stringify(manifest, null, 2)));
  return manifest;
}
