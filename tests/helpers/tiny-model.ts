// Test fixtures: a tiny Hymba checkpoint written in the Hugging Face layout, converted, and its fp32 weights.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadWeights, openCheckpoint } from '../../engine/checkpoint.js';
import type { ModelConfig } from '../../engine/config.js';
import { HymbaEngine } from '../../engine/model.js';
import type { WeightMap } from '../../engine/weights.js';
import { convertDir, dirModelSource } from '../../infra/model-dir.js';
import { dirCheckpointSource } from '../../infra/node-files.js';
import { makeTestModel } from '../../infra/test-model/make-test-model.js';
import type { ConfigValue, PresetName } from '../../infra/test-model/presets.js';
import { mkdir, writeFile } from 'node:fs/promises';

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
