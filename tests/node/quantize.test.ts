// The quantisers' error bounds and layouts, and the graph ops that execute quantised weights in ORT.

import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { MANIFEST_FILE, parseManifest } from '../../engine/convert/manifest.js';
import { HymbaEngine } from '../../engine/run/loaded-model.js';
import { GraphBuilder } from '../../engine/onnx/builder.js';
import { emitGraph } from '../../engine/onnx/emit.js';
import { DataType } from '../../engine/onnx/proto.js';
import { expandQ4Graph, hasQ4Expansion } from '../../engine/onnx/q4-expand.js';
import { int8Linear, q4Expand, q4Linear, q4ToInt8, type Int8Exec } from '../../engine/onnx/quantized.js';
import {
  dequantizeInt8,
  dequantizeQ4,
  isModelDtype,
  q4Code,
  q4ZeroPoint,
  quantizedBytes,
  quantizeInt8,
  quantizeQ4,
  requantizeQ4ToInt8,
  roundHalfEven,
  transposeInt8,
  type Q4Weight,
} from '../../engine/convert/quantize.js';
import { float32, loadGraph } from '../../engine/run/ort.js';
import { CliError } from '../../infra/cli/args.js';
import { runConvert } from '../../infra/cli/convert.js';
import { convertDir, dirModelSource } from '../../infra/model-dir.js';
import { initNodeOrt } from '../../infra/node-ort.js';
import { makeTestModel } from '../../infra/test-model/make-test-model.js';
import { Rng } from '../../infra/test-model/random.js';
import { tokenSequence } from '../helpers/tiny-model.js';

beforeAll(() => initNodeOrt());

/** A [rows, cols] matrix whose rows have very different magnitudes (as real weights do). */
function matrix(rows: number, cols: number, seed: number): Float32Array {
  const rng = new Rng(seed, 'matrix');
  const w = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const scale = 10 ** (rng.uniform() * 4 - 3);
    for (let c = 0; c < cols; c++) w[r * cols + c] = rng.normal() * scale + (r % 3 === 0 ? scale : 0);
  }
  return w;
}

/** Slack for fp32 rounding of q * s (half an ulp of the value) on top of the format's bound. */
const slack = (v: number): number => Math.abs(v) * 2 ** -23 + 1e-45;

function checkInt8Bound(w: Float32Array, rows: number, cols: number): void {
  const q = quantizeInt8(w, rows, cols);
  const back = dequantizeInt8(q);
  for (let r = 0; r < rows; r++) {
    const s = q.scales[r]!;
    let absMax = 0;
    for (let c = 0; c < cols; c++) absMax = Math.max(absMax, Math.abs(w[r * cols + c]!));
    expect(Math.abs(s - absMax / 127)).toBeLessThanOrEqual((absMax / 127) * 2 ** -24);
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      expect(Math.abs(q.data[i]!)).toBeLessThanOrEqual(127);
      expect(Math.abs(w[i]! - back[i]!)).toBeLessThanOrEqual(s / 2 + slack(w[i]!));
    }
  }
}

function checkQ4Bound(w: Float32Array, rows: number, cols: number): Q4Weight {
  const q = quantizeQ4(w, rows, cols);
  const back = dequantizeQ4(q);
  for (let r = 0; r < rows; r++)
    for (let k = 0; k < q.blocksPerRow; k++) {
      const s = q.scales[r * q.blocksPerRow + k]!;
      const block = w.subarray(r * cols + k * 32, r * cols + Math.min(cols, (k + 1) * 32));
      const range = Math.max(0, ...block) - Math.min(0, ...block);
      expect(s).toBeLessThanOrEqual((range / 15) * (1 + 2 ** -22));
      for (let j = 0; j < block.length; j++) {
        const i = r * cols + k * 32 + j;
        expect(Math.abs(w[i]! - back[i]!)).toBeLessThanOrEqual(s / 2 + slack(w[i]!) + s * 2 ** -20);
      }
    }
  return q;
}

