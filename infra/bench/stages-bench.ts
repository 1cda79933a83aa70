// `npm run bench -- --stages`: what running Hymba-1.5B as stages in separate Durable Objects costs, measured on
// this machine where it can be and computed where it cannot (one file per part, in infra/bench/stages/):
//   1. the planner's stages for the full 32-layer config at int8 and f16 in a 128 MB budget (planner.ts);
//   2. the memory of one 1-layer stage in a fresh process beside the estimate (memory.ts);
//   3. per-token decode latency = measured compute per layer x layers per stage + hops x a hop latency
//      (measured here between worker threads; ASSUMED for Durable Object RPC) (decode.ts, hops.ts, latency.ts);
//   4. decode tokens/s of 1, 4, 16 sessions with batching on (StageRunner.runBatch) and off (throughput.ts);
//   5. pipelined vs sequential prefill of 512 tokens through 2 stages in 2 worker threads (and the tiny model
//      over 3 stages in 3 threads) (prefill.ts);
//   6. the arithmetic of mixer slices (not implemented in the engine) (slices.ts).
// The model is Hymba-1.5B-shaped (real shapes, random weights) cut to 4 layers with no KV sharing, converted as
// 4 stages: [0] +embed, [1], [2], [3] +head; anything about 32 layers is extrapolated from it, and says so
// (bench-model.ts). Everything is measured first, then the report is written and printed.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Shares } from './profile.js';
import { machine } from './stats.js';
import { BENCH_LAYERS, benchDims, buildBenchModels, type BenchDims } from './stages/bench-model.js';
import { blockCosts, measureDecode, mlpShareOf, profileLayerStage, type DecodeTimings } from './stages/decode.js';
import { measureHops, type HopResults } from './stages/hops.js';
import { reportLatency } from './stages/latency.js';
import { measureMemory, reportMemory, type StageMemory } from './stages/memory.js';
import { planFullModel, reportPlans, type Plans } from './stages/planner.js';
import { measurePrefill, reportPrefill, type PrefillResults } from './stages/prefill.js';
import { Report } from './stages/report.js';
import { reportSlices } from './stages/slices.js';
import { reportThroughput } from './stages/throughput.js';

/** What is run on this machine (sections 2-5); the rest of the report is arithmetic on these. */
interface Measurements {
  convertSeconds: number;
  memory: StageMemory;
  decode: DecodeTimings;
  layerShares: Record<string, Shares>;
  hops: HopResults;
  prefill: PrefillResults;
}

/** Build and convert the models in a temporary directory, then run every measurement there, one at a time. */
async function measure(dims: BenchDims): Promise<Measurements> {
  const root = await mkdtemp(join(tmpdir(), 'hymba-stages-bench-'));
  try {
    const models = await buildBenchModels(root);
    return {
      convertSeconds: models.convertSeconds,
      memory: await measureMemory(dims.bench, models),
      decode: await measureDecode(models),
      layerShares: await profileLayerStage(models.int8),
      hops: await measureHops(dims.bench.H),
      prefill: await measurePrefill(dims, models),
    };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

type Machine = ReturnType<typeof machine>;

function reportHeader(r: Report, m: Machine, { full, bench }: BenchDims): void {
  r.line(
    `hymba-edge stages benchmark: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, Node ${m.node}, onnxruntime-web ${m.onnxruntimeWeb} (WASM, ${m.threads} thread per isolate/thread)`,
  );
  r.line(
    `model: Hymba-1.5B shapes (H ${bench.H}, d_in ${bench.dIn}, MLP ${bench.I}, V ${bench.V}), random weights, cut to ` +
      `${BENCH_LAYERS} layers without KV sharing and converted as 4 stages [0] +embed, [1], [2], [3] +head; numbers for ` +
      `the ${full.L}-layer model are EXTRAPOLATED per layer from these. Times: median (min-max) ms.`,
  );
}

/** Write the six sections; returns the numbers (the JSON's `results`), in the order the sections give them. */
function report(r: Report, dims: BenchDims, planned: Plans, m: Measurements): Record<string, unknown> {
  const { full, bench } = dims;
  const machineInfo = machine();
  reportHeader(r, machineInfo, dims);
  reportPlans(r, full, planned);
  reportMemory(r, bench, m.memory);
  const mlpShare = mlpShareOf(m.layerShares, full);
  const costs = { int8: blockCosts(m.decode.int8, mlpShare), f16: blockCosts(m.decode.f16, mlpShare) };
  const latency = reportLatency(r, full, bench.H, planned, m, costs);
  const throughput = reportThroughput(r, full, planned.plans.int8, m.decode, costs);
  reportPrefill(r, machineInfo, bench.H, m.prefill, m.hops);
  const mixerSlices = reportSlices(r, full, planned.plans, costs.int8, m.layerShares, latency[0]!);
  return {
    plans: planned.plans,
    layerPlans: planned.layerPlans,
    plansFitUpToContext: planned.fitsUpTo,
    convertSeconds: m.convertSeconds,
    memory: m.memory,
    decode: m.decode,
    layerShares: m.layerShares,
    hops: m.hops,
    prefill: m.prefill,
    latency,
    throughput,
    mixerSlices,
  };
}

/** Runs the whole stages benchmark, prints the report, writes `--json <file>` if asked; returns the numbers. */
export async function runStagesBench(argv: string[]): Promise<Record<string, unknown>> {
  const jsonAt = argv.indexOf('--json');
  const dims = benchDims();
  const planned = planFullModel(dims.full); // 1. the plan (arithmetic only)
  const measured = await measure(dims); // 2-5.
  const r = new Report();
  const results = report(r, dims, planned, measured);
  console.log(r.text());
  if (jsonAt >= 0 && argv[jsonAt + 1])
    await writeFile(argv[jsonAt + 1]!, JSON.stringify({ machine: machine(), results }, null, 2));
  return results;
}
