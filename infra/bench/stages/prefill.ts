// 5. Pipelined vs sequential prefill of 512 tokens in chunks of 128 through stages in worker threads, one ORT
// instance each: the bench model over 2 threads (2 stage graphs each), the tiny model over 3. Beside the wall
// times, the compute each thread reports gives the ideal sequential and pipelined schedules without hops.

import type { StageInput } from '../../../engine/run/stage-runner.js';
import { fmt, type Timing } from '../stats.js';
import { CHUNK, type BenchDims, type BenchModels } from './bench-model.js';
import type { HopResults } from './hops.js';
import { ms, progress, summarize, type Report } from './report.js';
import { StageThread } from './stage-thread.js';
import type { RunReply } from './stage-worker.js';

const PREFILL_TOKENS = 512;
/** timed runs per mode, after one warm-up run of both */
const RUNS = 5;
const MODES = ['sequential', 'pipelined'] as const;
type Mode = (typeof MODES)[number];

export interface PipelineResult {
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

export interface PrefillResults {
  twoStages: PipelineResult;
  tiny: PipelineResult;
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

/** PREFILL_TOKENS ids spread over the vocabulary, in chunks of CHUNK. */
function promptChunks(V: number): number[][] {
  const ids = Array.from({ length: PREFILL_TOKENS }, (_, i) => 3 + ((i * 104729) % (V - 3)));
  const chunks: number[][] = [];
  for (let s = 0; s < ids.length; s += CHUNK) chunks.push(ids.slice(s, s + CHUNK));
  return chunks;
}

interface ModeSamples {
  /** wall ms per run */
  samples: Record<Mode, number[]>;
  /** [thread][chunk] -> compute ms per run */
  compute: Record<Mode, number[][][]>;
}

/** Run 0 warms both modes up; then RUNS runs of each, alternating, every thread's state reset before each. */
async function runModes(threads: StageThread[], chunks: number[][]): Promise<ModeSamples> {
  const samples = { sequential: [] as number[], pipelined: [] as number[] };
  const compute = { sequential: [] as number[][][], pipelined: [] as number[][][] };
  for (const mode of MODES) compute[mode] = threads.map(() => chunks.map(() => []));
  for (let r = 0; r < RUNS + 1; r++)
    for (const mode of MODES) {
      await Promise.all(threads.map((t) => t.call({ type: 'reset' })));
      const t0 = performance.now();
      const replies = await prefill(threads, chunks, mode === 'pipelined');
      if (r === 0) continue; // run 0 warms both modes up
      samples[mode].push(performance.now() - t0);
      replies.forEach((rs, k) => rs.forEach((o, c) => compute[mode][k]![c]!.push(o.computeMs)));
    }
  return { samples, compute };
}

/** The pipelined schedule's finish time: finish[k][c] = max(finish[k-1][c], finish[k][c-1]) + compute[k][c]. */
function pipelinedFinishMs(computeMs: number[][]): number {
  const finish: number[][] = computeMs.map((row) => row.map(() => 0));
  computeMs.forEach((row, k) =>
    row.forEach((t, c) => {
      finish[k]![c] = Math.max(k > 0 ? finish[k - 1]![c]! : 0, c > 0 ? finish[k]![c - 1]! : 0) + t;
    }),
  );
  return finish[finish.length - 1]![computeMs[0]!.length - 1]!;
}

/** Prefill through one thread per group of stages of the converted model in `dir`. */
async function benchPipeline(
  title: string,
  H: number,
  dir: string,
  groups: number[][],
  V: number,
): Promise<PipelineResult> {
  const threads = await Promise.all(groups.map(() => StageThread.start()));
  try {
    await Promise.all(threads.map((t, k) => t.call({ type: 'init', dir, stages: groups[k]! })));
    const { samples, compute } = await runModes(threads, promptChunks(V));
    const medians = (c: number[][][]): number[][] => c.map((perChunk) => perChunk.map((s) => summarize(s).median));
    // the ideal schedules use the sequential runs' compute: no two threads competing for the cores
    const computeMs = medians(compute.sequential);
    return {
      title,
      H,
      threads: groups.map((g) => `stages ${g.join('+')}`),
      sequential: summarize(samples.sequential),
      pipelined: summarize(samples.pipelined),
      computeMs,
      computePipelinedMs: medians(compute.pipelined),
      idealSequentialMs: computeMs.flat().reduce((a, b) => a + b, 0),
      idealPipelinedMs: pipelinedFinishMs(computeMs),
    };
  } finally {
    await Promise.all(threads.map((t) => t.terminate()));
  }
}

export async function measurePrefill({ bench, tiny }: BenchDims, dirs: BenchModels): Promise<PrefillResults> {
  progress(`prefill ${PREFILL_TOKENS} tokens through 2 stages in 2 worker threads (int8), sequential vs pipelined`);
  const twoStages = await benchPipeline(
    `bench model int8, 2 stages: layers 0-1 +embed | layers 2-3 +head`,
    bench.H,
    dirs.int8,
    [
      [0, 1],
      [2, 3],
    ],
    bench.V,
  );
  progress('tiny model over 3 stages in 3 worker threads');
  const tinyResult = await benchPipeline(
    `tiny preset f32, 3 stages: layers 0-3 +embed | 4-6 | 7 +head`,
    tiny.H,
    dirs.tiny,
    [[0], [1], [2]],
    tiny.V,
  );
  return { twoStages, tiny: tinyResult };
}

/** One pipeline's wall times, compute per chunk inside the threads, and the ideal schedules from those. */
function reportPipeline(r: Report, p: PipelineResult, benchH: number, hops: HopResults): void {
  r.line();
  r.line(`  ${p.title} (threads: ${p.threads.join(' | ')}), ${p.sequential.runs} runs each, alternating:`);
  r.line(
    `    sequential ${fmt(p.sequential, 0)} ms, pipelined ${fmt(p.pipelined, 0)} ms: ${(p.sequential.median / p.pipelined.median).toFixed(2)}x faster`,
  );
  const perChunk = (c: number[][]): string =>
    c.map((row, k) => `${p.threads[k]}: ${row.map((x) => ms(x, 0)).join(', ')}`).join('; ');
  r.line(`    compute per chunk in each thread (medians, ms), sequential runs: ${perChunk(p.computeMs)}`);
  r.line(`                                                 pipelined runs:  ${perChunk(p.computePipelinedMs)}`);
  const sum = (c: number[][]): number => c.flat().reduce((x, y) => x + y, 0);
  r.line(
    `    the same work took ${(sum(p.computePipelinedMs) / sum(p.computeMs)).toFixed(2)}x longer inside the threads when they overlapped (cores, memory bandwidth, other load)`,
  );
  const trips = p.computeMs.length * p.computeMs[0]!.length;
  const trip128 = hops.roundTrip128.median;
  r.line(
    `    from those: sequential ${ms(p.idealSequentialMs, 0)} ms, pipelined schedule ${ms(p.idealPipelinedMs, 0)} ms (ideal ${(p.idealSequentialMs / p.idealPipelinedMs).toFixed(2)}x); ` +
      `hops: ${trips} round trips of at most a [${CHUNK}, ${p.H}] chunk` +
      (p.H === benchH
        ? `, ~${ms(trips * trip128, 0)} ms at the measured ${ms(trip128, 2)} ms`
        : ` (less than the measured ${ms(trip128, 2)} ms of a [${CHUNK}, ${benchH}] one each)`) +
      ': the rest of the gap is contention and noise',
  );
}

export function reportPrefill(
  r: Report,
  machine: Record<string, string | number>,
  benchH: number,
  prefills: PrefillResults,
  hops: HopResults,
): void {
  r.section(
    `5. Prefill ${PREFILL_TOKENS} tokens (${PREFILL_TOKENS / CHUNK} chunks of ${CHUNK}), sequential vs pipelined across worker threads (one ORT instance each)`,
  );
  r.line(
    `  this machine has ${machine.cores} cores: 2 stage threads can run in parallel, 3 cannot all; the main thread (the "session") only forwards`,
  );
  r.line(
    '  hidden states ([128, H] fp32 structured-cloned each way, as DO RPC would). The 2-stage model runs each side as 2 stage graphs in one thread.',
  );
  for (const p of [prefills.twoStages, prefills.tiny]) reportPipeline(r, p, benchH, hops);
}
