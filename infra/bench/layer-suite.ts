// The per-layer part of `npm run bench -- --engine`: one Hymba-1.5B-shaped layer at f32 and int8 (q4 runs
// as int8 after expansion, so it is reported as storage only) against the limits measured in the same run,
// kernel-time shares from ORT's profiler, whole-model estimates, process memory per dtype, and the same
// graphs in onnxruntime-node (native, one thread) when it is installed.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { HymbaDims } from '../../engine/model/config.js';
import { loadGraph } from '../../engine/run/ort.js';
import {
  buildLayer,
  DECODE_BATCH,
  fullModelLayers,
  layerModel,
  layerWeights,
  runAll,
  workloads,
  type LayerDtype,
  type LayerGraph,
  type Runner,
} from './layer-graph.js';
import { MATMUL_SHAPE, wasmBandwidth, wasmMatmul } from './limits.js';
import { wasmSumBandwidth } from './wasm-sum.js';
import { profileLayer, runChild, type Shares } from './profile.js';
import { fmt, time, type Timing } from './stats.js';

export interface Row {
  what: string;
  value: string;
  note?: string;
}
type Section = (title: string) => void;

type Phase = 'decode' | 'decodeBatch' | 'prefill128' | 'prefill512';
const PHASES: { phase: Phase; tokens: number; runs: number; warmup: number }[] = [
  { phase: 'decode', tokens: 1, runs: 9, warmup: 2 },
  { phase: 'decodeBatch', tokens: DECODE_BATCH, runs: 9, warmup: 2 },
  { phase: 'prefill128', tokens: 128, runs: 5, warmup: 1 },
  { phase: 'prefill512', tokens: 512, runs: 5, warmup: 1 },
];
const MB = (n: number): string => `${(n / 1e6).toFixed(1)} MB`;
const pct = (x: number): string => `${(100 * x).toFixed(0)}%`;

async function timeLayer(s: Runner, work: ReturnType<typeof workloads>): Promise<Record<Phase, Timing>> {
  const out = {} as Record<Phase, Timing>;
  for (const p of PHASES) {
    const feeds = work[p.phase]();
    out[p.phase] = await time(() => runAll(s, feeds), p.runs, p.warmup);
  }
  return out;
}

interface NodeOrt {
  InferenceSession: {
    create(
      graph: Uint8Array,
      options: {
        executionProviders: string[];
        intraOpNumThreads: number;
        interOpNumThreads: number;
        graphOptimizationLevel: 'all';
      },
    ): Promise<Runner & { release(): Promise<void> }>;
  };
  env: { versions: { node?: string } };
}

/** onnxruntime-node if it is installed (a devDependency installed with --ignore-scripts), else null. */
async function nodeOrt(): Promise<NodeOrt | null> {
  try {
    const name = 'onnxruntime-node';
    return (await import(name)) as NodeOrt;
  } catch {
    return null;
  }
}

type MemSnap = { rss: number; wasmHeap: number | null };
async function memoryChild(arg: string): Promise<Record<string, MemSnap>> {
  const out = await runChild('./memory-child.ts', [arg], ['--expose-gc']);
  const line = out.split('\n').find((l) => l.startsWith('@@mem '));
  if (!line) throw new Error('memory child printed no result');
  return JSON.parse(line.slice(6)) as Record<string, MemSnap>;
}

/** Where a step writes: rows of the printed table (a section is a `## ` row) and the JSON's numbers. */
interface Out {
  results: Record<string, unknown>;
  section: Section;
  row: (what: string, value: string, note?: string) => void;
}

const EXEC_DTYPES = ['f32', 'int8'] as const;
type ExecDtype = (typeof EXEC_DTYPES)[number];

interface Limits {
  /** the hand-written WASM SIMD sum's bandwidth, GB/s */
  gbps: number;
  bestMatmul: (dtype: ExecDtype) => number;
}

