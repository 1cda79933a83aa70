// `npm run bench -- --stages`: what running Hymba-1.5B as stages in separate Durable Objects costs, measured on
// this machine where it can be and computed where it cannot:
//   1. the planner's stages for the full 32-layer config at int8 and f16 in a 128 MB budget (engine/stages/plan.ts);
//   2. the memory of one 1-layer stage in a fresh process (infra/plan/stage-memory-child.ts) beside the estimate;
//   3. per-token decode latency = measured compute per layer x layers per stage + hops x a hop latency
//      (measured here between worker threads; ASSUMED for Durable Object RPC);
//   4. decode tokens/s of 1, 4, 16 sessions with batching on (StageRunner.runBatch) and off;
//   5. pipelined vs sequential prefill of 512 tokens through 2 stages in 2 worker threads (and the tiny model
//      over 3 stages in 3 threads);
//   6. the arithmetic of layer slices (not implemented in the engine).
// The model is Hymba-1.5B-shaped (real shapes, random weights) cut to 4 layers with no KV sharing, converted as
// 4 stages: [0] +embed, [1], [2], [3] +head; anything about 32 layers is extrapolated from it, and says so.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { Worker } from 'node:worker_threads';
import { loadConfig, type HymbaDims } from '../../engine/model/config.js';
import {
  estimateStages,
  headWeightBytes,
  layerWeightBytes,
  maxContext,
  maxContextThatFits,
  MB,
  mlpWeightBytes,
  ORT_BASELINE_BYTES,
  planStages,
  stageContent,
  stageLabel,
  type ModelPlan,
  type StagePlan,
} from '../../engine/stages/plan.js';
import type { StageInput } from '../../engine/run/stage-runner.js';
import { measureStage, type StageMeasurement } from '../plan/measure.js';
import { makeTestModel } from '../test-model/make-test-model.js';
import { presetConfig, pyJson } from '../test-model/presets.js';
import { profileLayer, runChild, type Shares } from './profile.js';
import type { DecodeReport, StageDecodeTiming } from './stages-child.js';
import type { RunReply, WorkerMessage } from './stage-worker.js';
import { fmt, machine, time, type Timing } from './stats.js';

/** Layers of the bench model: [0] global +embed, [1], [2], [3] +head; sliding-window KV producers 1-3. */
const BENCH_LAYERS = 4;
const BENCH_STAGES = [0, 1, 2, 3].map((i) => ({ first: i, last: i + 1 }));
/** the 1-layer stage without embedding or head: layer 1, a sliding-window KV producer */
const LAYER_STAGE = 1;
/** text tokens of context each decoding session holds */
const CONTEXT = 256;
const SESSIONS = [1, 4, 16];
const BUDGET_MB = 128;
/** ASSUMED round trip of one Durable Object RPC call (session -> stage -> session), ms; see assumedHopText */
const ASSUMED_HOP_MS = 1;
const HOP_SENSITIVITY_MS = [1, 5, 20];
/** exchanges inside a mixer split into slices: x_proj's dt/B/C and the branch norms (out_proj is summed by the session) */
const MIXER_SLICE_EXCHANGES = 2;
const PREFILL_TOKENS = 512;
const CHUNK = 128;

const assumedHopText =
  `ASSUMED Durable Object RPC hop: ${ASSUMED_HOP_MS} ms per call round trip (session -> stage -> session), not measured ` +
  'here: workerd runs locally in one process, so only a production deployment can measure it. Why 1 ms: the stage ' +
  'objects of a model are created by the same SessionDO calls, and Cloudflare places a new Durable Object near ' +
  'where it is first requested (docs: "Data location"), so the objects usually share a data center, where a ' +
  "round trip is a local network hop plus Cap'n Proto RPC and a structured clone of a 6.4 kB [1, 1600] row. " +
  `If an object lands in another data center the hop is many ms: the totals are also given at ${HOP_SENSITIVITY_MS.join(', ')} ms.`;

const mb = (bytes: number, digits = 1): string => (bytes / MB).toFixed(digits);
const ms = (x: number, digits = 1): string => x.toFixed(digits);

function summarize(samples: number[]): Timing {
  const s = [...samples].sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)]!, min: s[0]!, max: s[s.length - 1]!, runs: s.length };
}

function table(rows: string[][], leftColumns = 1): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows
    .map((r) =>
      r
        .map((cell, c) => (c < leftColumns ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!)))
        .join('  ')
        .trimEnd(),
    )
    .map((l) => `  ${l}`)
    .join('\n');
}

const progress = (what: string): void => void process.stderr.write(`[bench --stages] ${what}\n`);

// ---------------------------------------------------------------- worker threads

/** A worker thread running infra/bench/stage-worker.ts (through tsx), with request/reply over messages. */
class StageThread {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();

