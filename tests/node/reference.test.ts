// The float64 reference forward pass: its building blocks against hand calculations, and whole-model
// properties (causality, the sliding window's reach) on small random checkpoints.

import { describe, expect, it } from 'vitest';
import { loadConfig, type ModelConfig } from '../../engine/model/config.js';
import {
  applyRope,
  attentionBranch,
  causalConv,
  fromRows,
  isVisible,
  kvHeadFor,
  linear,
  referenceForward,
  referenceHidden,
  rmsNorm,
  row,
  selectiveScan,
  softplus,
  zeros,
  type AttentionDims,
  type Matrix,
} from '../../engine/model/reference.js';
import { expectedTensors, type WeightMap } from '../../engine/model/weights.js';

// ---------------------------------------------------------------------------------------------------
// Helpers: a seeded PRNG and a random checkpoint for a small config

/** mulberry32: a small seeded PRNG giving uniform numbers in [0, 1). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SMALL_CONFIG = {
  hidden_size: 32,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  intermediate_size: 48,
  vocab_size: 50,
  mamba_d_state: 4,
  mamba_d_conv: 4,
  mamba_expand: 2,
  mamba_dt_rank: 4,
  num_memory_tokens: 4,
  sliding_window: 3,
  global_attn_idx: [0, 3],
  kv_reuse_group: [[1, 2]],
  rope_type: 'ntk',
  rope_theta: 10000,
  max_position_embeddings: 8192,
  orig_max_position_embeddings: 2048,
  rms_norm_eps: 1e-6,
};

/** Random weights of the right shapes: norms near 1, A_log in [0, 2], matrices scaled by 1/sqrt(fan-in). */
function randomWeights(model: ModelConfig, seed: number): WeightMap {
  const rand = prng(seed);
  const weights: WeightMap = new Map();
  for (const [name, dims] of expectedTensors(model.dims)) {
    const data = new Float32Array(dims.reduce((a, b) => a * b, 1));
    const fanIn = dims[dims.length - 1] ?? 1;
    for (let i = 0; i < data.length; i++) {
      const r = rand() * 2 - 1;
      if (name.endsWith('layernorm.weight')) data[i] = 1 + 0.2 * r;
      else if (name.endsWith('A_log.0')) data[i] = 1 + r;
      else if (name.endsWith('.bias') || name.endsWith('D.0') || dims.length === 1) data[i] = 0.5 * r;
      else data[i] = (2 * r) / Math.sqrt(fanIn);
    }
    weights.set(name, { dims, data });
  }
  return weights;
}

function randomMatrix(rows: number, cols: number, rand: () => number): Matrix {
  const m = zeros(rows, cols);
  for (let i = 0; i < m.data.length; i++) m.data[i] = rand() * 2 - 1;
  return m;
}

const norm = (v: ArrayLike<number>): number => Math.sqrt(Array.from(v).reduce((s, x) => s + x * x, 0));

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function expectClose(actual: ArrayLike<number>, expected: number[], tol = 1e-12): void {
  expect(maxAbsDiff(actual, expected)).toBeLessThan(tol);
}

// ---------------------------------------------------------------------------------------------------
// Building blocks

describe('rmsNorm', () => {
  it('matches a hand calculation on a small vector', () => {
    // x = [1, 2, 3, 4]: mean(x^2) = 30 / 4 = 7.5
    const out = rmsNorm(fromRows([[1, 2, 3, 4]]), [1, 1, 2, 0.5], 0);
    const r = Math.sqrt(7.5);
    expectClose(row(out, 0), [1 / r, 2 / r, 6 / r, 2 / r]);
  });

  it('adds eps inside the square root and normalises each row on its own', () => {
    const out = rmsNorm(
      fromRows([
        [3, 4],
        [0, 0],
      ]),
      [1, 1],
      1,
    );
    // mean(x^2) = 12.5, + eps 1 -> 13.5; the zero row stays zero
    expectClose(row(out, 0), [3 / Math.sqrt(13.5), 4 / Math.sqrt(13.5)]);
    expectClose(row(out, 1), [0, 0]);
  });
});