describe('int8 per output channel', () => {
  it('round trip within half a step of each row (|w - q s| <= s / 2)', () => {
    for (const [rows, cols, seed] of [
      [7, 33, 1],
      [64, 160, 2],
      [3, 1, 3],
    ] as const)
      checkInt8Bound(matrix(rows, cols, seed), rows, cols);
  });

  it('an all-zero row has scale 0 and comes back as zeros; other rows are unaffected', () => {
    const w = matrix(4, 40, 4);
    w.fill(0, 40, 80);
    const q = quantizeInt8(w, 4, 40);
    expect(q.scales[1]).toBe(0);
    expect([...dequantizeInt8(q).subarray(40, 80)].every((v) => v === 0)).toBe(true);
    checkInt8Bound(w, 4, 40);
  });

  it('huge outliers: the bound holds, the outlier comes back, the rest of its row rounds to 0', () => {
    const w = matrix(3, 64, 5);
    w[64 + 10] = 3e38; // near fp32's largest value
    w[128 + 5] = -1e6;
    checkInt8Bound(w, 3, 64);
    const q = quantizeInt8(w, 3, 64);
    const back = dequantizeInt8(q);
    expect(back[64 + 10]! / 3e38).toBeCloseTo(1, 6);
    expect(q.data[64 + 10]).toBe(127);
    expect(q.data[128 + 5]).toBe(-127);
    // values far below the outlier's step vanish; that is the format's bound, per row
    expect(q.data[64]).toBe(0);
  });

  it('values whose scale underflows are zeros, not NaN', () => {
    const w = new Float32Array([1e-45, -1e-45, 0, 1e-45]);
    const q = quantizeInt8(w, 1, 4);
    expect(q.scales[0]).toBe(0);
    expect([...dequantizeInt8(q)].every((v) => v === 0)).toBe(true);
  });

  it('rejects non-finite weights and wrong shapes', () => {
    expect(() => quantizeInt8(new Float32Array([1, NaN]), 1, 2)).toThrow(/not finite/);
    expect(() => quantizeInt8(new Float32Array([1, Infinity]), 1, 2)).toThrow(/not finite/);
    expect(() => quantizeInt8(new Float32Array(5), 2, 3)).toThrow(/\[2, 3\]/);
  });

  it('transposes to B [in, out] for the graph', () => {
    const q = quantizeInt8(matrix(3, 5, 6), 3, 5);
    const t = transposeInt8(q);
    for (let r = 0; r < 3; r++) for (let c = 0; c < 5; c++) expect(t[c * 3 + r]).toBe(q.data[r * 5 + c]);
    expect(quantizedBytes(q)).toBe(15 + 12);
  });
});

describe('q4 blocks of 32 (MatMulNBits layout)', () => {
  it('round trip within half a step of each block (|w - (q - zp) s| <= s / 2, s = range / 15)', () => {
    // whole blocks, a padded last block, an odd number of blocks (zero points share a byte), K < 32
    for (const [rows, cols, seed] of [
      [5, 64, 1],
      [4, 100, 2],
      [3, 96, 3],
      [2, 5, 4],
    ] as const)
      checkQ4Bound(matrix(rows, cols, seed), rows, cols);
  });

  it('lays codes and zero points out as MatMulNBits reads them', () => {
    const rows = 2;
    const cols = 70; // 3 blocks: 32, 32, 6 (+26 padding)
    const q = quantizeQ4(matrix(rows, cols, 7), rows, cols);
    expect(q.blocksPerRow).toBe(3);
    expect(q.data.length).toBe(rows * 3 * 16);
    expect(q.scales.length).toBe(rows * 3);
    expect(q.zeroPoints.length).toBe(rows * 2);
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++) {
        const byte = q.data[(r * 3 + Math.floor(c / 32)) * 16 + Math.floor((c % 32) / 2)]!;
        expect(q4Code(q, r, c)).toBe(c % 2 === 0 ? byte & 15 : byte >> 4); // first element in the low nibble
      }
    for (let r = 0; r < rows; r++) {
      expect(q4ZeroPoint(q, r, 0)).toBe(q.zeroPoints[r * 2]! & 15);
      expect(q4ZeroPoint(q, r, 1)).toBe(q.zeroPoints[r * 2]! >> 4);
      expect(q4ZeroPoint(q, r, 2)).toBe(q.zeroPoints[r * 2 + 1]! & 15);
      // padding past K dequantises to zero: its code is the block's zero point
      expect(q4Code(q, r, 95)).toBe(q4ZeroPoint(q, r, 2));
    }
  });

  it('edge blocks: all zero, constant, one-signed, and a huge outlier that stays in its block', () => {
    const w = new Float32Array(4 * 32);
    w.fill(0.25, 32, 64); // constant positive block: exact
    for (let j = 0; j < 32; j++) w[64 + j] = -1 - j / 31; // negative only: zero point 15
    w[96] = 1e30;
    w[97] = 1;
    const q = checkQ4Bound(w, 1, 128);
    const back = dequantizeQ4(q);
    expect(q.scales[0]).toBe(0);
    expect([...back.subarray(0, 32)].every((v) => v === 0)).toBe(true);
    expect([...back.subarray(32, 64)].every((v) => v === 0.25)).toBe(true);
    expect(q4ZeroPoint(q, 0, 0)).toBe(8);
    expect(q4ZeroPoint(q, 0, 2)).toBe(15);
    expect(back[96]! / 1e30).toBeCloseTo(1, 6);
    expect(back[97]).toBe(0);
  });

  it('rejects non-finite weights and bad block sizes', () => {
    expect(() => quantizeQ4(new Float32Array([0, NaN]), 1, 2)).toThrow(/not finite/);
    expect(() => quantizeQ4(new Float32Array(32), 1, 32, 24)).toThrow(/power of two/);
  });

  it('requantises to int8 within the q4 error plus half an int8 step', () => {
    const w = matrix(6, 100, 8);
    const q = quantizeQ4(w, 6, 100);
    const q4 = dequantizeQ4(q);
    const i8 = requantizeQ4ToInt8(q);
    const back = dequantizeInt8(i8);
    for (let r = 0; r < 6; r++)
      for (let c = 0; c < 100; c++) {
        const i = r * 100 + c;
        expect(Math.abs(back[i]! - q4[i]!)).toBeLessThanOrEqual(i8.scales[r]! / 2 + slack(q4[i]!));
      }
  });
});