  private constructor(private readonly worker: Worker) {
    worker.on('message', (m: { id: number; ok: boolean; error?: string }) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m);
      else p.reject(new Error(`stage worker: ${m.error}`));
    });
    worker.on('error', (e) => {
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    });
  }

  static async start(): Promise<StageThread> {
    const tsx = import.meta.resolve('tsx/esm/api');
    const script = new URL('./stage-worker.ts', import.meta.url).href;
    const boot = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(script)}); });`;
    const worker = new Worker(boot, { eval: true });
    const thread = new StageThread(worker);
    await new Promise<void>((resolve, reject) => {
      thread.pending.set(0, { resolve: () => resolve(), reject });
      worker.once('exit', (code) => reject(new Error(`stage worker exited ${code} before it was ready`)));
    });
    return thread;
  }

  call<T>(msg: WorkerMessage): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ ...msg, id });
    });
  }

  run(input: StageInput, logitsFrom: number): Promise<RunReply> {
    return this.call<RunReply>({ type: 'run', input, logitsFrom });
  }

  terminate(): Promise<number> {
    return this.worker.terminate();
  }
}

// ---------------------------------------------------------------- hop overhead

interface HopResults {
  /** ms per worker_threads round trip carrying a [1, H] Float32Array each way */
  roundTrip1: Timing;
  /** the same with a [128, H] prefill chunk */
  roundTrip128: Timing;
  /** ms per structuredClone of a [1, H] / [128, H] Float32Array */
  clone1: Timing;
  clone128: Timing;
}

async function measureHops(H: number): Promise<HopResults> {
  const thread = await StageThread.start();
  try {
    const perTrip = async (data: Float32Array, n: number): Promise<Timing> => {
      const t = await time(
        async () => {
          for (let i = 0; i < n; i++) await thread.call({ type: 'echo', data });
        },
        7,
        1,
      );
      return { median: t.median / n, min: t.min / n, max: t.max / n, runs: t.runs };
    };
    const perClone = async (data: Float32Array, n: number): Promise<Timing> => {
      const t = await time(
        async () => {
          for (let i = 0; i < n; i++) structuredClone(data);
        },
        7,
        1,
      );
      return { median: t.median / n, min: t.min / n, max: t.max / n, runs: t.runs };
    };
    const row = new Float32Array(H).fill(0.5);
    const chunk = new Float32Array(CHUNK * H).fill(0.5);
    return {
      roundTrip1: await perTrip(row, 500),
      roundTrip128: await perTrip(chunk, 50),
      clone1: await perClone(row, 2000),
      clone128: await perClone(chunk, 100),
    };
  } finally {
    await thread.terminate();
  }
}

// ---------------------------------------------------------------- pipelined prefill

interface PipelineResult {
  title: string;
  /** hidden width of the model: the rows that cross each hop are [128, H] */
  H: number;
  threads: string[];
  sequential: Timing;
  pipelined: Timing;
  /** per thread, per chunk: median ms of compute inside the thread, in the sequential runs */
  computeMs: number[][];
  /** the same in the pipelined runs (threads competing for cores and memory bandwidth) */
  computePipelinedMs: number[][];
  /** sum of compute: what one thread doing everything would take, hops excluded */
  idealSequentialMs: number;
  /** the pipelined schedule's critical path from the same compute times, hops excluded */
  idealPipelinedMs: number;
}

/**
 * Send the chunks through the threads in order, like StagePipeline.forward: one chunk at a time (returns every
 * reply, per thread in chunk order), or pipelined, chunk i+1 entering thread 0 while chunk i is in thread 1.
 */
async function prefill(threads: StageThread[], chunks: number[][], pipelined: boolean): Promise<RunReply[][]> {
  const replies: RunReply[][] = threads.map(() => []);
  if (!pipelined) {
    for (const chunk of chunks) {
      let input: StageInput = { ids: chunk };
      for (const [k, t] of threads.entries()) {
        const out = await t.run(input, chunk.length - 1);
        replies[k]!.push(out);
        if (out.hidden) input = { hidden: out.hidden };
      }
    }
    return replies;
  }
  const atStage: Promise<unknown>[] = threads.map(() => Promise.resolve());
  const steps: Promise<RunReply>[][] = threads.map(() => []);
  for (const chunk of chunks) {
    let input: Promise<StageInput> = Promise.resolve({ ids: chunk });
    for (const [k, t] of threads.entries()) {
      // this thread takes the chunk once it has its input and has finished the previous chunk
      const step: Promise<RunReply> = Promise.all([input, atStage[k]]).then(([inp]) => t.run(inp, chunk.length - 1));
      atStage[k] = step;
      steps[k]!.push(step);
      input = step.then((o) => ({ hidden: o.hidden! }));
    }
  }
  return Promise.all(steps.map((s) => Promise.all(s)));
}

async function benchPipeline(
  title: string,
  H: number,
  dir: string,
  groups: number[][],
  V: number,
  runs: number,
): Promise<PipelineResult> {
  const threads = await Promise.all(groups.map(() => StageThread.start()));
  try {
    await Promise.all(threads.map((t, k) => t.call({ type: 'init', dir, stages: groups[k]! })));
    const ids = Array.from({ length: PREFILL_TOKENS }, (_, i) => 3 + ((i * 104729) % (V - 3)));
    const chunks: number[][] = [];
    for (let s = 0; s < ids.length; s += CHUNK) chunks.push(ids.slice(s, s + CHUNK));
    const samples = { sequential: [] as number[], pipelined: [] as number[] };
    const compute = { sequential: [] as number[][][], pipelined: [] as number[][][] };
    for (const mode of ['sequential', 'pipelined'] as const) compute[mode] = threads.map(() => chunks.map(() => []));
    for (let r = 0; r < runs + 1; r++)
      for (const mode of ['sequential', 'pipelined'] as const) {
        await Promise.all(threads.map((t) => t.call({ type: 'reset' })));
        const t0 = performance.now();
        const replies = await prefill(threads, chunks, mode === 'pipelined');
        if (r === 0) continue; // run 0 warms both modes up
        samples[mode].push(performance.now() - t0);
        replies.forEach((rs, k) => rs.forEach((o, c) => compute[mode][k]![c]!.push(o.computeMs)));
      }
    const medians = (c: number[][][]): number[][] => c.map((perChunk) => perChunk.map((s) => summarize(s).median));
    // the ideal schedules use the sequential runs' compute: no two threads competing for the cores
    const computeMs = medians(compute.sequential);
    const idealSequentialMs = computeMs.flat().reduce((a, b) => a + b, 0);
    // finish[k][c] = max(finish[k-1][c], finish[k][c-1]) + compute[k][c]
    const finish: number[][] = computeMs.map((row) => row.map(() => 0));
    computeMs.forEach((row, k) =>
      row.forEach((t, c) => {
        finish[k]![c] = Math.max(k > 0 ? finish[k - 1]![c]! : 0, c > 0 ? finish[k]![c - 1]! : 0) + t;
      }),
    );
    return {
      title,
      H,
      threads: groups.map((g) => `stages ${g.join('+')}`),
      sequential: summarize(samples.sequential),
      pipelined: summarize(samples.pipelined),
      computeMs,
      computePipelinedMs: medians(compute.pipelined),
      idealSequentialMs,
      idealPipelinedMs: finish[finish.length - 1]![chunks.length - 1]!,
    };
  } finally {
    await Promise.all(threads.map((t) => t.terminate()));
  }
}

// ---------------------------------------------------------------- decode arithmetic

/**
 * Decode compute of the blocks a planned stage can hold, from the bench model's measured stages: a layer is
 * the 1-layer stage; its mixer block (attention + SSM) and MLP block split it by the MLP's share of the
 * layer's kernel time (ORT profiler, decode); the embedding and the head add stage 0's and stage 3's time
 * over the layer stage. Each is ms for a step of B sessions, batching on or off (B = 1: one run).
 */
interface BlockCosts {
  layer: (B: number, on: boolean) => number;
  mixer: (B: number, on: boolean) => number;
  mlp: (B: number, on: boolean) => number;
  embed: (B: number, on: boolean) => number;
  head: (B: number, on: boolean) => number;
  mlpShare: number;
}

function blockCosts(report: DecodeReport, mlpShare: number): BlockCosts {
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
function stepTimes(d: HymbaDims, plan: ModelPlan, c: BlockCosts, B: number, on: boolean, mixerScale = 1): number[] {
  const steps = new Array<number>(plan.steps).fill(0);
  for (const s of plan.stages) steps[s.step] = Math.max(steps[s.step]!, stageTime(d, s, c, B, on, mixerScale));
  return steps;
}

const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

interface LatencyRow {
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

interface ThroughputRow {
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

/** Planned stages grouped by what they hold (numbers in the label as N) and their size: a compact plan table. */
function planGroups(plan: ModelPlan): string[][] {
  const groups = new Map<string, { example: string; count: number; s: StagePlan }>();
  for (const s of plan.stages) {
    const label = stageLabel(s);
    const key = `${label.replace(/\d+/g, 'N')}|${mb(s.weightBytes)}|${mb(s.estimatedBytes)}|${s.overBudget}`;
    const g = groups.get(key);
    if (g) g.count++;
    else groups.set(key, { example: label, count: 1, s });
  }
  const rows = [['holds (first of the kind)', 'stages', 'weight MB each', 'est. MB each', 'state MB/session', '']];
  for (const { example, count, s } of groups.values())
    rows.push([
      example,
      String(count),
      mb(s.weightBytes),
      mb(s.estimatedBytes),
      mb(s.stateBytesPerSession, 2),
      s.overBudget ? 'OVER BUDGET' : '',
    ]);
  return rows;
}

// ---------------------------------------------------------------- the run

/** Runs the whole stages benchmark, prints the report, writes `--json <file>` if asked; returns the numbers. */
export async function runStagesBench(argv: string[]): Promise<Record<string, unknown>> {
  const jsonAt = argv.indexOf('--json');
  const results: Record<string, unknown> = {};
  const out: string[] = [];
  const section = (title: string): void => void out.push('', title);
  const line = (text = ''): void => void out.push(text);

  const full = loadConfig(JSON.parse(pyJson(presetConfig('hymba-1.5b')))).dims;
  const benchConfig = { ...presetConfig('hymba-1.5b', BENCH_LAYERS), kv_reuse_group: [] };
  const bench: HymbaDims = loadConfig(JSON.parse(pyJson(benchConfig))).dims;

  // 1. the plan (arithmetic only)
  const plans = {
    int8: planStages(full, { dtype: 'int8', budgetMb: BUDGET_MB }),
    f16: planStages(full, { dtype: 'f16', budgetMb: BUDGET_MB }),
  };
  // the same with whole layers only (KV groups kept whole), as the planner did before sub-layer stages
  const layerPlans = {
    int8: planStages(full, { dtype: 'int8', budgetMb: BUDGET_MB, granularity: 'layers' }),
    f16: planStages(full, { dtype: 'f16', budgetMb: BUDGET_MB, granularity: 'layers' }),
  };
  const fitsUpTo = {
    int8: maxContextThatFits(full, { dtype: 'int8', budgetMb: BUDGET_MB }),
    f16: maxContextThatFits(full, { dtype: 'f16', budgetMb: BUDGET_MB }),
  };
  results.plans = plans;
  results.layerPlans = layerPlans;
  results.plansFitUpToContext = fitsUpTo;

  const root = await mkdtemp(join(tmpdir(), 'hymba-stages-bench-'));
  try {
    const dirs = {
      hf: join(root, 'hf'),
      int8: join(root, 'int8'),
      f16: join(root, 'f16'),
      tinyHf: join(root, 'tiny-hf'),
      tiny: join(root, 'tiny'),
    };
    progress(`building a ${BENCH_LAYERS}-layer Hymba-1.5B-shaped checkpoint (random weights) and the tiny preset`);
    let t = performance.now();
    await makeTestModel(dirs.hf, {
      preset: 'hymba-1.5b',
      layers: BENCH_LAYERS,
      seed: 1,
      tokenizer: false,
      overrides: { kv_reuse_group: [] },
    });
    await makeTestModel(dirs.tinyHf, { preset: 'tiny', seed: 1, tokenizer: false });
    progress(`  ${ms((performance.now() - t) / 1000)} s; converting to int8 and f16 (two child processes at once)`);
    t = performance.now();
    const convert = (
      hf: string,
      dir: string,
      dtype: string,
      stages: { first: number; last: number }[],
    ): Promise<string> => runChild('./stages-child.ts', ['convert', hf, dir, dtype, JSON.stringify(stages)]);
    await Promise.all([
      convert(dirs.hf, dirs.int8, 'int8', BENCH_STAGES),
      convert(dirs.hf, dirs.f16, 'f16', BENCH_STAGES),
    ]);
    const tinyStages = [
      { first: 0, last: 4 },
      { first: 4, last: 7 },
      { first: 7, last: 8 },
    ];
    await convert(dirs.tinyHf, dirs.tiny, 'f32', tinyStages);
    results.convertSeconds = (performance.now() - t) / 1000;
    progress(`  ${ms((performance.now() - t) / 1000)} s`);

    // 2. memory of one 1-layer stage in a fresh process
    progress('measuring the memory of the 1-layer stage in fresh processes (int8, f16)');
    const context = maxContext(bench);
    const memory: Record<string, { measured: StageMeasurement; estimate: ModelPlan }> = {};
    for (const dtype of ['int8', 'f16'] as const) {
      const measured = await measureStage(dirs[dtype], LAYER_STAGE, { runTokens: CHUNK, context });
      const estimate = estimateStages(
        bench,
        [{ first: LAYER_STAGE, last: LAYER_STAGE + 1, embed: false, head: false }],
        { dtype, contextTokens: context, runTokens: CHUNK },
      );
      memory[dtype] = { measured, estimate };
    }
    results.memory = memory;

    // 3-4. decode: per stage, batch 1; batching on/off
    progress(`timing decode per stage at ${CONTEXT} tokens of context, int8 (batch 1, 4, 16 on and off) and f16`);
    const decodeChild = async (dir: string, batchStages: number[]): Promise<DecodeReport> => {
      const text = await runChild('./stages-child.ts', [
        'decode',
        dir,
        String(CONTEXT),
        JSON.stringify(batchStages),
        JSON.stringify(SESSIONS.filter((s) => s > 1)),
      ]);
      const l = text.split('\n').find((x) => x.startsWith('@@decode '));
      if (!l) throw new Error('the decode child printed no @@decode line');
      return JSON.parse(l.slice('@@decode '.length)) as DecodeReport;
    };
    const decode = {
      int8: await decodeChild(dirs.int8, [0, 1, 2, 3]),
      f16: await decodeChild(dirs.f16, [LAYER_STAGE]),
    };
    results.decode = decode;

    progress('profiling the int8 layer stage (ORT profiler, child process) for the matmul share');
    const shares: Record<string, Shares> = await profileLayer(join(dirs.int8, `stage-${LAYER_STAGE}.onnx`), 5);
    results.layerShares = shares;

    progress('timing hops between worker threads');
    const hops = await measureHops(bench.H);
    results.hops = hops;

    // 5. pipelined prefill in worker threads
    progress(`prefill ${PREFILL_TOKENS} tokens through 2 stages in 2 worker threads (int8), sequential vs pipelined`);
    const pipe2 = await benchPipeline(
      `bench model int8, 2 stages: layers 0-1 +embed | layers 2-3 +head`,
      bench.H,
      dirs.int8,
      [
        [0, 1],
        [2, 3],
      ],
      bench.V,
      5,
    );
    progress('tiny model over 3 stages in 3 worker threads');
    const tinyDims = loadConfig(JSON.parse(pyJson(presetConfig('tiny')))).dims;
    const pipeTiny = await benchPipeline(
      `tiny preset f32, 3 stages: layers 0-3 +embed | 4-6 | 7 +head`,
      tinyDims.H,
      dirs.tiny,
      [[0], [1], [2]],
      tinyDims.V,
      5,
    );
    results.prefill = { twoStages: pipe2, tiny: pipeTiny };

    // ------------------------------------------------------------ report
    const m = machine();
    line(
      `hymba-edge stages benchmark: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, Node ${m.node}, onnxruntime-web ${m.onnxruntimeWeb} (WASM, ${m.threads} thread per isolate/thread)`,
    );
    line(
      `model: Hymba-1.5B shapes (H ${bench.H}, d_in ${bench.dIn}, MLP ${bench.I}, V ${bench.V}), random weights, cut to ` +
        `${BENCH_LAYERS} layers without KV sharing and converted as 4 stages [0] +embed, [1], [2], [3] +head; numbers for ` +
        `the ${full.L}-layer model are EXTRAPOLATED per layer from these. Times: median (min-max) ms.`,
    );

    section(
      `1. Stages the planner (engine/stages/plan.ts) gives the full ${full.L}-layer Hymba-1.5B config, ${BUDGET_MB} MB per isolate`,
    );
    for (const dtype of ['int8', 'f16'] as const) {
      const p = plans[dtype];
      const lp = layerPlans[dtype];
      const range = (xs: number[], digits = 1): string =>
        `${mb(Math.min(...xs), digits)}-${mb(Math.max(...xs), digits)}`;
      line();
      line(
        `  ${dtype}: ${p.stages.length} stages (${p.granularity === 'units' ? 'sub-layer units: mixer / MLP blocks, slices, K/V mirrors' : 'whole layers'}), ` +
          `${p.steps} sequential steps and ${p.hops} stage calls per token, runs of up to ${p.runTokens} tokens, state of ${p.hotSessions} session at ${p.contextTokens} tokens; ` +
          `${p.stages.filter((x) => x.overBudget).length} over budget; weight ${range(p.stages.map((x) => x.weightBytes))} MB, estimate ${range(
            p.stages.map((x) => x.estimatedBytes),
            0,
          )} MB per stage`,
      );
      line(table(planGroups(p), 1));
      for (const problem of p.problems) line(`    over budget: ${problem}`);
      line(
        `    the whole plan fits up to ${fitsUpTo[dtype]} tokens of context per session` +
          (fitsUpTo[dtype] > 0 ? '' : ' (none: it needs more than the budget even without state)'),
      );
      line(
        `    whole layers only (granularity 'layers'): ${lp.stages.length} stages of ${range(lp.stages.map((x) => x.weightBytes))} MB weights, estimate ${range(
          lp.stages.map((x) => x.estimatedBytes),
          0,
        )} MB, ` + `${lp.stages.filter((x) => x.overBudget).length} over budget (runs of ${lp.runTokens} tokens)`,
      );
    }

    section(
      `2. Memory of one 1-layer stage process (layer ${LAYER_STAGE}: sliding-window KV producer, no embedding or head), fresh Node process per dtype`,
    );
    line(
      `  (infra/plan/stage-memory-child.ts: WASM heap growth over an initialised ORT after the session is created, then after one decode`,
    );
    line(
      `  step at ${context} tokens of state and one ${CHUNK}-token run; total = WASM heap + JS heap after the runs; 1 sample each)`,
    );
    const memRows = [
      [
        'dtype',
        'weights MB',
        'heap after load MB',
        'planner: factor x weights',
        'heap after runs MB',
        'planner: + activation + state',
        'total MB',
        'planner estimate MB',
        'RSS growth MB',
      ],
    ];
    for (const dtype of ['int8', 'f16'] as const) {
      const { measured, estimate } = memory[dtype]!;
      const s = estimate.stages[0]!;
      const load = s.ortBytes - estimate.baselineBytes - estimate.activationBytes;
      const run = measured.raw.run;
      memRows.push([
        dtype,
        mb(s.weightBytes),
        `${mb(measured.heapAfterLoad)} (${(measured.heapAfterLoad / s.execBytes).toFixed(2)}x)`,
        `${mb(load)} (${estimate.factor}x)`,
        mb(measured.heapAfterRuns),
        mb(load + estimate.activationBytes + s.runStateBytes + s.stateBytesPerSession),
        mb((run.wasmHeap ?? 0) + run.jsHeap),
        mb(s.estimatedBytes),
        mb(measured.rssAfterRuns),
      ]);
    }
    line(table(memRows));
    line(
      `  budget: ${BUDGET_MB} MB per isolate; the planner's estimate also counts the ${mb(ORT_BASELINE_BYTES)} MB baseline`,
    );

    // 3. latency
    // the MLP block's share of a layer's decode time, from the profiler (kernel time by scope)
    const mlpShare =
      shares.decode?.byScope.mlp ?? mlpWeightBytes(full, full.I, 'int8') / layerWeightBytes(full, 1, 'int8');
    const costs = { int8: blockCosts(decode.int8, mlpShare), f16: blockCosts(decode.f16, mlpShare) };
    section(`3. Decode latency per token (batch 1, ${CONTEXT} tokens of context): compute + hops`);
    const stageRows = [['stage', 'layers', ...(['int8', 'f16'] as const).map((d) => `${d} ms`)]];
    for (const [k, st] of decode.int8.stages.entries())
      stageRows.push([String(k), stageLabel(st), fmt(st.single), fmt(decode.f16.stages[k]!.single)]);
    line('  measured, one decode step per stage of the bench model (StageRunner.run, 9 runs):');
    line(table(stageRows, 2));
    for (const dtype of ['int8', 'f16'] as const) {
      const c = costs[dtype];
      line(
        `  ${dtype}: per layer ${ms(c.layer(1, true))} ms (stage ${LAYER_STAGE}); embedding adds ${ms(c.embed(1, true))} ms (stage 0 - stage ${LAYER_STAGE}); ` +
          `head adds ${ms(c.head(1, true))} ms (stage 3 - stage ${LAYER_STAGE}; a negative difference counts as 0): ` +
          `${(c.head(1, true) / c.layer(1, true)).toFixed(1)}x a layer, for ${mb(headWeightBytes(full, dtype))} MB of head weights vs ${mb(layerWeightBytes(full, 1, dtype))} MB per layer`,
      );
    }
    line(
      `  a layer's mixer block (attention + SSM) vs its MLP block: ${(100 * (1 - mlpShare)).toFixed(0)}% / ${(100 * mlpShare).toFixed(0)}% of its decode kernel time ` +
        `(ORT profiler, int8, scope "mlp"; used for both dtypes and every batch size)`,
    );
    line(
      `  hop overhead measured here: worker_threads round trip carrying a [1, ${bench.H}] Float32Array each way ${fmt(hops.roundTrip1, 3)} ms; ` +
        `structuredClone of it ${fmt(hops.clone1, 4)} ms`,
    );
    line(
      `    (a [${CHUNK}, ${bench.H}] prefill chunk: round trip ${fmt(hops.roundTrip128, 2)} ms, structuredClone ${fmt(hops.clone128, 3)} ms)`,
    );
    line(`  ${assumedHopText}`);
    line(
      `  planned ${full.L}-layer model, EXTRAPOLATED: per stage = its mixers, MLP blocks (or slice: its share), embedding/head rows at the measured times;`,
    );
    line(
      `  per token: the sum over sequential steps of the step's slowest stage (slices of a block run in parallel), plus one RPC round trip per step`,
    );
    line(
      "  (star: session -> the step's stage(s) -> session). Per-run overhead of a stage beyond its blocks is not counted.",
    );
    const latency = [
      latencyRow(`int8 (${plans.int8.granularity})`, full, plans.int8, costs.int8, hops.roundTrip1.median),
      latencyRow(`f16 (${plans.f16.granularity})`, full, plans.f16, costs.f16, hops.roundTrip1.median),
      latencyRow('int8 whole layers', full, layerPlans.int8, costs.int8, hops.roundTrip1.median),
      latencyRow('f16 whole layers', full, layerPlans.f16, costs.f16, hops.roundTrip1.median),
    ];
    results.latency = latency;
    const latRows = [
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
      latRows.push([
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
    line(table(latRows));

    // 4. throughput
    section(
      `4. Decode throughput, S concurrent sessions at ${CONTEXT} tokens of context each (int8), batching ON (runBatch) vs OFF (one run per session)`,
    );
    const c8 = costs.int8;
    const thr = SESSIONS.map((S) => throughputRow(full, plans.int8, c8, S, ASSUMED_HOP_MS));
    results.throughput = thr;
    line(`  measured on the 1-layer stage (layer ${LAYER_STAGE}), one decode step of all S sessions (5 runs):`);
    const layerRows = [['S', 'ON ms/step', 'ON tok/s', 'OFF ms/step', 'OFF tok/s', 'ON / OFF']];
    for (const S of SESSIONS) {
      const st = decode.int8.stages[LAYER_STAGE]!;
      const row = st.batches.find((b) => b.B === S);
      const on = row ? fmt(row.on) : fmt(st.single);
      const off = row ? fmt(row.off) : fmt(st.single);
      const onMs = c8.layer(S, true);
      const offMs = c8.layer(S, false);
      layerRows.push([
        String(S),
        on,
        ((1000 * S) / onMs).toFixed(1),
        off,
        ((1000 * S) / offMs).toFixed(1),
        `${(offMs / onMs).toFixed(2)}x`,
      ]);
    }
    line(table(layerRows));
    line(
      `  (the same for f16, which runs fp32 maths: ${SESSIONS.map((S) => `S=${S} ON ${((1000 * S) / costs.f16.layer(S, true)).toFixed(1)} / OFF ${((1000 * S) / costs.f16.layer(S, false)).toFixed(1)} tok/s`).join(', ')})`,
    );
    line(
      `  whole pipeline, EXTRAPOLATED to the planned int8 model (${plans.int8.stages.length} stages, ${plans.int8.steps} steps; each stage's time for S sessions from the`,
    );
    line(
      `  layer stage's and the embedding/head's measured times for S sessions, split as in 3), ${ASSUMED_HOP_MS} ms per hop (assumed), each stage its own isolate on its own core. Model:`,
    );
    line(
      `    lockstep: all S steps reach each stage together and run there as one batch (ON) or one after another (OFF);`,
    );
    line(`      the other stages wait: tok/s = S / (sum over steps of t_step(S) + steps x hop)`);
    line(
      `    parallel bound: stages serve different sessions at once; tok/s = min(S / (sum t_step(1) + steps x hop), S / max_k t_k(S))`,
    );
    line(`      (latency bound, and the slowest stage serving all S); the truth lies between the two`);
    const thrRows = [
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
      thrRows.push([
        String(r.sessions),
        r.lockstepOn.toFixed(2),
        r.boundOn.toFixed(2),
        r.lockstepOff.toFixed(2),
        r.boundOff.toFixed(2),
        ms((1000 * r.sessions) / r.lockstepOn, 0),
      ]);
    line(table(thrRows));

    // 5. prefill
    section(
      `5. Prefill ${PREFILL_TOKENS} tokens (${PREFILL_TOKENS / CHUNK} chunks of ${CHUNK}), sequential vs pipelined across worker threads (one ORT instance each)`,
    );
    line(
      `  this machine has ${m.cores} cores: 2 stage threads can run in parallel, 3 cannot all; the main thread (the "session") only forwards`,
    );
    line(
      '  hidden states ([128, H] fp32 structured-cloned each way, as DO RPC would). The 2-stage model runs each side as 2 stage graphs in one thread.',
    );
    for (const p of [pipe2, pipeTiny]) {
      line();
      line(`  ${p.title} (threads: ${p.threads.join(' | ')}), ${p.sequential.runs} runs each, alternating:`);
      line(
        `    sequential ${fmt(p.sequential, 0)} ms, pipelined ${fmt(p.pipelined, 0)} ms: ${(p.sequential.median / p.pipelined.median).toFixed(2)}x faster`,
      );
      const perChunk = (c: number[][]): string =>
        c.map((row, k) => `${p.threads[k]}: ${row.map((x) => ms(x, 0)).join(', ')}`).join('; ');
      line(`    compute per chunk in each thread (medians, ms), sequential runs: ${perChunk(p.computeMs)}`);
      line(`                                                 pipelined runs:  ${perChunk(p.computePipelinedMs)}`);
      const sum = (c: number[][]): number => c.flat().reduce((x, y) => x + y, 0);
      line(
        `    the same work took ${(sum(p.computePipelinedMs) / sum(p.computeMs)).toFixed(2)}x longer inside the threads when they overlapped (cores, memory bandwidth, other load)`,
      );
      line(
        `    from those: sequential ${ms(p.idealSequentialMs, 0)} ms, pipelined schedule ${ms(p.idealPipelinedMs, 0)} ms (ideal ${(p.idealSequentialMs / p.idealPipelinedMs).toFixed(2)}x); ` +
          `hops: ${p.computeMs.length * p.computeMs[0]!.length} round trips of at most a [${CHUNK}, ${p.H}] chunk` +
          (p.H === bench.H
            ? `, ~${ms(p.computeMs.length * p.computeMs[0]!.length * hops.roundTrip128.median, 0)} ms at the measured ${ms(hops.roundTrip128.median, 2)} ms`
            : ` (less than the measured ${ms(hops.roundTrip128.median, 2)} ms of a [${CHUNK}, ${bench.H}] one each)`) +
          ': the rest of the gap is contention and noise',
      );
    }

    // 6. mixer slices
    section(
      "6. Mixer slices (a layer's attention heads / SSM channels split over 2 objects): NOT implemented in the engine; ESTIMATE only",
    );
    line(
      '  the planner already cuts layers into mixer and MLP blocks and slices MLPs, embedding and head (section 1); what it names as missing',
    );
    line(
      '  is slicing the mixer block. Splitting every mixer of the int8 plan in 2 (the same steps, the halves in parallel):',
    );
    const share = shares.decode?.byKind['weight matmuls'] ?? 0;
    const mix = c8.mixer(1, true);
    const scaleRest = 1 - share / 2;
    const base = latency[0]!;
    const exchanges = (h: number): number => full.L * MIXER_SLICE_EXCHANGES * h;
    const slicedMs = (scale: number, h: number): number =>
      sum(stepTimes(full, plans.int8, c8, 1, true, scale)) + plans.int8.steps * h + exchanges(h);
    line(
      `  measured: int8 mixer block ${ms(mix)} ms per token (layer ${ms(c8.layer(1, true))} ms x ${(100 * (1 - mlpShare)).toFixed(0)}%); weight matmuls are ${(100 * share).toFixed(0)}% of a layer's decode kernel time (ORT profiler)`,
    );
    line(
      `  each half runs half the matmuls: ${ms(mix * scaleRest)} ms if the rest of the mixer stays whole in each half, ${ms(mix / 2)} ms if everything halves`,
    );
    line(
      `  extra: ${MIXER_SLICE_EXCHANGES} exchanges inside each mixer (x_proj's dt/B/C need every channel; the branch norms need every channel's square), one hop each;`,
    );
    line(
      "  out_proj's partial sums come back to the session and are added there, as the MLP slices' are (no extra hop)",
    );
    const sliceRows = [
      ['hop ms', 'unsplit ms/token', 'sliced ms/token (rest whole)', 'sliced (all halves)', 'of which exchanges'],
    ];
    const sliceResults: Record<string, unknown>[] = [];
    for (const h of HOP_SENSITIVITY_MS) {
      const a = slicedMs(scaleRest, h);
      const b = slicedMs(0.5, h);
      sliceRows.push([String(h), ms(base.totalAtMs[h]!, 0), ms(a, 0), ms(b, 0), ms(exchanges(h), 0)]);
      sliceResults.push({
        hopMs: h,
        unsplit: base.totalAtMs[h],
        slicedRestWhole: a,
        slicedAllHalves: b,
        exchanges: exchanges(h),
      });
    }
    line(table(sliceRows));
    // memory: everything but the baseline divides by the number of slices (weights, activations, state by heads)
    const overMixers = new Map<string, { label: string; est: number; n: number; count: number }>();
    for (const dtype of ['int8', 'f16'] as const)
      for (const st of plans[dtype].stages.filter((x) => x.overBudget)) {
        const n = Math.ceil((st.estimatedBytes - ORT_BASELINE_BYTES) / (BUDGET_MB * MB - ORT_BASELINE_BYTES));
        const key = `${dtype} ${mb(st.estimatedBytes, 0)}`;
        const g = overMixers.get(key);
        if (g) g.count++;
        else overMixers.set(key, { label: `${dtype} ${stageLabel(st)}`, est: st.estimatedBytes, n, count: 1 });
      }
    for (const g of overMixers.values())
      line(
        `  memory: ${g.label} (and ${g.count - 1} alike) needs ~${mb(g.est, 0)} MB: in ${g.n} slices ~${mb(ORT_BASELINE_BYTES + (g.est - ORT_BASELINE_BYTES) / g.n, 0)} MB each ` +
          '(everything but the baseline divided: weights, activations, K/V by heads)',
      );
    results.mixerSlices = { matmulShare: share, mixerMs: mix, perHop: sliceResults, memory: [...overMixers.values()] };
  } finally {
    await rm(root, { recursive: true, force: true });
  }

  console.log(out.join('\n'));
  if (jsonAt >= 0 && argv[jsonAt + 1])
    await writeFile(argv[jsonAt + 1]!, JSON.stringify({ machine: machine(), results }, null, 2));
  return results;
}