describe('linear', () => {
  it('computes x W^T for sizes that are not a multiple of its block', () => {
    const rand = prng(7);
    const x = randomMatrix(3, 5, rand);
    const W = { dims: [11, 5], data: Float32Array.from({ length: 55 }, () => rand() - 0.5) };
    const y = linear(x, W);
    expect([y.rows, y.cols]).toEqual([3, 11]);
    for (let t = 0; t < 3; t++)
      for (let o = 0; o < 11; o++) {
        let s = 0;
        for (let i = 0; i < 5; i++) s += x.data[t * 5 + i]! * W.data[o * 5 + i]!;
        expect(y.data[t * 11 + o]).toBe(s);
      }
  });
});

describe('applyRope', () => {
  const invFreq = Float32Array.from([1, 0.01]); // head width 4
  const x = fromRows([[1, 2, 3, 4]]);

  it('rotates pairs (j, j + half) by fp32(p * invFreq[j]) at position p', () => {
    const p = 3;
    const out = applyRope(x, 4, invFreq, p);
    const a0 = Math.fround(3 * 1);
    const a1 = Math.fround(3 * Math.fround(0.01));
    expectClose(row(out, 0), [
      1 * Math.cos(a0) - 3 * Math.sin(a0),
      2 * Math.cos(a1) - 4 * Math.sin(a1),
      3 * Math.cos(a0) + 1 * Math.sin(a0),
      4 * Math.cos(a1) + 2 * Math.sin(a1),
    ]);
  });

  it('is the identity at position 0 and preserves the norm of every head', () => {
    const two = fromRows([
      [1, 2, 3, 4, -5, 6, 0.5, 7],
      [1, 2, 3, 4, -5, 6, 0.5, 7],
    ]); // rows at positions 0 and 1, two heads each
    const out = applyRope(two, 4, invFreq);
    expectClose(row(out, 0), Array.from(row(two, 0)));
    for (const head of [0, 4])
      expect(norm(row(out, 1).subarray(head, head + 4))).toBeCloseTo(norm(row(two, 1).subarray(head, head + 4)), 12);
    // each head rotated on its own: head 1 at position 1 equals a lone head at position 1
    expectClose(row(out, 1).subarray(4, 8), Array.from(row(applyRope(fromRows([[-5, 6, 0.5, 7]]), 4, invFreq, 1), 0)));
  });

  it('makes q . k depend only on the distance between positions', () => {
    const q = fromRows([[0.3, -1, 2, 0.7]]);
    const k = fromRows([[1.1, 0.4, -0.2, 0.9]]);
    const dot = (pq: number, pk: number): number => {
      const a = row(applyRope(q, 4, invFreq, pq), 0);
      const b = row(applyRope(k, 4, invFreq, pk), 0);
      return a.reduce((s, v, i) => s + v * b[i]!, 0);
    };
    expect(dot(7, 5)).toBeCloseTo(dot(2, 0), 5);
  });
});