/** The limits one WASM thread has: memory bandwidth (the limit and ORT's ReduceSum) and matmul throughput. */
async function benchLimits({ section, row, results }: Out): Promise<Limits> {
  section('limits, one WASM thread (onnxruntime-web)');
  const bw = await wasmSumBandwidth();
  row(
    'memory bandwidth (the limit): hand-written WASM SIMD sum of a 256 MiB float array',
    `${fmt(bw.timing)} ms`,
    `${bw.gbps.toFixed(1)} GB/s (9 runs)`,
  );
  const reduce = await wasmBandwidth();
  row(
    'memory bandwidth: ORT ReduceSum over a 256 MiB fp32 tensor in the WASM heap',
    `${fmt(reduce.timing)} ms`,
    `${reduce.gbps.toFixed(1)} GB/s (7 runs; ORT's kernel, not a limit)`,
  );
  const mm = await wasmMatmul();
  const { rows: mr, inp, out } = MATMUL_SHAPE;
  for (const m of mm)
    row(
      `matmul ${mr}x${inp} by ${inp}x${out}: ${m.label}`,
      `${fmt(m.timing)} ms`,
      `${m.gflops.toFixed(1)} GFLOP/s (7 runs)`,
    );
  const bestMatmul = (dtype: ExecDtype): number =>
    Math.max(...mm.filter((m) => m.dtype === dtype).map((m) => m.gflops));
  results.limits = {
    bandwidth: bw,
    matmul: mm,
    bestMatmulGflops: { f32: bestMatmul('f32'), int8: bestMatmul('int8') },
  };
  return { gbps: bw.gbps, bestMatmul };
}

/** The layer's graph at each dtype, built from one set of random weights (freed once built). */
function buildGraphs(): { d: HymbaDims; graphs: Map<LayerDtype, LayerGraph> } {
  const model = layerModel();
  const d = model.dims;
  const w = layerWeights(d);
  const graphs = new Map<LayerDtype, LayerGraph>();
  for (const dtype of ['f32', 'int8', 'q4'] as const) graphs.set(dtype, buildLayer(model, w, dtype));
  w.clear();
  return { d, graphs };
}

/** Write the executable graphs to `dir` for the child processes; returns their files. */
async function writeGraphs(dir: string, graphs: Map<LayerDtype, LayerGraph>): Promise<Map<LayerDtype, string>> {
  const files = new Map<LayerDtype, string>();
  for (const dtype of EXEC_DTYPES) {
    const f = join(dir, `layer-${dtype}.onnx`);
    await writeFile(f, graphs.get(dtype)!.graph);
    files.set(dtype, f);
  }
  return files;
}

function reportWeightBytes({ section, row }: Out, graphs: Map<LayerDtype, LayerGraph>, params: number): void {
  section(`one Hymba-1.5B layer (layer ${1}: sliding-window KV producer), ${(params / 1e6).toFixed(1)} M params`);
  for (const dtype of ['f32', 'int8', 'q4'] as const) {
    const g = graphs.get(dtype)!;
    row(
      `weight bytes, ${dtype}`,
      MB(g.storageBytes),
      dtype === 'q4'
        ? `storage/transfer only: expanded on load to int8 (${MB(g.execBytes)}), runs as int8`
        : `${(g.storageBytes / params).toFixed(2)} bytes/param`,
    );
  }
}

/** One phase's row: its time, GFLOP/s against the best matmul and, for decode, weight GB/s against bandwidth. */
function phaseRow(
  out: Out,
  dtype: ExecDtype,
  g: LayerGraph,
  params: number,
  p: (typeof PHASES)[number],
  t: Timing,
  limits: Limits,
): Record<string, unknown> {
  const best = limits.bestMatmul(dtype);
  const ms = t.median;
  const gflops = (2 * params * p.tokens) / 1e9 / (ms / 1000);
  const what =
    p.phase === 'decode'
      ? `${dtype}: decode 1 token at context M+512`
      : p.phase === 'decodeBatch'
        ? `${dtype}: decode ${p.tokens} sessions in one run, each at context M+512`
        : `${dtype}: prefill ${p.tokens} tokens from position M${p.tokens > 128 ? ' (4 runs of 128)' : ''}`;
  let note = `${gflops.toFixed(1)} GFLOP/s = ${pct(gflops / best)} of best ${dtype} matmul`;
  const entry: Record<string, unknown> = { ...t, gflops, fractionOfMatmul: gflops / best };
  if (p.phase === 'decode') {
    const gbps = g.execBytes / 1e9 / (ms / 1000);
    note = `${gbps.toFixed(1)} GB/s of weights = ${pct(gbps / limits.gbps)} of bandwidth; ${note}`;
    Object.assign(entry, { gbps, fractionOfBandwidth: gbps / limits.gbps });
  }
  out.row(what, `${fmt(t)} ms`, note);
  return entry;
}

