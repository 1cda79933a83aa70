// `npm run bench`: engine throughput on this machine (one WASM thread), the SSM scan's share of prefill,
// and state sizes. Prints one table; `--json <file>` also writes the numbers.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { loadConfig } from '../../engine/model/config.js';
import { HymbaEngine } from '../../engine/run/loaded-model.js';
import { cloneState } from '../../engine/state/state.js';
import { fullKvTransformerBytes, stateBytes } from '../../engine/state/bytes.js';
import { convertDir, dirModelSource } from '../model-dir.js';
import { initNodeOrt } from '../node-ort.js';
import { makeTestModel } from '../test-model/make-test-model.js';
import { presetConfig, pyJson } from '../test-model/presets.js';
import { benchLayerSuite, type Row } from './layer-suite.js';
import { fmt, machine, time, type Timing } from './stats.js';
import { runSessionBench } from './session-bench.js';

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
    rows.push({ what: '## tiny preset end to end (converted model, f32)', value: '' });
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
    // continuous batching: B sessions decoded together, one run per step
    for (const B of [1, 4, 16]) {
      const states = Array.from({ length: B }, () => cloneState(state));
      const batched = await time(async () => {
        for (let i = 0; i < 16; i++) {
          const ids = states.map((_, k) => 600 + i + k);
          await engine.runner.forwardBatch(states, ids);
        }
      });
      const what = `tiny: decode 16 steps of ${B} session${B > 1 ? 's' : ''} batched`;
      record(`tinyDecodeBatch${B}`, what, batched, 16 * B, 'tok/s');
    }
    await engine.release();
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

function benchStateBytes(): void {
  rows.push({ what: '## session state', value: '' });
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

/** The installed onnxruntime-node version, or null. */
function nodeOrtVersion(): string | null {
  try {
    const require = createRequire(import.meta.url);
    return (require('onnxruntime-node/package.json') as { version: string }).version;
  } catch {
    return null;
  }
}

function print(): void {
  const m = machine();
  const native = nodeOrtVersion();
  console.log(
    `\nhymba-edge engine benchmark: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, Node ${m.node}, onnxruntime-web ${m.onnxruntimeWeb} (WASM, ${m.threads} thread)` +
      (native ? `, onnxruntime-node ${native} (reference)` : ''),
  );
  console.log('times: median (min-max) ms of >= 5 runs unless the row says otherwise\n');
  const body = rows.filter((r) => !r.what.startsWith('## '));
  const w0 = Math.max(...body.map((r) => r.what.length));
  const w1 = Math.max(...body.map((r) => r.value.length));
  for (const r of rows) {
    if (r.what.startsWith('## ')) console.log(`\n${r.what.slice(3)}`);
    else console.log(`  ${r.what.padEnd(w0)}  ${r.value.padStart(w1)}  ${r.note ?? ''}`.trimEnd());
  }
}

export async function runEngineBench(argv: string[]): Promise<void> {
  const jsonAt = argv.indexOf('--json');
  const only = argv.includes('--engine') ? 'engine' : argv.includes('--sessions') ? 'sessions' : 'all';
  initNodeOrt();
  // `--stages`: only the distributed-stages part (infra/bench/stages-bench.ts), which writes its own --json
  const { runStagesBench } = await import('./stages-bench.js');
  if (argv.includes('--stages')) return void (await runStagesBench(argv));
  const { runGrammarBench } = await import('./grammar-bench.js');
  if (argv.includes('--grammar')) return void (await runGrammarBench());
  if (only !== 'sessions') {
    await benchTiny();
    await benchLayerSuite(rows, results);
    benchStateBytes();
    print();
  }
  if (only !== 'engine') await runSessionBench(results);
  if (only === 'all') results.stages = await runStagesBench([]);
  if (only === 'all') results.grammar = await runGrammarBench();
  if (jsonAt >= 0 && argv[jsonAt + 1])
    await writeFile(
      argv[jsonAt + 1]!,
      JSON.stringify({ machine: { ...machine(), onnxruntimeNode: nodeOrtVersion() }, rows, results }, null, 2),
    );
}
