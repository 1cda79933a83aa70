// 2. The memory of one 1-layer stage in a fresh process (infra/plan/stage-memory-child.ts, as `hymba plan
// --measure` does it) beside the planner's estimate of the same stage.

import type { HymbaDims } from '../../../engine/model/config.js';
import { maxContext, ORT_BASELINE_BYTES } from '../../../engine/stages/memory.js';
import type { ModelPlan } from '../../../engine/stages/estimate.js';
import { estimateStages } from '../../../engine/stages/plan.js';
import { measureStage, type StageMeasurement } from '../../plan/measure.js';
import { BUDGET_MB, CHUNK, DTYPES, LAYER_STAGE, type BenchDtype } from './bench-model.js';
import { mb, progress, type Report } from './report.js';

export type StageMemory = Record<string, { measured: StageMeasurement; estimate: ModelPlan }>;

/** Measure the layer stage of each converted dtype, one fresh process each, and estimate it at the same sizes. */
export async function measureMemory(bench: HymbaDims, dirs: Record<BenchDtype, string>): Promise<StageMemory> {
  progress('measuring the memory of the 1-layer stage in fresh processes (int8, f16)');
  const context = maxContext(bench);
  const memory: StageMemory = {};
  for (const dtype of DTYPES) {
    const measured = await measureStage(dirs[dtype], LAYER_STAGE, { runTokens: CHUNK, context });
    const estimate = estimateStages(bench, [{ first: LAYER_STAGE, last: LAYER_STAGE + 1, embed: false, head: false }], {
      dtype,
      contextTokens: context,
      runTokens: CHUNK,
    });
    memory[dtype] = { measured, estimate };
  }
  return memory;
}

const MEMORY_COLUMNS = [
  'dtype',
  'weights MB',
  'heap after load MB',
  'planner: factor x weights',
  'heap after runs MB',
  'planner: + activation + state',
  'total MB',
  'planner estimate MB',
  'RSS growth MB',
];

/** One dtype's row: each measured heap beside the part of the estimate that should match it. */
function memoryRow(dtype: BenchDtype, { measured, estimate }: StageMemory[string]): string[] {
  const s = estimate.stages[0]!;
  const load = s.ortBytes - estimate.baselineBytes - estimate.activationBytes;
  const run = measured.raw.run;
  return [
    dtype,
    mb(s.weightBytes),
    `${mb(measured.heapAfterLoad)} (${(measured.heapAfterLoad / s.execBytes).toFixed(2)}x)`,
    `${mb(load)} (${estimate.factor}x)`,
    mb(measured.heapAfterRuns),
    mb(load + estimate.activationBytes + s.runStateBytes + s.stateBytesPerSession),
    mb((run.wasmHeap ?? 0) + run.jsHeap),
    mb(s.estimatedBytes),
    mb(measured.rssAfterRuns),
  ];
}

export function reportMemory(r: Report, bench: HymbaDims, memory: StageMemory): void {
  r.section(
    `2. Memory of one 1-layer stage process (layer ${LAYER_STAGE}: sliding-window KV producer, no embedding or head), fresh Node process per dtype`,
  );
  r.line(
    `  (infra/plan/stage-memory-child.ts: WASM heap growth over an initialised ORT after the session is created, then after one decode`,
  );
  r.line(
    `  step at ${maxContext(bench)} tokens of state and one ${CHUNK}-token run; total = WASM heap + JS heap after the runs; 1 sample each)`,
  );
  r.table([MEMORY_COLUMNS, ...DTYPES.map((dtype) => memoryRow(dtype, memory[dtype]!))]);
  r.line(
    `  budget: ${BUDGET_MB} MB per isolate; the planner's estimate also counts the ${mb(ORT_BASELINE_BYTES)} MB baseline`,
  );
}