type LayerTimings = Map<ExecDtype, Record<Phase, Timing>>;

/** Each phase of the layer in onnxruntime-web, per executable dtype. */
async function benchLayerTimes(
  out: Out,
  graphs: Map<LayerDtype, LayerGraph>,
  work: ReturnType<typeof workloads>,
  params: number,
  limits: Limits,
): Promise<LayerTimings> {
  const layerResults: Record<string, unknown> = {};
  const timings: LayerTimings = new Map();
  for (const dtype of EXEC_DTYPES) {
    const g = graphs.get(dtype)!;
    const loaded = await loadGraph(g.graph);
    const t = await timeLayer(loaded.session, work);
    await loaded.session.release();
    timings.set(dtype, t);
    const perPhase: Record<string, unknown> = {};
    for (const p of PHASES) perPhase[p.phase] = phaseRow(out, dtype, g, params, p, t[p.phase], limits);
    layerResults[dtype] = { weightBytes: g.execBytes, ...perPhase };
  }
  out.results.layer = layerResults;
  return timings;
}

/** The whole model on one core as fullL times one layer. */
function reportEstimates({ section, row, results }: Out, timings: LayerTimings, fullL: number): void {
  section(
    `Hymba-1.5B on one core, ESTIMATES: ${fullL} x one layer (embedding, lm_head, full-attention layers' larger KV not included)`,
  );
  const estimates: Record<string, unknown> = {};
  for (const dtype of EXEC_DTYPES) {
    const t = timings.get(dtype)!;
    const dec = 1000 / (t.decode.median * fullL);
    const batched = (DECODE_BATCH * 1000) / (t.decodeBatch.median * fullL);
    const pre = (512 * 1000) / (t.prefill512.median * fullL);
    row(`${dtype}: decode (estimate)`, `${dec.toFixed(2)} tok/s`, `${(t.decode.median * fullL).toFixed(0)} ms/token`);
    row(
      `${dtype}: decode, ${DECODE_BATCH} sessions batched (estimate)`,
      `${batched.toFixed(2)} tok/s`,
      `${(t.decodeBatch.median * fullL).toFixed(0)} ms/step, all sessions together`,
    );
    row(`${dtype}: prefill 512 (estimate)`, `${pre.toFixed(1)} tok/s`);
    estimates[dtype] = { decodeTokS: dec, batchedDecodeTokS: batched, prefillTokS: pre };
  }
  results.estimates = estimates;
}

/** Kernel-time shares by op kind and by scope, ORT profiler in a child process per dtype. */
async function benchShares({ section, row, results }: Out, files: Map<LayerDtype, string>): Promise<void> {
  section(
    'kernel time shares of one layer (ORT profiler in a child process, 5 runs after 1 warm-up; profiling adds per-node overhead, so kernel sums exceed the unprofiled times)',
  );
  const shares: Record<string, Record<string, Shares>> = {};
  for (const dtype of EXEC_DTYPES) {
    const s = await profileLayer(files.get(dtype)!, 5);
    shares[dtype] = s;
    for (const [phase, sh] of Object.entries(s)) {
      const kinds = Object.entries(sh.byKind)
        .map(([k, v]) => `${k} ${pct(v)}`)
        .join(', ');
      const scopes = Object.entries(sh.byScope)
        .sort((a, b) => b[1] - a[1])
        .map(([k, v]) => `${k} ${pct(v)}`)
        .join(', ');
      row(`${dtype} ${phase}: by op kind`, `${(sh.kernelUsPerRun / 1000).toFixed(1)} ms kernels`, kinds);
      row(`${dtype} ${phase}: by scope`, '', scopes);
    }
  }
  results.shares = shares;
}

