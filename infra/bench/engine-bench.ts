// `npm run bench`: engine throughput on this machine (one WASM thread), the SSM scan's share of prefill,
// and state sizes. Prints one table; `--json <file>` also writes the numbers.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, type HymbaDims, type ModelConfig } from '../../engine/config.js';
import { HymbaEngine } from '../../engine/model.js';
import { GraphBuilder } from '../../engine/onnx/builder.js';
import { emitGraph } from '../../engine/onnx/emit.js';
import { buildStageGraph, selectiveScan, stateNames, type StageSpec } from '../../engine/onnx/hymba-graph.js';
import { float32, int64, loadGraph, type LoadedGraph, type OrtTensor } from '../../engine/runtime/ort.js';
import { fullKvTransformerBytes, stateBytes } from '../../engine/state.js';
import { layerTensorShapes, type WeightMap } from '../../engine/weights.js';
import { convertDir, dirModelSource } from '../model-dir.js';
import { initNodeOrt } from '../node-ort.js';
import { initTensor, makeTestModel } from '../test-model/make-test-model.js';
import { presetConfig, pyJson } from '../test-model/presets.js';
import { fmt, machine, time, type Timing } from './stats.js';
import { runSessionBench } from './session-bench.js';

type Row = { what: string; value: string; note?: string };
const rows: Row[] = [];
const results: Record<string, unknown> = {};
const record = (key: string, what: string, t: Timing, perRun: number, unit: string): void => {
  const rate = (perRun * 1000) / t.median;
  rows.push({ what, value: `${fmt(t)} ms`, note: `${rate.toFixed(1)} ${unit}` });
  results[key] = { ...t, rate, unit };
};