it('rounds ties to even, as ONNX Round does', () => {
  expect([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4, -2.6].map(roundHalfEven)).toEqual([0, 2, 2, -0, -2, -2, 2, -3]);
  expect(['f32', 'f16', 'int8', 'q4'].every(isModelDtype)).toBe(true);
  expect(isModelDtype('bf16')).toBe(false);
});

/** x [T, K] times W^T for W [N, K] in float64. */
function matmulT(x: Float32Array, w: Float32Array, T: number, K: number, N: number): Float64Array {
  const y = new Float64Array(T * N);
  for (let t = 0; t < T; t++)
    for (let n = 0; n < N; n++) {
      let acc = 0;
      for (let k = 0; k < K; k++) acc += x[t * K + k]! * w[n * K + k]!;
      y[t * N + n] = acc;
    }
  return y;
}

function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  let n = 0;
  for (let i = 0; i < b.length; i++) {
    d += (a[i]! - b[i]!) ** 2;
    n += b[i]! ** 2;
  }
  return Math.sqrt(d / n);
}

async function runGraph(b: GraphBuilder, feeds: Record<string, Float32Array>, dims: number[]): Promise<Float32Array> {
  const g = await loadGraph(emitGraph(b).graph);
  try {
    const inputs = Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, float32(v, dims)]));
    const out = await g.session.run(inputs);
    return out[g.outputNames[0]!]!.data as Float32Array;
  } finally {
    await g.session.release();
  }
}

