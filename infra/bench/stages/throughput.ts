// 4. Decode tokens/s of 1, 4, 16 concurrent sessions with batching on (StageRunner.runBatch) and off:
// measured on the layer stage, and extrapolated to the planned int8 model under two models of how the
// stages share the sessions' steps.

import type { HymbaDims } from '../../../engine/model/config.js';
import type { ModelPlan } from '../../../engine/stages/estimate.js';
import { fmt } from '../stats.js';
import { CONTEXT, LAYER_STAGE, SESSIONS, type BenchDtype } from './bench-model.js';
import { stepTimes, type BlockCosts, type DecodeTimings } from './decode.js';
import { ASSUMED_HOP_MS } from './hops.js';
import { ms, sum, type Report } from './report.js';

export interface ThroughputRow {
  sessions: number;
  lockstepOn: number;
  lockstepOff: number;
  boundOn: number;
  boundOff: number;
}

/**
 * Steady state of S sessions decoding through the planned steps, each session always with its next step in
 * flight, every stage its own isolate on its own core.
 * lockstep: every session's step reaches a stage together and runs there as one batch (on) or one session after
 *   another (off); the other stages wait: X = S / (sum over steps of t_step(S) + steps x hop).
 * bound: stages work in parallel on different sessions; X <= S / (sum t_step(1) + steps x hop) (no waiting) and
 *   X <= S / max_k t_k(S) (the slowest stage serving all S): X = the smaller.
 */
function throughputRow(d: HymbaDims, plan: ModelPlan, c: BlockCosts, S: number, hopMs: number): ThroughputRow {
  const hops = plan.steps * hopMs;
  const one = sum(stepTimes(d, plan, c, 1, true)) + hops;
  const lock = (on: boolean): number => (1000 * S) / (sum(stepTimes(d, plan, c, S, on)) + hops);
  const bound = (on: boolean): number =>
    Math.min((1000 * S) / one, (1000 * S) / Math.max(...stepTimes(d, plan, c, S, on)));
  return {
    sessions: S,
    lockstepOn: lock(true),
    lockstepOff: lock(false),
    boundOn: bound(true),
    boundOff: bound(false),
  };
}

/** The layer stage's measured step of S sessions, batching on and off. */
function layerStageTable(decode: DecodeTimings, c8: BlockCosts): string[][] {
  const rows = [['S', 'ON ms/step', 'ON tok/s', 'OFF ms/step', 'OFF tok/s', 'ON / OFF']];
  for (const S of SESSIONS) {
    const st = decode.int8.stages[LAYER_STAGE]!;
    const row = st.batches.find((b) => b.B === S);
    const on = row ? fmt(row.on) : fmt(st.single);
    const off = row ? fmt(row.off) : fmt(st.single);
    const onMs = c8.layer(S, true);
    const offMs = c8.layer(S, false);
    rows.push([
      String(S),
      on,
      ((1000 * S) / onMs).toFixed(1),
      off,
      ((1000 * S) / offMs).toFixed(1),
      `${(offMs / onMs).toFixed(2)}x`,
    ]);
  }
  return rows;
}

function reportPipelineModel(r: Report, plan: ModelPlan): void {
  r.line(
    `  whole pipeline, EXTRAPOLATED to the planned int8 model (${plan.stages.length} stages, ${plan.steps} steps; each stage's time for S sessions from the`,
  );
  r.line(
    `  layer stage's and the embedding/head's measured times for S sessions, split as in 3), ${ASSUMED_HOP_MS} ms per hop (assumed), each stage its own isolate on its own core. Model:`,
  );
  r.line(
    `    lockstep: all S steps reach each stage together and run there as one batch (ON) or one after another (OFF);`,
  );
  r.line(`      the other stages wait: tok/s = S / (sum over steps of t_step(S) + steps x hop)`);
  r.line(
    `    parallel bound: stages serve different sessions at once; tok/s = min(S / (sum t_step(1) + steps x hop), S / max_k t_k(S))`,
  );
  r.line(`      (latency bound, and the slowest stage serving all S); the truth lies between the two`);
}

function throughputTable(thr: ThroughputRow[]): string[][] {
  const rows = [
    [
      'S',
      'ON lockstep tok/s',
      'ON parallel bound',
      'OFF lockstep tok/s',
      'OFF parallel bound',
      'per-token latency ms (ON lockstep)',
    ],
  ];
  for (const r of thr)
    rows.push([
      String(r.sessions),
      r.lockstepOn.toFixed(2),
      r.boundOn.toFixed(2),
      r.lockstepOff.toFixed(2),
      r.boundOff.toFixed(2),
      ms((1000 * r.sessions) / r.lockstepOn, 0),
    ]);
  return rows;
}

/** Section 4; returns the extrapolated throughput of the planned int8 model per session count. */
export function reportThroughput(
  r: Report,
  full: HymbaDims,
  plan: ModelPlan,
  decode: DecodeTimings,
  costs: Record<BenchDtype, BlockCosts>,
): ThroughputRow[] {
  r.section(
    `4. Decode throughput, S concurrent sessions at ${CONTEXT} tokens of context each (int8), batching ON (runBatch) vs OFF (one run per session)`,
  );
  const thr = SESSIONS.map((S) => throughputRow(full, plan, costs.int8, S, ASSUMED_HOP_MS));
  r.line(`  measured on the 1-layer stage (layer ${LAYER_STAGE}), one decode step of all S sessions (5 runs):`);
  r.table(layerStageTable(decode, costs.int8));
  r.line(
    `  (the same for f16, which runs fp32 maths: ${SESSIONS.map((S) => `S=${S} ON ${((1000 * S) / costs.f16.layer(S, true)).toFixed(1)} / OFF ${((1000 * S) / costs.f16.layer(S, false)).toFixed(1)} tok/s`).join(', ')})`,
  );
  reportPipelineModel(r, plan);
  r.table(throughputTable(thr));
  return thr;
}
