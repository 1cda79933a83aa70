// Checkpoint -> converted model: stage graphs with external weights, the meta-token prefix state, a manifest.

import type { Checkpoint } from './checkpoint.js';
import type { HymbaDims } from '../model/config.js';
import { modelFingerprint, sha256Hex } from './fingerprint.js';
import { GRAPH_VERSION, MANIFEST_FILE, type Manifest, type ManifestStage } from './manifest.js';
import { emitGraph } from '../onnx/emit.js';
import { expandQ4Graph } from '../onnx/q4-expand.js';
import { DEFAULT_MAX_RUN_TOKENS } from '../model/scan.js';
import { buildStageGraph } from '../stages/stage-graph.js';
import { mixerLayers, stageUnits, toStageSpec, type StageFields, type StageSpec } from '../stages/stage-spec.js';
import { HymbaRunner, type Stage } from '../run/runner.js';
import { loadGraph } from '../run/ort.js';
import { serializeState } from '../state/codec.js';
import { pipelineSteps } from '../stages/steps.js';
import { globalTensorShapes, isMlpTensor, layerTensorShapes, type WeightMap } from '../model/weights.js';
import type { ModelDtype } from './quantize.js';

export interface ConvertOptions {
  /** f32; f16 storage; int8 per output channel; q4 blocks of 32 (storage), run as int8 */
  dtype: ModelDtype;
  /**
   * the stages in execution order; default one stage with every layer. A plain entry is a layer range
   * [first, last); entries may carry the StageSpec fields units, slice, kvIn, kvOut (first/last may then be
   * left out: they follow from units or slice). embed/head default to: the first stage embeds and the last
   * has the head, unless slices of the embedding or head do that.
   */
  stages?: StageOption[];
  /** largest number of tokens one graph run takes (default DEFAULT_MAX_RUN_TOKENS): smaller runs, smaller activation peak */
  maxRunTokens?: number;
  /** whether tokenizer files are shipped beside the model (the caller copies them) */
  tokenizer: boolean;
}

/** A stage as ConvertOptions.stages gives it. */
export type StageOption = Partial<StageFields>;

export type WriteFile = (name: string, bytes: Uint8Array) => Promise<void>;

export const PREFIX_FILE = 'prefix.state';

/** Complete StageSpecs from the options, checked (each stage, and the list as a pipeline: steps.ts). */
export function stageSpecs(dims: HymbaDims, stages: StageOption[]): StageSpec[] {
  const slicesOf = (kind: 'embed' | 'head'): boolean => stages.some((s) => s.slice?.kind === kind);
  const specs = stages.map((o, i): StageSpec => {
    const [first, last] = o.slice
      ? o.slice.kind === 'mlp'
        ? [o.slice.layer, o.slice.layer + 1]
        : o.slice.kind === 'embed'
          ? [0, 0]
          : [dims.L, dims.L]
      : o.units
        ? [Math.floor(o.units.from / 2), Math.ceil(o.units.to / 2)]
        : [o.first ?? 0, o.last ?? dims.L];
    const spec: StageFields = {
      first: o.first ?? first,
      last: o.last ?? last,
      embed: o.embed ?? (!o.slice && i === 0 && !slicesOf('embed')),
      head: o.head ?? (!o.slice && i === stages.length - 1 && !slicesOf('head')),
    };
    if (o.units) spec.units = { ...o.units };
    if (o.slice) spec.slice = { ...o.slice };
    if (o.kvIn?.length) spec.kvIn = [...o.kvIn];
    if (o.kvOut?.length) spec.kvOut = [...o.kvOut];
    return toStageSpec(spec);
  });
  pipelineSteps(specs, dims); // gaps, overlaps, incomplete slices, unmirrored consumers
  return specs;
}

/** Only the tensors one stage needs, read from the checkpoint one at a time. */
async function stageWeights(ckpt: Checkpoint, spec: StageSpec): Promise<WeightMap> {
  const names: string[] = [];
  const mixers = new Set(mixerLayers(spec));
  const mlps = new Set<number>();
  if (spec.slice?.kind === 'mlp') mlps.add(spec.slice.layer);
  else if (!spec.slice) {
    const { from, to } = stageUnits(spec);
    for (let u = from; u < to; u++) if (u % 2 === 1) mlps.add(u >> 1);
  }
  for (let i = spec.first; i < spec.last; i++)
    for (const [n] of layerTensorShapes(ckpt.dims, i)) if (isMlpTensor(n) ? mlps.has(i) : mixers.has(i)) names.push(n);
  const embed = spec.embed || spec.slice?.kind === 'embed';
  const head = spec.head || spec.slice?.kind === 'head';
  const metaToo = spec.embed || (spec.slice?.kind === 'embed' && spec.slice.part === 0);
  for (const [n] of globalTensorShapes(ckpt.dims)) {
    const needed = n === 'model.embed_tokens.weight' ? embed || head : n === 'model.memory_tokens' ? metaToo : head;
    if (needed) names.push(n);
  }
  const w: WeightMap = new Map();
  for (const n of names) w.set(n, await ckpt.readTensor(n));
  return w;
}

export async function convertCheckpoint(ckpt: Checkpoint, opts: ConvertOptions, write: WriteFile): Promise<Manifest> {
  const model = { config: ckpt.config, dims: ckpt.dims };
  const specs = stageSpecs(ckpt.dims, opts.stages ?? [{ first: 0, last: ckpt.dims.L }]);
  const maxRunTokens = opts.maxRunTokens ?? DEFAULT_MAX_RUN_TOKENS;
  if (!(Number.isInteger(maxRunTokens) && maxRunTokens >= 1))
    throw new Error(`maxRunTokens ${maxRunTokens} is not a positive integer`);
  const entries: ManifestStage[] = [];
  const stages: Stage[] = [];
  const digests: string[] = [];
  for (const [k, spec] of specs.entries()) {
    const weights = await stageWeights(ckpt, spec);
    const graphFile = `stage-${k}.onnx`;
    const emitted = emitGraph(
      buildStageGraph(model, weights, spec, { dtype: opts.dtype, maxRunTokens }),
      `hymba-stage-${k}`,
    );
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
  const runner = new HymbaRunner(model, stages, maxRunTokens);
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
    maxRunTokens,
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