describe('quantised weights in ONNX Runtime', () => {
  const [T, K, N] = [5, 100, 24];
  const w = matrix(N, K, 9).map((v, i) => v / Math.abs(v || 1) / 10 + Math.sin(i) * 0.05);
  const x = new Float32Array(T * K).map((_, i) => Math.cos(i * 0.7) * (1 + (i % 7)));

  for (const exec of ['dqmm', 'mmi-row', 'fold'] as Int8Exec[]) {
    it(`int8 ${exec} computes x W^T of the dequantised weight`, async () => {
      const q = quantizeInt8(w, N, K);
      const b = new GraphBuilder();
      b.output(int8Linear(b, 'w', q, b.input('x', ['T', K]), exec), 'y', ['T', N]);
      const y = await runGraph(b, { x }, [T, K]);
      const want = matmulT(x, dequantizeInt8(q), T, K, N);
      // fold is exact up to fp32 sums; the integer kernels also quantise the activations to 8 bits
      expect(relErr(y, want)).toBeLessThan(exec === 'fold' ? 1e-6 : 1e-2);
    });
  }

  it('q4 codes, scales and zero points are what ORT MatMulNBits reads', async () => {
    const q = quantizeQ4(w, N, K); // K = 100: 4 blocks, the last padded
    const b = new GraphBuilder();
    const y = b.op(
      'MatMulNBits',
      [
        b.input('x', ['T', K]),
        b.initializer('B', DataType.UINT8, [N, q.blocksPerRow, 16], q.data),
        b.initializer('scales', DataType.FLOAT, [N, q.blocksPerRow], q.scales),
        b.initializer('zp', DataType.UINT8, [N, Math.ceil(q.blocksPerRow / 2)], q.zeroPoints),
      ],
      { K, N, bits: 4, block_size: 32 },
      'com.microsoft',
    );
    b.output(y, 'y', ['T', N]);
    expect(relErr(await runGraph(b, { x }, [T, K]), matmulT(x, dequantizeQ4(q), T, K, N))).toBeLessThan(1e-6);
    // and the converter's MatMulNBits path (accuracy_level 4 quantises the activations)
    const b2 = new GraphBuilder();
    b2.output(q4Linear(b2, 'w', q, b2.input('x', ['T', K]), { int8: 'dqmm', q4: 'nbits' }), 'y', ['T', N]);
    expect(relErr(await runGraph(b2, { x }, [T, K]), matmulT(x, dequantizeQ4(q), T, K, N))).toBeLessThan(1e-2);
  });

  it("ORT's constant-folded q4 expansion equals the JS one bit for bit", async () => {
    const q = quantizeQ4(w.subarray(0, N * 70), N, 70); // odd block count and padding
    const b = new GraphBuilder();
    b.input('x', [1]);
    b.output(q4Expand(b, 'w', q), 'expanded', [N, 70]);
    const { codes, scales } = q4ToInt8(b, 'w', q);
    b.output(b.cast(codes, DataType.FLOAT), 'codes', [70, N]);
    b.output(scales, 'scales', [N]);
    const g = await loadGraph(emitGraph(b).graph);
    try {
      const out = await g.session.run({ x: float32(new Float32Array(1), [1]) });
      expect([...(out.expanded!.data as Float32Array)]).toEqual([...dequantizeQ4(q)]);
      const i8 = requantizeQ4ToInt8(q);
      expect([...(out.codes!.data as Float32Array)]).toEqual([...transposeInt8(i8)]);
      expect([...(out.scales!.data as Float32Array)]).toEqual([...i8.scales]);
    } finally {
      await g.session.release();
    }
  });

  it('expandQ4Graph stores the int8 form and computes exactly what the folded graph computes', async () => {
    const build = (): GraphBuilder => {
      const b = new GraphBuilder();
      const xin = b.input('x', ['T', K]);
      const y = q4Linear(b, 'layer/w', quantizeQ4(w, N, K), xin, { int8: 'mmi-row', q4: 'int8' });
      b.output(b.add(y, b.float(1)), 'y', ['T', N]);
      return b;
    };
    const model = emitGraph(build()).graph;
    expect(hasQ4Expansion(model)).toBe(true);
    const expanded = expandQ4Graph(model);
    expect(hasQ4Expansion(expanded)).toBe(false);
    expect(expandQ4Graph(expanded)).toBe(expanded); // nothing left to do
    const text = new TextDecoder('latin1').decode(expanded);
    expect(text).not.toContain('layer/w.q4scale');
    expect(text).not.toContain('q4expand');
    expect(text).toContain('layer/w.int8');
    const run = async (bytes: Uint8Array): Promise<Float32Array> => {
      const g = await loadGraph(bytes);
      try {
        return (await g.session.run({ x: float32(x, [T, K]) })).y!.data as Float32Array;
      } finally {
        await g.session.release();
      }
    };
    expect([...(await run(expanded))]).toEqual([...(await run(model))]);
    // graphs without q4 weights pass through untouched
    const plain = new GraphBuilder();
    plain.output(plain.op('Relu', [plain.input('x', ['T'])]), 'y', ['T']);
    const bytes = emitGraph(plain).graph;
    expect(expandQ4Graph(bytes)).toBe(bytes);
  });
});

describe('hymba convert --dtype int8 | q4', () => {
  it('writes int8 and q4 models, one stage or two, that compute the same logits either way', async () => {
    const root = await mkdtemp(join(tmpdir(), 'hymba-quant-'));
    try {
      const hf = join(root, 'hf');
      await makeTestModel(hf, { preset: 'tiny', seed: 3, tokenizer: false });
      const ids = tokenSequence(40, 32001, 9);
      for (const dtype of ['int8', 'q4'] as const) {
        const one = join(root, `${dtype}-1`);
        await runConvert([hf, one, '--dtype', dtype]);
        const manifest = parseManifest(await readFile(join(one, MANIFEST_FILE), 'utf8'));
        expect(manifest.dtype).toBe(dtype);
        const two = join(root, `${dtype}-2`);
        await mkdir(two);
        await convertDir(
          hf,
          {
            dtype,
            stages: [
              { first: 0, last: 4 },
              { first: 4, last: 8 },
            ],
          },
          (name, bytes) => writeFile(join(two, name), bytes),
        );
        const a = await HymbaEngine.load(dirModelSource(one));
        const b = await HymbaEngine.load(dirModelSource(two));
        try {
          const x = await a.runner.forward(a.newState(), ids, 'all');
          const y = await b.runner.forward(b.newState(), ids, 'all');
          let max = 0;
          for (let i = 0; i < x.logits.length; i++) max = Math.max(max, Math.abs(x.logits[i]! - y.logits[i]!));
          expect(max).toBeLessThanOrEqual(1e-4);
        } finally {
          await a.release();
          await b.release();
        }
      }
      await expect(runConvert([hf, join(root, 'x'), '--dtype', 'bf16'])).rejects.toThrow(CliError);
      await expect(runConvert([hf, join(root, 'x'), '--dtype', 'bf16'])).rejects.toThrow(/f32, f16, int8, q4/);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
