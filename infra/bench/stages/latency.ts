// 3. Per-token decode latency at batch 1 = measured compute per block x the blocks of each planned stage,
// over the plan's sequential steps, + one hop per step (measured between worker threads; ASSUMED for
// Durable Object RPC, and given at several hop latencies).

import type { HymbaDims } from '../../../engine/model/config.js';
import { headWeightBytes, layerWeightBytes } from '../../../engine/stages/memory.js';
import type { ModelPlan } from '../../../engine/stages/estimate.js';
import { stageLabel } from '../../../engine/stages/report.js';
import { fmt } from '../stats.js';
import { CHUNK, CONTEXT, DTYPES, LAYER_STAGE, type BenchDtype } from './bench-model.js';
import { stepTimes, type BlockCosts, type DecodeTimings } from './decode.js';
import { ASSUMED_HOP_MS, ASSUMED_HOP_TEXT, HOP_SENSITIVITY_MS, type HopResults } from './hops.js';
import type { Plans } from './planner.js';
import { mb, ms, sum, type Report } from './report.js';

export interface LatencyRow {
  plan: string;
  stages: number;
  /** sequential steps per token: one RPC round trip each (a step's slices are called in parallel) */
  steps: number;
  computeMs: number;
  slowestStageMs: number;
  localHopsMs: number;
  totalAtMs: Record<number, number>;
  fits: boolean;
}

function latencyRow(name: string, d: HymbaDims, plan: ModelPlan, c: BlockCosts, hopLocalMs: number): LatencyRow {
  const steps = stepTimes(d, plan, c, 1, true);
  const computeMs = sum(steps);
  return {
    plan: name,
    stages: plan.stages.length,
    steps: plan.steps,
    computeMs,
    slowestStageMs: Math.max(...steps),
    localHopsMs: plan.steps * hopLocalMs,
    totalAtMs: Object.fromEntries(HOP_SENSITIVITY_MS.map((h) => [h, computeMs + plan.steps * h])),
    fits: plan.fits,
  };
}

/** What is measured per block: each bench stage's decode step, and the layer / embedding / head / MLP split. */
function reportBlockTimes(
  r: Report,
  full: HymbaDims,
  decode: DecodeTimings,
  costs: Record<BenchDtype, BlockCosts>,
): void {
  const stageRows = [['stage', 'layers', ...DTYPES.map((d) => `${d} ms`)]];
  for (const [k, st] of decode.int8.stages.entries())
    stageRows.push([String(k), stageLabel(st), fmt(st.single), fmt(decode.f16.stages[k]!.single)]);
  r.line('  measured, one decode step per stage of the bench model (StageRunner.run, 9 runs):');
  r.table(stageRows, 2);
  for (const dtype of DTYPES) {
    const c = costs[dtype];
    r.line(
      `  ${dtype}: per layer ${ms(c.layer(1, true))} ms (stage ${LAYER_STAGE}); embedding adds ${ms(c.embed(1, true))} ms (stage 0 - stage ${LAYER_STAGE}); ` +
        `head adds ${ms(c.head(1, true))} ms (stage 3 - stage ${LAYER_STAGE}; a negative difference counts as 0): ` +
        `${(c.head(1, true) / c.layer(1, true)).toFixed(1)}x a layer, for ${mb(headWeightBytes(full, dtype))} MB of head weights vs ${mb(layerWeightBytes(full, 1, dtype))} MB per layer`,
    );
  }
  const mlpShare = costs.int8.mlpShare;
  r.line(
    `  a layer's mixer block (attention + SSM) vs its MLP block: ${(100 * (1 - mlpShare)).toFixed(0)}% / ${(100 * mlpShare).toFixed(0)}% of its decode kernel time ` +
      `(ORT profiler, int8, scope "mlp"; used for both dtypes and every batch size)`,
  );
}

/** The hops measured here, the one assumed for Durable Objects, and how a token's latency is put together. */
function reportHops(r: Report, full: HymbaDims, H: number, hops: HopResults): void {
  r.line(
    `  hop overhead measured here: worker_threads round trip carrying a [1, ${H}] Float32Array each way ${fmt(hops.roundTrip1, 3)} ms; ` +
      `structuredClone of it ${fmt(hops.clone1, 4)} ms`,
  );
  r.line(
    `    (a [${CHUNK}, ${H}] prefill chunk: round trip ${fmt(hops.roundTrip128, 2)} ms, structuredClone ${fmt(hops.clone128, 3)} ms)`,
  );
  r.line(`  ${ASSUMED_HOP_TEXT}`);
  r.line(
    `  planned ${full.L}-layer model, EXTRAPOLATED: per stage = its mixers, MLP blocks (or slice: its share), embedding/head rows at the measured times;`,
  );
  r.line(
    `  per token: the sum over sequential steps of the step's slowest stage (slices of a block run in parallel), plus one RPC round trip per step`,
  );
  r.line(
    "  (star: session -> the step's stage(s) -> session). Per-run overhead of a stage beyond its blocks is not counted.",
  );
}

function latencyTable(latency: LatencyRow[]): string[][] {
  const rows = [
    [
      'plan',
      'stages',
      'steps',
      'fits',
      'compute ms/token',
      'slowest stage ms',
      'hops ms (local threads)',
      ...HOP_SENSITIVITY_MS.map((h) => `total ms @ ${h} ms/hop${h === ASSUMED_HOP_MS ? ' (assumed)' : ''}`),
      `tok/s @ ${ASSUMED_HOP_MS} ms`,
    ],
  ];
  for (const r of latency)
    rows.push([
      r.plan,
      String(r.stages),
      String(r.steps),
      r.fits ? 'yes' : 'no',
      ms(r.computeMs, 0),
      ms(r.slowestStageMs),
      ms(r.localHopsMs, 2),
      ...HOP_SENSITIVITY_MS.map((h) => ms(r.totalAtMs[h]!, 0)),
      (1000 / r.totalAtMs[ASSUMED_HOP_MS]!).toFixed(2),
    ]);
  return rows;
}

/** Section 3; returns the latency of the four plans (units and whole layers, int8 and f16). */
export function reportLatency(
  r: Report,
  full: HymbaDims,
  H: number,
  { plans, layerPlans }: Plans,
  m: { decode: DecodeTimings; hops: HopResults },
  costs: Record<BenchDtype, BlockCosts>,
): LatencyRow[] {
  r.section(`3. Decode latency per token (batch 1, ${CONTEXT} tokens of context): compute + hops`);
  reportBlockTimes(r, full, m.decode, costs);
  reportHops(r, full, H, m.hops);
  const hop = m.hops.roundTrip1.median;
  const latency = [
    latencyRow(`int8 (${plans.int8.granularity})`, full, plans.int8, costs.int8, hop),
    latencyRow(`f16 (${plans.f16.granularity})`, full, plans.f16, costs.f16, hop),
    latencyRow('int8 whole layers', full, layerPlans.int8, costs.int8, hop),
    latencyRow('f16 whole layers', full, layerPlans.f16, costs.f16, hop),
  ];
  r.table(latencyTable(latency));
  return latency;
}