const MEMORY_POINTS = [
  ['created', 'after session create'],
  ['firstRun', 'after first decode run'],
  ['prefill128', 'after a prefill-128 run'],
] as const;

/** Process memory of a fresh child per dtype over a baseline child, against the weight bytes. */
async function benchMemory(
  { section, row, results }: Out,
  files: Map<LayerDtype, string>,
  graphs: Map<LayerDtype, LayerGraph>,
): Promise<void> {
  section('process memory, fresh child per dtype, minus a baseline child that only initialised ORT (1 sample each)');
  const base = await memoryChild('baseline');
  const memory: Record<string, unknown> = { baseline: base };
  for (const dtype of EXEC_DTYPES) {
    const m = await memoryChild(files.get(dtype)!);
    const wb = graphs.get(dtype)!.execBytes;
    memory[dtype] = m;
    for (const [k, label] of MEMORY_POINTS) {
      const snap = m[k];
      if (!snap) continue;
      const rss = snap.rss - base.init!.rss;
      const heap = snap.wasmHeap !== null && base.init!.wasmHeap !== null ? snap.wasmHeap - base.init!.wasmHeap : null;
      row(
        `${dtype}: ${label}`,
        `${MB(rss)} rss`,
        `${(rss / wb).toFixed(2)} x weight bytes` +
          (heap !== null ? `; WASM heap +${MB(heap)} = ${(heap / wb).toFixed(2)} x weight bytes` : ''),
      );
    }
  }
  results.memory = memory;
}

/** The same graphs and phases in onnxruntime-node (native CPU EP, one thread), when it is installed. */
async function benchNative(
  { section, row, results }: Out,
  graphs: Map<LayerDtype, LayerGraph>,
  work: ReturnType<typeof workloads>,
  timings: LayerTimings,
  params: number,
): Promise<void> {
  const native = await nodeOrt();
  section('reference: onnxruntime-node (native CPU EP, intraOpNumThreads 1), same graphs');
  if (!native) return row('onnxruntime-node', 'not installed', 'skipped');
  const nativeResults: Record<string, unknown> = {};
  for (const dtype of EXEC_DTYPES) {
    const s = await native.InferenceSession.create(graphs.get(dtype)!.graph, {
      executionProviders: ['cpu'],
      intraOpNumThreads: 1,
      interOpNumThreads: 1,
      graphOptimizationLevel: 'all',
    });
    const t = await timeLayer(s, work);
    await s.release();
    const wasm = timings.get(dtype)!;
    for (const p of PHASES)
      row(
        `native ${dtype}: ${p.phase}`,
        `${fmt(t[p.phase])} ms`,
        `WASM takes ${(wasm[p.phase].median / t[p.phase].median).toFixed(2)}x; ${((2 * params * p.tokens) / 1e9 / (t[p.phase].median / 1000)).toFixed(1)} GFLOP/s`,
      );
    nativeResults[dtype] = t;
  }
  results.native = nativeResults;
}

export async function benchLayerSuite(rows: Row[], results: Record<string, unknown>): Promise<void> {
  const out: Out = {
    results,
    section: (title) => rows.push({ what: `## ${title}`, value: '' }),
    row: (what, value, note) => void rows.push(note === undefined ? { what, value } : { what, value, note }),
  };
  const limits = await benchLimits(out);
  const { d, graphs } = buildGraphs();
  const dir = await mkdtemp(join(tmpdir(), 'hymba-engine-bench-'));
  try {
    const files = await writeGraphs(dir, graphs);
    const params = graphs.get('f32')!.params;
    reportWeightBytes(out, graphs, params);
    graphs.delete('q4'); // storage only: never run
    const work = workloads(d);
    const timings = await benchLayerTimes(out, graphs, work, params, limits);
    reportEstimates(out, timings, fullModelLayers());
    await benchShares(out, files);
    await benchMemory(out, files, graphs);
    await benchNative(out, graphs, work, timings, params);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