describe('attention mask and GQA', () => {
  it('lets a sliding-layer query see the meta tokens, itself and the W keys before it, not W + 1', () => {
    const W = 3;
    const M = 2;
    const a = 10;
    const seen = Array.from({ length: 12 }, (_, b) => b).filter((b) => isVisible(a, b, 'sliding', W, M));
    expect(seen).toEqual([0, 1, 7, 8, 9, 10]);
    expect(isVisible(a, a - W, 'sliding', W, M)).toBe(true);
    expect(isVisible(a, a - W - 1, 'sliding', W, M)).toBe(false);
    expect(isVisible(a, a + 1, 'sliding', W, M)).toBe(false);
  });

  it('lets a global-layer query see every earlier key and nothing later', () => {
    const seen = Array.from({ length: 12 }, (_, b) => b).filter((b) => isVisible(10, b, 'global', 3, 2));
    expect(seen).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it('maps query heads to KV heads in contiguous groups', () => {
    expect([0, 1, 2, 3].map((h) => kvHeadFor(h, 4, 2))).toEqual([0, 0, 1, 1]);
    // Hymba-1.5B: 25 query heads, 5 KV heads, groups of 5
    expect([0, 4, 5, 9, 10, 24].map((h) => kvHeadFor(h, 25, 5))).toEqual([0, 0, 1, 1, 2, 4]);
  });

  it('reads each query head from its own KV head in attentionBranch', () => {
    const dims: AttentionDims = { heads: 4, kvHeads: 2, dqk: 2, dv: 3, W: Infinity, M: 0 };
    const rand = prng(3);
    const T = 3;
    const q = randomMatrix(T, 4 * 2, rand);
    const k = randomMatrix(T, 2 * 2, rand);
    // every value row of KV head g is the constant 10 * (g + 1): any softmax average returns it
    const v = fromRows(Array.from({ length: T }, () => [10, 10, 10, 20, 20, 20]));
    const out = attentionBranch(q, k, v, dims, 'global');
    for (let t = 0; t < T; t++) expectClose(row(out, t), [10, 10, 10, 10, 10, 10, 20, 20, 20, 20, 20, 20]);
  });

  it('matches a hand-computed softmax for one head and two keys', () => {
    const dims: AttentionDims = { heads: 1, kvHeads: 1, dqk: 2, dv: 1, W: Infinity, M: 0 };
    const q = fromRows([
      [1, 0],
      [1, 2],
    ]);
    const k = fromRows([
      [3, 1],
      [0, 1],
    ]);
    const v = fromRows([[5], [-1]]);
    const out = attentionBranch(q, k, v, dims, 'global');
    // row 1: scores (1*3 + 2*1) / sqrt2 and (0 + 2) / sqrt2
    const s0 = 5 / Math.SQRT2;
    const s1 = 2 / Math.SQRT2;
    const p0 = Math.exp(s0) / (Math.exp(s0) + Math.exp(s1));
    expectClose(row(out, 0), [5]);
    expectClose(row(out, 1), [p0 * 5 + (1 - p0) * -1]);
  });

  it('keeps a sliding-layer output independent of keys more than W back, but not of meta tokens', () => {
    const dims: AttentionDims = { heads: 2, kvHeads: 1, dqk: 4, dv: 4, W: 3, M: 2 };
    const rand = prng(11);
    const T = 12;
    const q = randomMatrix(T, 8, rand);
    const k = randomMatrix(T, 4, rand);
    const v = randomMatrix(T, 4, rand);
    const base = attentionBranch(q, k, v, dims, 'sliding');
    const perturbRow = (b: number): Matrix => {
      const k2 = { ...k, data: k.data.slice() };
      const v2 = { ...v, data: v.data.slice() };
      for (let d = 0; d < 4; d++) {
        k2.data[b * 4 + d] = k2.data[b * 4 + d]! + 1;
        v2.data[b * 4 + d] = v2.data[b * 4 + d]! + 1;
      }
      return attentionBranch(q, k2, v2, dims, 'sliding');
    };
    const changedRows = (out: Matrix): number[] =>
      Array.from({ length: T }, (_, a) => a).filter((a) => maxAbsDiff(row(out, a), row(base, a)) > 0);
    // key 5 reaches queries 5..8 (a - 5 <= 3) and no other
    expect(changedRows(perturbRow(5))).toEqual([5, 6, 7, 8]);
    // meta key 1 reaches every later query
    expect(changedRows(perturbRow(1))).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  });
});

describe('SSM building blocks', () => {
  it('causalConv with dConv = 4 matches a hand-written example', () => {
    // two channels over five steps; channel 1 has its own kernel and bias
    const u = fromRows([
      [1, 1],
      [2, 0],
      [3, 0],
      [4, 0],
      [5, 0],
    ]);
    const w = [0.1, 0.2, 0.3, 0.4, 1, 2, 3, 4]; // conv1d.weight [2, 1, 4] flattened
    const out = causalConv(u, w, [0.5, -1], 4);
    // tap k multiplies input t - 3 + k: the newest input meets the last tap
    expectClose(
      Array.from(out.data),
      [
        [0.4 * 1 + 0.5, 4 * 1 - 1],
        [0.3 * 1 + 0.4 * 2 + 0.5, 3 - 1],
        [0.2 * 1 + 0.3 * 2 + 0.4 * 3 + 0.5, 2 - 1],
        [0.1 * 1 + 0.2 * 2 + 0.3 * 3 + 0.4 * 4 + 0.5, 1 - 1],
        [0.1 * 2 + 0.2 * 3 + 0.3 * 4 + 0.4 * 5 + 0.5, -1],
      ].flat(),
    );
  });

  it('selectiveScan over 3 steps matches a hand-unrolled recurrence', () => {
    // one channel, two state entries
    const u = [0.5, -1, 2];
    const dt = [0.1, 0.7, 0.3];
    const A = [-1, -0.25];
    const B = [
      [1, 2],
      [0.5, -1],
      [3, 0],
    ];
    const C = [
      [2, 1],
      [-1, 1],
      [0.5, 0.5],
    ];
    const D = 0.2;
    // s_t[n] = exp(dt_t A[n]) s_{t-1}[n] + dt_t B_t[n] u_t,  y_t = C_t . s_t + D u_t
    const s1 = [dt[0]! * B[0]![0]! * u[0]!, dt[0]! * B[0]![1]! * u[0]!];
    const y1 = C[0]![0]! * s1[0]! + C[0]![1]! * s1[1]! + D * u[0]!;
    const s2 = [
      Math.exp(dt[1]! * A[0]!) * s1[0]! + dt[1]! * B[1]![0]! * u[1]!,
      Math.exp(dt[1]! * A[1]!) * s1[1]! + dt[1]! * B[1]![1]! * u[1]!,
    ];
    const y2 = C[1]![0]! * s2[0]! + C[1]![1]! * s2[1]! + D * u[1]!;
    const s3 = [
      Math.exp(dt[2]! * A[0]!) * s2[0]! + dt[2]! * B[2]![0]! * u[2]!,
      Math.exp(dt[2]! * A[1]!) * s2[1]! + dt[2]! * B[2]![1]! * u[2]!,
    ];
    const y3 = C[2]![0]! * s3[0]! + C[2]![1]! * s3[1]! + D * u[2]!;
    const y = selectiveScan(
      fromRows(u.map((v) => [v])),
      fromRows(dt.map((v) => [v])),
      fromRows([A]),
      fromRows(B),
      fromRows(C),
      [D],
    );
    expectClose(Array.from(y.data), [y1, y2, y3]);
  });

  it('selectiveScan keeps channels apart, each with its own A, delta and D', () => {
    const rand = prng(5);
    const T = 4;
    const u = randomMatrix(T, 2, rand);
    const delta = randomMatrix(T, 2, rand);
    const A = fromRows([
      [-1, -2],
      [-0.5, -3],
    ]);
    const B = randomMatrix(T, 2, rand);
    const C = randomMatrix(T, 2, rand);
    const both = selectiveScan(u, delta, A, B, C, [0.3, -0.7]);
    const column = (m: Matrix, c: number): Matrix =>
      fromRows(Array.from({ length: m.rows }, (_, t) => [m.data[t * 2 + c]!]));
    for (const c of [0, 1]) {
      const alone = selectiveScan(column(u, c), column(delta, c), fromRows([Array.from(row(A, c))]), B, C, [
        [0.3, -0.7][c]!,
      ]);
      expectClose(Array.from(column(both, c).data), Array.from(alone.data));
    }
  });

  it('softplus is log(1 + e^x) and stays finite for large x', () => {
    expect(softplus(0)).toBeCloseTo(Math.log(2), 15);
    expect(softplus(-30)).toBeCloseTo(Math.exp(-30), 20);
    expect(softplus(1000)).toBe(1000);
  });
});

// ---------------------------------------------------------------------------------------------------
// Whole model

describe('referenceForward', () => {
  const model = loadConfig(SMALL_CONFIG);
  const weights = randomWeights(model, 42);
  const ids = [1, 7, 23, 4, 49, 0, 12, 31, 8, 15];

  it('returns one finite logits row of length V per input id', () => {
    const logits = referenceForward(model, weights, ids);
    expect(logits).toHaveLength(ids.length);
    for (const r of logits) {
      expect(r).toHaveLength(50);
      expect(r.every(Number.isFinite)).toBe(true);
    }
    // meta rows are kept in the hidden stream and dropped only at the head
    expect(referenceHidden(model, weights, ids).rows).toBe(4 + ids.length);
  });

  it('is causal: logits at t do not change when later tokens change', () => {
    const base = referenceForward(model, weights, ids);
    const changed = referenceForward(model, weights, [...ids.slice(0, 6), 2, 3, 5, 9]);
    for (let t = 0; t < 6; t++) expect(maxAbsDiff(changed[t]!, base[t]!)).toBe(0);
    for (let t = 6; t < ids.length; t++) expect(maxAbsDiff(changed[t]!, base[t]!)).toBeGreaterThan(0);
  });

  it('works without meta tokens', () => {
    const noMeta = loadConfig({ ...SMALL_CONFIG, num_memory_tokens: 0 });
    const logits = referenceForward(noMeta, randomWeights(noMeta, 1), [3, 4, 5]);
    expect(logits).toHaveLength(3);
    expect(logits.every((r) => r.every(Number.isFinite))).toBe(true);
  });

  describe('sliding-window reach in a model of two sliding layers', () => {
    // every layer sliding (W = 3); pre_avg_layernorm2 = 0 multiplies the normalised SSM output by zero,
    // which leaves attention as the only path between positions
    const config = { ...SMALL_CONFIG, num_hidden_layers: 2, global_attn_idx: [] };
    const text = [5, 9, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 3];
    const j = 2; // the text index we change
    const changedRows = (model: ModelConfig, silenceSsm: boolean): number[] => {
      const weights = randomWeights(model, 9);
      if (silenceSsm)
        for (const i of [0, 1]) weights.get(`model.layers.${i}.mamba.pre_avg_layernorm2.weight`)!.data.fill(0);
      const run = (id: number): Float64Array[] =>
        referenceForward(
          model,
          weights,
          text.map((t, i) => (i === j ? id : t)),
        );
      const a = run(6);
      const b = run(7);
      return text.map((_, t) => t).filter((t) => maxAbsDiff(a[t]!, b[t]!) > 0);
    };
    const following = (count: number): number[] => Array.from({ length: count }, (_, d) => j + d);

    it('two producers: a token reaches only the next 2W positions (W per layer)', () => {
      const model = loadConfig({ ...config, kv_reuse_group: null });
      expect(changedRows(model, true)).toEqual(following(2 * model.dims.W + 1));
    });

    it('producer and consumer: a token reaches only the next W positions', () => {
      // layer 1 re-reads layer 0's K/V, computed from the embeddings: only its queries carry mixed rows
      const model = loadConfig({ ...config, kv_reuse_group: [[0, 1]] });
      expect(changedRows(model, true)).toEqual(following(model.dims.W + 1));
    });

    it('with the SSM branch on, the same token reaches every later position', () => {
      const model = loadConfig({ ...config, kv_reuse_group: null });
      expect(changedRows(model, false)).toEqual(following(text.length - j));
    });
  });
});
