// Child process of `hymba plan --measure`: the memory one stage of a converted model takes in a fresh process.
// usage: node --expose-gc --import tsx infra/plan/stage-memory-child.ts <converted_dir> <stage> <run tokens> <context>
// Prints `@@mem {json}` with rss, JS heap and the WASM heap (caught at instantiation) after ORT is initialised
// (a 1-node session created and run), after the stage session is created (graph bytes released), after one
// decode run at `context` text tokens of (zero) state and after one run of `run tokens` fresh tokens.
// Fresh processes matter: WASM memory never shrinks, so a second stage in the same process would read high.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig, type HymbaDims } from '../../engine/model/config.js';
import { MANIFEST_FILE, parseManifest } from '../../engine/convert/manifest.js';
import { GraphBuilder } from '../../engine/onnx/builder.js';
import { emitGraph } from '../../engine/onnx/emit.js';
import { expandQ4Graph } from '../../engine/onnx/q4-expand.js';
import { ort } from '../../engine/run/ort.js';
import { kvEntries } from '../../engine/state/state.js';
import { initNodeOrt } from '../node-ort.js';

export interface MemSnapshot {
  rss: number;
  jsHeap: number;
  wasmHeap: number | null;
}

const memories: WebAssembly.Memory[] = [];

/** Find ORT's WebAssembly.Memory among the imports/exports of its instantiation (as the bench does). */
function watchWasmMemory(): void {
  const collect = (v: unknown, depth: number): void => {
    if (v instanceof WebAssembly.Memory) memories.push(v);
    else if (depth > 0 && v && typeof v === 'object')
      for (const x of Object.values(v as Record<string, unknown>)) collect(x, depth - 1);
  };
  const original = WebAssembly.instantiate as (s: unknown, i?: WebAssembly.Imports) => Promise<unknown>;
  const patched = async (source: unknown, imports?: WebAssembly.Imports): Promise<unknown> => {
    collect(imports, 2);
    const result = await original(source, imports);
    const instance =
      result instanceof WebAssembly.Instance ? result : (result as { instance: WebAssembly.Instance }).instance;
    collect(instance.exports, 1);
    return result;
  };
  (WebAssembly as { instantiate: unknown }).instantiate = patched;
}

function snap(): MemSnapshot {
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  return { rss: m.rss, jsHeap: m.heapUsed, wasmHeap: memories[0] ? memories[0].buffer.byteLength : null };
}

/**
 * Feeds for T new tokens at `position` (one session), built from the session's input metadata so that they
 * follow the graph's layout: symbolic dimensions B (sessions) = 1, T = T, S<i> = the K/V entries layer i keeps.
 * Every state is zero; hidden rows are 0.1; the head returns the last row's logits (as generation asks).
 */
function feeds(d: HymbaDims, session: ort.InferenceSession, T: number, position: number): Record<string, ort.Tensor> {
  const out: Record<string, ort.Tensor> = {};
  for (const meta of session.inputMetadata) {
    if (!meta.isTensor) throw new Error(`input ${meta.name} is not a tensor`);
    const dims = meta.shape.map((s) => {
      if (typeof s === 'number') return s;
      if (s === 'B') return 1;
      if (s === 'T') return T;
      const layer = /^S(\d+)$/.exec(s);
      if (layer) return kvEntries(d, Number(layer[1]), position);
      throw new Error(`input ${meta.name}: unknown dimension ${s}`);
    });
    const n = dims.reduce((a, b) => a * b, 1);
    if (meta.type === 'int64') {
      const value = (i: number): bigint =>
        BigInt(meta.name === 'input_ids' ? 3 + (i % T) : meta.name === 'logits_from' ? T - 1 : position);
      out[meta.name] = new ort.Tensor(
        'int64',
        BigInt64Array.from({ length: n }, (_, i) => value(i)),
        dims,
      );
    } else if (meta.type === 'float32') {
      const data = new Float32Array(n);
      if (meta.name === 'hidden_in') data.fill(0.1);
      out[meta.name] = new ort.Tensor('float32', data, dims);
    } else throw new Error(`input ${meta.name}: unexpected type ${meta.type}`);
  }
  return out;
}

/** The graph ORT runs: q4 is stored, its int8 form runs (the engine expands it the same way on load). */
function readGraph(path: string, q4: boolean): Uint8Array {
  const file = readFileSync(path);
  // a plain Uint8Array view, not the Buffer: Buffer.slice() does not copy, and q4 expansion relies on a copy
  const bytes = new Uint8Array(file.buffer, file.byteOffset, file.byteLength);
  return q4 ? expandQ4Graph(bytes) : bytes;
}

async function initOrtMeasured(): Promise<void> {
  initNodeOrt();
  const b = new GraphBuilder();
  b.output(b.op('Relu', [b.input('x', [1])]), 'y', [1]);
  const tiny = await ort.InferenceSession.create(emitGraph(b).graph, { executionProviders: ['wasm'] });
  await tiny.run({ x: new ort.Tensor('float32', Float32Array.of(1), [1]) });
}

async function main(): Promise<void> {
  const [dir, index, runTokens, context] = process.argv.slice(2);
  if (dir === undefined || index === undefined || runTokens === undefined || context === undefined)
    throw new Error('usage: stage-memory-child.ts <converted_dir> <stage> <run tokens> <context>');
  const manifest = parseManifest(readFileSync(join(dir, MANIFEST_FILE), 'utf8'));
  const { dims } = loadConfig(manifest.config);
  const stage = manifest.stages[Number(index)];
  if (!stage) throw new Error(`stage ${index} is not in ${dir}`);
  watchWasmMemory();
  await initOrtMeasured();
  const out: Record<string, MemSnapshot> = { init: snap() };
  let graph: Uint8Array | null = readGraph(join(dir, stage.graph), manifest.dtype === 'q4');
  const session = await ort.InferenceSession.create(graph, {
    executionProviders: ['wasm'],
    graphOptimizationLevel: 'all',
  });
  graph = null;
  out.created = snap();
  await session.run(feeds(dims, session, 1, dims.M + Number(context)));
  out.decode = snap();
  await session.run(feeds(dims, session, Number(runTokens), dims.M));
  out.run = snap();
  process.stdout.write(`@@mem ${JSON.stringify(out)}\n`);
}

await main();