/** The tiny preset end to end through the converted model: prefill and decode tokens/s. */
async function benchTiny(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'hymba-bench-'));
  try {
    await makeTestModel(join(root, 'hf'), { preset: 'tiny', seed: 1 });
    await convertDir(join(root, 'hf'), { dtype: 'f32' }, (n, b) => writeFile(join(root, n), b));
    const load = await time(() => HymbaEngine.load(dirModelSource(root)).then((e) => e.release()), 3, 0);
    rows.push({ what: 'tiny: model load (ORT session create)', value: `${fmt(load, 0)} ms` });
    results.tinyLoad = load;
    const engine = await HymbaEngine.load(dirModelSource(root));
    const prompt = Array.from({ length: 128 }, (_, i) => 100 + i);
    const prefill = await time(() => engine.runner.forward(engine.newState(), prompt, 'last'));
    record('tinyPrefill128', 'tiny: prefill 128 tokens', prefill, 128, 'tok/s');
    const state = engine.newState();
    await engine.runner.forward(state, prompt, 'last');
    const decode = await time(async () => {
      for (let i = 0; i < 16; i++) await engine.runner.forward(state, [500 + i], 'last');
    });
    record('tinyDecode', 'tiny: decode 16 tokens (context 128+)', decode, 16, 'tok/s');
    await engine.release();
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

/** One Hymba-1.5B-shaped layer (a sliding-window KV producer) as a hidden-in/hidden-out stage. */
async function benchLayer15(): Promise<void> {
  const model: ModelConfig = loadConfig(JSON.parse(pyJson(presetConfig('hymba-1.5b', 2))));
  const d = model.dims;
  const layer = 1;
  const w: WeightMap = new Map();
  for (const [name, shape] of layerTensorShapes(d, layer))
    w.set(name, { dims: shape, data: initTensor(name, shape, d, 1) });
  const spec: StageSpec = { first: layer, last: layer + 1, embed: false, head: false };
  const graph = await loadGraph(emitGraph(buildStageGraph(model, w, spec, { dtype: 'f32' })).graph);
  w.clear();
  const weightBytes = layerTensorShapes(d, layer).reduce((n, [, s]) => n + s.reduce((a, b) => a * b, 1) * 4, 0);
  const context = d.M + 512; // meta tokens + 512 earlier tokens in the window
  for (const T of [128, 256]) {
    const t = await time(() => runLayer(graph, d, layer, T, context), 5);
    record(`layer15Prefill${T}`, `1.5B layer: prefill ${T} tokens`, t, T, 'tok/s');
    const gflops = (2 * (weightBytes / 4) * T) / 1e9 / (t.median / 1000);
    rows[rows.length - 1]!.note += `, ${gflops.toFixed(1)} GFLOP/s in the weight matmuls`;
    const scan = await scanOnly(d, T);
    rows.push({
      what: `1.5B layer: SSM scan alone, ${T} tokens`,
      value: `${fmt(scan)} ms`,
      note: `${((100 * scan.median) / t.median).toFixed(1)}% of the layer's prefill`,
    });
    results[`scanShare${T}`] = { ...scan, share: scan.median / t.median };
  }
  const decode = await time(() => runLayer(graph, d, layer, 1, context), 9, 2);
  record('layer15Decode', '1.5B layer: decode 1 token', decode, 1, 'tok/s (one layer)');
  const gbps = weightBytes / 1e9 / (decode.median / 1000);
  rows.push({
    what: '1.5B layer: weight bytes read per decode token',
    value: `${(weightBytes / 1e6).toFixed(1)} MB`,
    note: `${gbps.toFixed(1)} GB/s`,
  });
  const fullLayers = loadConfig(JSON.parse(pyJson(presetConfig('hymba-1.5b')))).dims.L;
  const est = 1000 / (decode.median * fullLayers);
  rows.push({
    what: `Hymba-1.5B decode, ${fullLayers} layers (estimate: ${fullLayers} x one layer, f32)`,
    value: `${est.toFixed(2)} tok/s`,
    note: 'lm_head and embedding excluded',
  });
  results.hymba15DecodeEstimate = est;
  results.layer15DecodeGBps = gbps;
  await graph.session.release();
}

/** Feed a stage of one layer T hidden rows continuing from `context` positions of (zero) state. */
async function runLayer(g: LoadedGraph, d: HymbaDims, i: number, T: number, context: number): Promise<void> {
  const n = stateNames(i);
  const kv = Math.min(context, d.M + d.W);
  const feeds: Record<string, OrtTensor> = {
    position: int64([context], []),
    hidden_in: float32(new Float32Array(T * d.H).fill(0.1), [T, d.H]),
    [n.conv]: float32(new Float32Array((d.dConv - 1) * d.dIn), [d.dConv - 1, d.dIn]),
    [n.ssm]: float32(new Float32Array(d.dIn * d.dState), [d.dIn, d.dState]),
    [n.key]: float32(new Float32Array(d.kvHeads * kv * d.dqk), [d.kvHeads, kv, d.dqk]),
    [n.value]: float32(new Float32Array(d.kvHeads * kv * d.dv), [d.kvHeads, kv, d.dv]),
  };
  await g.session.run(feeds);
}

/** The selective scan of one layer as its own graph: what the scan costs at this T. */
async function scanOnly(d: HymbaDims, T: number): Promise<Timing> {
  const b = new GraphBuilder();
  const a = b.input('a', ['T', d.dIn, d.dState]);
  const x = b.input('b', ['T', d.dIn, d.dState]);
  const s0 = b.input('s0', [d.dIn, d.dState]);
  b.output(selectiveScan(b, d, a, x, s0, { dtype: 'f32' }), 'states', ['T', d.dIn, d.dState]);
  const g = await loadGraph(emitGraph(b).graph);
  const size = T * d.dIn * d.dState;
  const feeds = {
    a: float32(new Float32Array(size).fill(0.9), [T, d.dIn, d.dState]),
    b: float32(new Float32Array(size).fill(0.1), [T, d.dIn, d.dState]),
    s0: float32(new Float32Array(d.dIn * d.dState), [d.dIn, d.dState]),
  };
  const t = await time(() => g.session.run(feeds), 5);
  await g.session.release();
  return t;
}

function benchStateBytes(): void {
  const d = loadConfig(JSON.parse(pyJson(presetConfig('hymba-1.5b')))).dims;
  for (const tokens of [1024, 4096, 8192]) {
    const h = stateBytes(d, tokens, 'f16').total;
    const full = fullKvTransformerBytes(d, tokens, 'f16');
    rows.push({
      what: `state bytes, Hymba-1.5B at ${tokens} tokens (16-bit)`,
      value: `${(h / 1e6).toFixed(1)} MB`,
      note: `full-KV transformer of the same shape: ${(full / 1e6).toFixed(1)} MB (${(full / h).toFixed(1)}x)`,
    });
    results[`stateBytes${tokens}`] = { hymba: h, fullKv: full, fp32Snapshot: stateBytes(d, tokens, 'f32').total };
  }
}

function print(): void {
  const m = machine();
  console.log(
    `\nhymba-edge engine benchmark: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, Node ${m.node}, onnxruntime-web ${m.onnxruntimeWeb} (WASM, ${m.threads} thread)`,
  );
  console.log('medians of >= 5 runs (min-max)\n');
  const w0 = Math.max(...rows.map((r) => r.what.length));
  const w1 = Math.max(...rows.map((r) => r.value.length));
  for (const r of rows) console.log(`${r.what.padEnd(w0)}  ${r.value.padStart(w1)}  ${r.note ?? ''}`);
}

export async function runEngineBench(argv: string[]): Promise<void> {
  const jsonAt = argv.indexOf('--json');
  const only = argv.includes('--engine') ? 'engine' : argv.includes('--sessions') ? 'sessions' : 'all';
  initNodeOrt();
  if (only !== 'sessions') {
    await benchTiny();
    await benchLayer15();
    benchStateBytes();
    print();
  }
  if (only !== 'engine') await runSessionBench(results);
  if (jsonAt >= 0 && argv[jsonAt + 1])
    await writeFile(argv[jsonAt + 1]!, JSON.stringify({ machine: machine(), results }, null, 2));
}
