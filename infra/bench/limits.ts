// The limits the layer numbers are compared with, measured in the same run, one WASM thread:
// - memory bandwidth: ORT's ReduceSum kernel over a 256 MB fp32 initializer already in the WASM heap
//   (graph optimisation off, so it is not constant-folded; the output is one float);
// - matmul throughput: bare MatMul (fp32) and int8 DynamicQuantizeMatMul / MatMulIntegerToFloat graphs at
//   the layer's largest shape, x [128, 1600] times W [1600, 8960] (in_proj).

import { GraphBuilder } from '../../engine/onnx/builder.js';
import { emitGraph } from '../../engine/onnx/emit.js';
import { DataType } from '../../engine/onnx/proto.js';
import { int8Linear, type Int8Exec } from '../../engine/onnx/quantized.js';
import { quantizeInt8 } from '../../engine/convert/quantize.js';
import { ort } from '../../engine/run/ort.js';
import { Rng } from '../test-model/random.js';
import { time, type Timing } from './stats.js';

const create = (graph: Uint8Array, optimise = true): Promise<ort.InferenceSession> =>
  ort.InferenceSession.create(graph, {
    executionProviders: ['wasm'],
    graphOptimizationLevel: optimise ? 'all' : 'disabled',
  });

export interface Bandwidth {
  bytes: number;
  timing: Timing;
  gbps: number;
}

export async function wasmBandwidth(): Promise<Bandwidth> {
  const n = 64 * 2 ** 20; // 64 Mi floats = 256 MiB
  const b = new GraphBuilder();
  const x = b.input('x', [1]);
  const data = new Float32Array(n).fill(1);
  const big = b.initializer('big', DataType.FLOAT, [n], data);
  b.output(b.add(b.op('ReduceSum', [big], { keepdims: 1 }), x), 'y', [1]);
  const s = await create(emitGraph(b).graph, false);
  const feeds = { x: new ort.Tensor('float32', Float32Array.of(0), [1]) };
  const timing = await time(() => s.run(feeds), 7, 1);
  await s.release();
  return { bytes: n * 4, timing, gbps: (n * 4) / 1e9 / (timing.median / 1000) };
}

export interface MatmulLimit {
  label: string;
  dtype: 'f32' | 'int8';
  timing: Timing;
  gflops: number;
}

export const MATMUL_SHAPE = { rows: 128, inp: 1600, out: 8960 };

export async function wasmMatmul(): Promise<MatmulLimit[]> {
  const { rows, inp, out } = MATMUL_SHAPE;
  const w = new Float32Array(out * inp);
  new Rng(1, 'matmul-limit').fillNormal(w, 0, 1 / Math.sqrt(inp));
  const xData = new Float32Array(rows * inp);
  new Rng(2, 'matmul-limit-x').fillNormal(xData, 0, 1);
  const feeds = { x: new ort.Tensor('float32', xData, [rows, inp]) };
  const flop = 2 * rows * inp * out;
  const variants: { label: string; dtype: 'f32' | 'int8'; exec?: Int8Exec }[] = [
    { label: 'fp32 MatMul', dtype: 'f32' },
    { label: 'int8 DynamicQuantizeMatMul', dtype: 'int8', exec: 'dqmm' },
    { label: 'int8 MatMulIntegerToFloat (per row)', dtype: 'int8', exec: 'mmi-row' },
  ];
  const q = quantizeInt8(w, out, inp);
  const results: MatmulLimit[] = [];
  for (const v of variants) {
    const b = new GraphBuilder();
    const x = b.input('x', ['T', inp]);
    let y: string;
    if (v.exec) y = int8Linear(b, 'w', q, x, v.exec);
    else {
      const wt = new Float32Array(inp * out);
      for (let o = 0; o < out; o++) for (let i = 0; i < inp; i++) wt[i * out + o] = w[o * inp + i]!;
      y = b.matmul(x, b.weight('w', [inp, out], wt));
    }
    b.output(y, 'y', ['T', out]);
    const s = await create(emitGraph(b).graph);
    const timing = await time(() => s.run(feeds), 7, 1);
    await s.release();
    results.push({ label: v.label, dtype: v.dtype, timing, gflops: flop / 1e9 / (timing.median / 1000) });
  }
  return results;
}
