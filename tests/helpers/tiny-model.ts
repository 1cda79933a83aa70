// Test fixtures: a tiny Hymba checkpoint written in the Hugging Face layout, converted, and its fp32 weights.

import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadWeights, openCheckpoint } from '../../engine/convert/checkpoint.js';
import { loadConfig, type ModelConfig } from '../../engine/model/config.js';
import { HymbaEngine } from '../../engine/run/loaded-model.js';
import type { WeightMap } from '../../engine/model/weights.js';
import { convertDir, dirModelSource } from '../../infra/model-dir.js';
import { dirCheckpointSource } from '../../infra/node-files.js';
import { makeTestModel } from '../../infra/test-model/make-test-model.js';
import type { ConfigValue, PresetName } from '../../infra/test-model/presets.js';
import type { StageOption } from '../../engine/convert/convert.js';
import { MANIFEST_FILE, parseManifest, stageSpecOf, type Manifest } from '../../engine/convert/manifest.js';
import { expandQ4Graph } from '../../engine/onnx/q4-expand.js';
import { HymbaRunner, type Stage } from '../../engine/run/runner.js';
import { loadGraph } from '../../engine/run/ort.js';
import { emptyState, type HymbaState } from '../../engine/state/state.js';
import { deserializeState } from '../../engine/state/codec.js';

export interface TestModel {
  root: string;
  hfDir: string;
  convertedDir: string;
  engine: HymbaEngine;
  model: ModelConfig;
  weights: WeightMap;
  cleanup(): Promise<void>;
}

/** Write a checkpoint, convert it to `dtype` on disk, load it, and read its weights for the reference. */
export async function makeConvertedModel(
  opts: {
    preset?: PresetName;
    layers?: number;
    seed?: number;
    dtype?: 'f32' | 'f16' | 'int8' | 'q4';
    overrides?: Record<string, ConfigValue>;
    /** layer ranges of the stage graphs; default one stage */
    stages?: { first: number; last: number }[];
  } = {},
): Promise<TestModel> {
  const root = await mkdtemp(join(tmpdir(), 'hymba-test-'));
  const hfDir = join(root, 'hf');
  const convertedDir = join(root, 'converted');
  await makeTestModel(hfDir, {
    preset: opts.preset ?? 'tiny',
    seed: opts.seed ?? 7,
    ...(opts.layers !== undefined ? { layers: opts.layers } : {}),
    ...(opts.overrides ? { overrides: opts.overrides } : {}),
  });
  await mkdir(convertedDir, { recursive: true });
  await convertDir(
    hfDir,
    { dtype: opts.dtype ?? 'f32', ...(opts.stages ? { stages: opts.stages } : {}) },
    (name, bytes) => writeFile(join(convertedDir, name), bytes),
  );
  const engine = await HymbaEngine.load(dirModelSource(convertedDir));
  const ckpt = await openCheckpoint(dirCheckpointSource(hfDir));
  const weights = await loadWeights(ckpt);
  await ckpt.close();
  return {
    root,
    hfDir,
    convertedDir,
    engine,
    model: engine.model,
    weights,
    cleanup: async () => {
      await engine.release();
      await rm(root, { recursive: true, force: true });
    },
  };
}

/** Largest |a - b| between a [rows, V] Float32Array and float64 reference rows. */
export function maxAbsDiff(actual: Float32Array, expected: ArrayLike<number>[], V: number): number {
  let max = 0;
  expected.forEach((row, r) => {
    for (let v = 0; v < V; v++) max = Math.max(max, Math.abs(actual[r * V + v]! - row[v]!));
  });
  return max;
}

/** Largest |a - b| between two equally long arrays. */
export function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

/** A deterministic pseudo-random token sequence inside the vocabulary, starting with BOS. */
export function tokenSequence(n: number, V: number, seed = 1): number[] {
  const ids = [1];
  let x = seed;
  while (ids.length < n) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    ids.push(3 + (x % (V - 3)));
  }
  return ids;
}

