// Decode timing: one decode step per stage of the bench model, measured in a child process (child.ts
// `decode`), batch 1 and batches of S sessions with batching on (StageRunner.runBatch) and off, plus the
// MLP block's share of a layer's kernel time from ORT's profiler. From those, the decode compute of any
// planned stage of the full model: the arithmetic sections 3, 4 and 6 extrapolate with.

import { join } from 'node:path';
import type { HymbaDims } from '../../../engine/model/config.js';
import { layerWeightBytes, mlpWeightBytes, stageContent } from '../../../engine/stages/memory.js';
import type { ModelPlan, StagePlan } from '../../../engine/stages/estimate.js';
import { profileLayer, runChild, type Shares } from '../profile.js';
import { CONTEXT, LAYER_STAGE, SESSIONS, type BenchDtype } from './bench-model.js';
import { progress } from './report.js';
import type { DecodeReport, StageDecodeTiming } from './child.js';

export type DecodeTimings = Record<BenchDtype, DecodeReport>;

/** Time decode at CONTEXT tokens in a child process: every stage at batch 1, `batchStages` also at S > 1. */
async function decodeChild(dir: string, batchStages: number[]): Promise<DecodeReport> {
  const text = await runChild('./stages/child.ts', [
    'decode',
    dir,
    String(CONTEXT),
    JSON.stringify(batchStages),
    JSON.stringify(SESSIONS.filter((s) => s > 1)),
  ]);
  const l = text.split('\n').find((x) => x.startsWith('@@decode '));
  if (!l) throw new Error('the decode child printed no @@decode line');
  return JSON.parse(l.slice('@@decode '.length)) as DecodeReport;
}

/** int8: all 4 stages, batched too; f16: the layer stage. */
export async function measureDecode(dirs: Record<BenchDtype, string>): Promise<DecodeTimings> {
  progress(`timing decode per stage at ${CONTEXT} tokens of context, int8 (batch 1, 4, 16 on and off) and f16`);
  return {
    int8: await decodeChild(dirs.int8, [0, 1, 2, 3]),
    f16: await decodeChild(dirs.f16, [LAYER_STAGE]),
  };
}

/** Kernel-time shares of the int8 layer stage (decode and prefill), ORT profiler in a child process. */
export async function profileLayerStage(int8Dir: string): Promise<Record<string, Shares>> {
  progress('profiling the int8 layer stage (ORT profiler, child process) for the matmul share');
  return profileLayer(join(int8Dir, `stage-${LAYER_STAGE}.onnx`), 5);
}

/** The MLP block's share of a layer's decode time: the profiler's scope "mlp", else its share of the weights. */
export function mlpShareOf(shares: Record<string, Shares>, full: HymbaDims): number {
  return shares.decode?.byScope.mlp ?? mlpWeightBytes(full, full.I, 'int8') / layerWeightBytes(full, 1, 'int8');
}

/**
 * Decode compute of the blocks a planned stage can hold, from the bench model's measured stages: a layer is
 * the 1-layer stage; its mixer block (attention + SSM) and MLP block split it by the MLP's share of the
 * layer's kernel time (ORT profiler, decode); the embedding and the head add stage 0's and stage 3's time
 * over the layer stage. Each is ms for a step of B sessions, batching on or off (B = 1: one run).
 */
export interface BlockCosts {
  layer: (B: number, on: boolean) => number;
  mixer: (B: number, on: boolean) => number;
  mlp: (B: number, on: boolean) => number;
  embed: (B: number, on: boolean) => number;
  head: (B: number, on: boolean) => number;
  mlpShare: number;
}

export function blockCosts(report: DecodeReport, mlpShare: number): BlockCosts {
  const st = (k: number): StageDecodeTiming => report.stages[k]!;
  const at = (k: number, B: number, on: boolean): number => {
    if (B === 1) return st(k).single.median;
    const row = st(k).batches.find((b) => b.B === B);
    if (!row) return B * st(k).single.median; // not measured: B single runs (only used with batching off)
    return (on ? row.on : row.off).median;
  };
  const layer = (B: number, on: boolean): number => at(LAYER_STAGE, B, on);
  return {
    layer,
    mixer: (B, on) => layer(B, on) * (1 - mlpShare),
    mlp: (B, on) => layer(B, on) * mlpShare,
    embed: (B, on) => Math.max(0, at(0, B, on) - layer(B, on)),
    head: (B, on) => Math.max(0, at(report.stages.length - 1, B, on) - layer(B, on)),
    mlpShare,
  };
}

/** One planned stage's decode time for B sessions: its mixers, MLP blocks or slices, embedding/head rows. */
function stageTime(d: HymbaDims, s: StagePlan, c: BlockCosts, B: number, on: boolean, mixerScale = 1): number {
  const x = stageContent(d, s);
  return (
    x.mixers.length * c.mixer(B, on) * mixerScale +
    x.mlps.reduce((n, m) => n + (m.cols / d.I) * c.mlp(B, on), 0) +
    (x.embedRows / d.V) * c.embed(B, on) +
    (x.headRows / d.V) * c.head(B, on)
  );
}

/** Per sequential step: the slowest of its stages (slices of one block run in parallel). */
export function stepTimes(
  d: HymbaDims,
  plan: ModelPlan,
  c: BlockCosts,
  B: number,
  on: boolean,
  mixerScale = 1,
): number[] {
  const steps = new Array<number>(plan.steps).fill(0);
  for (const s of plan.stages) steps[s.step] = Math.max(steps[s.step]!, stageTime(d, s, c, B, on, mixerScale));
  return steps;
}
