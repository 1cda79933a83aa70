// Child process of the engine benchmark: the bytes a fresh process holds around one layer session.
// usage: node --expose-gc --import tsx infra/bench/memory-child.ts <graph file | baseline>
// Prints `@@mem {json}`: rss (and the WASM heap size, caught at instantiation) after ORT is initialised
// (a 1-node session created and run), after the layer session is created (graph bytes released), after
// the first decode run and after a prefill-128 run.

import { readFileSync } from 'node:fs';
import { GraphBuilder } from '../../engine/onnx/builder.js';
import { emitGraph } from '../../engine/onnx/emit.js';
import { ort } from '../../engine/run/ort.js';
import { initNodeOrt } from '../node-ort.js';
import { layerModel, runAll, workloads } from './layer-graph.js';

const memories: WebAssembly.Memory[] = [];
const collect = (v: unknown, depth: number): void => {
  if (v instanceof WebAssembly.Memory) memories.push(v);
  else if (depth > 0 && v && typeof v === 'object')
    for (const x of Object.values(v as Record<string, unknown>)) collect(x, depth - 1);
};
const original = WebAssembly.instantiate;
const patched = async (source: unknown, imports?: WebAssembly.Imports): Promise<unknown> => {
  collect(imports, 2);
  const result: unknown = await (original as (s: unknown, i?: WebAssembly.Imports) => Promise<unknown>)(
    source,
    imports,
  );
  const instance =
    result instanceof WebAssembly.Instance ? result : (result as { instance: WebAssembly.Instance }).instance;
  collect(instance.exports, 1);
  return result;
};
(WebAssembly as { instantiate: unknown }).instantiate = patched;

const gc = (): void => (globalThis as { gc?: () => void }).gc?.();
const snap = (): { rss: number; wasmHeap: number | null } => {
  gc();
  const m = memories[0];
  return { rss: process.memoryUsage().rss, wasmHeap: m ? m.buffer.byteLength : null };
};

async function main(): Promise<void> {
  const file = process.argv[2];
  if (!file) throw new Error('usage: memory-child.ts <graph file | baseline>');
  initNodeOrt();
  const b = new GraphBuilder();
  b.output(b.op('Relu', [b.input('x', [1])]), 'y', [1]);
  const tiny = await ort.InferenceSession.create(emitGraph(b).graph, { executionProviders: ['wasm'] });
  await tiny.run({ x: new ort.Tensor('float32', Float32Array.of(1), [1]) });
  const out: Record<string, { rss: number; wasmHeap: number | null }> = { init: snap() };
  if (file !== 'baseline') {
    let graph: Uint8Array | null = readFileSync(file);
    // HYMBA_BENCH_NO_PREPACK=1: ORT's session.disable_prepacking (weights are not re-laid out for the GEMM)
    const extra = process.env.HYMBA_BENCH_NO_PREPACK ? { session: { disable_prepacking: '1' } } : undefined;
    // HYMBA_BENCH_NO_ARENA=1: no CPU memory arena (buffers freed after each run instead of pooled)
    const s = await ort.InferenceSession.create(graph, {
      executionProviders: ['wasm'],
      graphOptimizationLevel: 'all',
      ...(extra ? { extra } : {}),
      ...(process.env.HYMBA_BENCH_NO_ARENA ? { enableCpuMemArena: false } : {}),
    });
    graph = null;
    out.created = snap();
    const work = workloads(layerModel().dims);
    await runAll(s, work.decode());
    out.firstRun = snap();
    await runAll(s, work.prefill128());
    out.prefill128 = snap();
  }
  process.stdout.write(`@@mem ${JSON.stringify(out)}\n`);
}

await main();