/**
 * The tiny preset (8 layers, global [0, 4, 7], KV groups [1, 2, 3] and [5, 6]) in ten stages using every way
 * a stage can split a model: embedding and head vocabulary slices, sublayer units, MLP slices side by side,
 * and a stage mirroring another's K/V cache.
 */
export const TINY_SLICED_PLAN: StageOption[] = [
  { slice: { kind: 'embed', part: 0, parts: 2 } },
  { slice: { kind: 'embed', part: 1, parts: 2 } },
  { units: { from: 0, to: 3 }, kvOut: [1] }, // layer 0, mixer of layer 1 (a producer)
  { slice: { kind: 'mlp', layer: 1, part: 0, parts: 2 } },
  { slice: { kind: 'mlp', layer: 1, part: 1, parts: 2 } },
  { units: { from: 4, to: 8 }, kvIn: [1] }, // layers 2, 3: consumers of 1, mirrored
  { first: 4, last: 8 },
  { slice: { kind: 'head', part: 0, parts: 3 } },
  { slice: { kind: 'head', part: 1, parts: 3 } },
  { slice: { kind: 'head', part: 2, parts: 3 } },
];

export interface StagedModel {
  root: string;
  convertedDir: string;
  manifest: Manifest;
  model: ModelConfig;
  /** every stage with its full StageSpec (units, slices, mirrors) as the manifest gives it */
  runner: HymbaRunner;
  /** the whole model's state after the meta tokens */
  prefix: HymbaState;
  weights: WeightMap;
  cleanup(): Promise<void>;
}

/**
 * Write a checkpoint and convert it with a stage plan that may use units, slices and mirrors; load every
 * stage with its full spec from the manifest (independent of HymbaEngine's loader).
 */
export async function makeStagedModel(opts: {
  stages: StageOption[];
  dtype?: 'f32' | 'f16' | 'int8' | 'q4';
  seed?: number;
  maxRunTokens?: number;
}): Promise<StagedModel> {
  const root = await mkdtemp(join(tmpdir(), 'hymba-staged-'));
  const hfDir = join(root, 'hf');
  const convertedDir = join(root, 'converted');
  await makeTestModel(hfDir, { preset: 'tiny', seed: opts.seed ?? 7 });
  await mkdir(convertedDir, { recursive: true });
  const dtype = opts.dtype ?? 'f32';
  await convertDir(
    hfDir,
    { dtype, stages: opts.stages, ...(opts.maxRunTokens ? { maxRunTokens: opts.maxRunTokens } : {}) },
    (name, bytes) => writeFile(join(convertedDir, name), bytes),
  );
  const manifest = parseManifest(await readFile(join(convertedDir, MANIFEST_FILE), 'utf8'));
  const model = loadConfig(manifest.config);
  const stages: Stage[] = [];
  for (const e of manifest.stages) {
    const bytes = new Uint8Array(await readFile(join(convertedDir, e.graph)));
    stages.push({ spec: stageSpecOf(e), graph: await loadGraph(dtype === 'q4' ? expandQ4Graph(bytes) : bytes) });
  }
  const runner = new HymbaRunner(model, stages, manifest.maxRunTokens);
  const prefix = manifest.prefixState
    ? deserializeState(
        model.dims,
        new Uint8Array(await readFile(join(convertedDir, manifest.prefixState))),
        manifest.fingerprint,
      )
    : emptyState(model.dims);
  const ckpt = await openCheckpoint(dirCheckpointSource(hfDir));
  const weights = await loadWeights(ckpt);
  await ckpt.close();
  return {
    root,
    convertedDir,
    manifest,
    model,
    runner,
    prefix,
    weights,
    cleanup: async () => {
      for (const s of stages) await s.graph.session.release();
      await rm(root, { recursive: true, force: true });
    },
  };
}
