// The models the stages benchmark runs, and the sizes every measurement shares. The bench model is
// Hymba-1.5B-shaped (real shapes, random weights) cut to 4 layers with no KV sharing, converted as 4 stages:
// [0] +embed, [1], [2], [3] +head; anything about the full 32 layers is extrapolated from it. The tiny preset,
// converted as 3 stages, is the second pipelined-prefill case.

import { join } from 'node:path';
import { loadConfig, type HymbaDims } from '../../../engine/model/config.js';
import { makeTestModel } from '../../test-model/make-test-model.js';
import { presetConfig, pyJson, type ConfigValue } from '../../test-model/presets.js';
import { runChild } from '../profile.js';
import { ms, progress } from './report.js';

/** Layers of the bench model: [0] global +embed, [1], [2], [3] +head; sliding-window KV producers 1-3. */
export const BENCH_LAYERS = 4;
const BENCH_STAGES = [0, 1, 2, 3].map((i) => ({ first: i, last: i + 1 }));
const TINY_STAGES = [
  { first: 0, last: 4 },
  { first: 4, last: 7 },
  { first: 7, last: 8 },
];
/** the 1-layer stage without embedding or head: layer 1, a sliding-window KV producer */
export const LAYER_STAGE = 1;
/** text tokens of context each decoding session holds */
export const CONTEXT = 256;
export const SESSIONS = [1, 4, 16];
export const BUDGET_MB = 128;
/** the dtypes the bench model is converted to and the full model planned at */
export const DTYPES = ['int8', 'f16'] as const;
export type BenchDtype = (typeof DTYPES)[number];
/** tokens of one prefill run; the rows that cross a hop in prefill are [CHUNK, H] */
export const CHUNK = 128;

export interface BenchDims {
  /** the released Hymba-1.5B config: what the planner plans and the numbers are extrapolated to */
  full: HymbaDims;
  /** the 4-layer bench model */
  bench: HymbaDims;
  tiny: HymbaDims;
}

const dimsOf = (config: ConfigValue): HymbaDims => loadConfig(JSON.parse(pyJson(config))).dims;

export function benchDims(): BenchDims {
  return {
    full: dimsOf(presetConfig('hymba-1.5b')),
    bench: dimsOf({ ...presetConfig('hymba-1.5b', BENCH_LAYERS), kv_reuse_group: [] }),
    tiny: dimsOf(presetConfig('tiny')),
  };
}

/** Converted model directories under the bench's temporary root. */
export interface BenchModels {
  int8: string;
  f16: string;
  tiny: string;
  convertSeconds: number;
}

type StageRanges = { first: number; last: number }[];

/** Convert a checkpoint with the given layer ranges in a child process (its WASM heap is freed on exit). */
const convert = (hf: string, dir: string, dtype: string, stages: StageRanges): Promise<string> =>
  runChild('./stages/child.ts', ['convert', hf, dir, dtype, JSON.stringify(stages)]);

/** Write the two checkpoints (random weights) and convert them: the bench model at int8 and f16, the tiny at f32. */
export async function buildBenchModels(root: string): Promise<BenchModels> {
  const hf = join(root, 'hf');
  const tinyHf = join(root, 'tiny-hf');
  const dirs = { int8: join(root, 'int8'), f16: join(root, 'f16'), tiny: join(root, 'tiny') };
  progress(`building a ${BENCH_LAYERS}-layer Hymba-1.5B-shaped checkpoint (random weights) and the tiny preset`);
  let t = performance.now();
  await makeTestModel(hf, {
    preset: 'hymba-1.5b',
    layers: BENCH_LAYERS,
    seed: 1,
    tokenizer: false,
    overrides: { kv_reuse_group: [] },
  });
  await makeTestModel(tinyHf, { preset: 'tiny', seed: 1, tokenizer: false });
  progress(`  ${ms((performance.now() - t) / 1000)} s; converting to int8 and f16 (two child processes at once)`);
  t = performance.now();
  await Promise.all([convert(hf, dirs.int8, 'int8', BENCH_STAGES), convert(hf, dirs.f16, 'f16', BENCH_STAGES)]);
  await convert(tinyHf, dirs.tiny, 'f32', TINY_STAGES);
  const convertSeconds = (performance.now() - t) / 1000;
  progress(`  ${ms((performance.now() - t) / 1000)} s`);
  return { ...dirs, convertSeconds };
}
