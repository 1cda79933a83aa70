import { describe, expect, it } from 'vitest';
import {
  Xoshiro128StarStar,
  createRng,
  logSoftmax,
  sample,
  tokenLogprob,
  topKIndices,
  topLogprobs,
  type Rng,
  type SamplingParams,
} from '../../engine/generate/sampling.js';

/** Softmax of logits / T computed the plain way in float64, as the reference. */
function softmax(logits: number[], temperature = 1): number[] {
  const scaled = logits.map((x) => x / temperature);
  const m = Math.max(...scaled);
  const e = scaled.map((x) => Math.exp(x - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

/** Random logits from a seeded rng, rounded through float32 as a model would return them. */
function randomLogits(rng: Rng, n: number, scale = 4): Float32Array {
  return Float32Array.from({ length: n }, () => (rng.nextFloat() - 0.5) * 2 * scale);
}

function histogram(logits: Float32Array, params: SamplingParams, n: number, seed: number): number[] {
  const rng = createRng(seed);
  const counts = new Array<number>(logits.length).fill(0);
  for (let i = 0; i < n; i++) {
    const id = sample(logits, params, rng);
    counts[id] = counts[id]! + 1;
  }
  return counts.map((c) => c / n);
}

/** An rng that returns fixed draws, to pin the inverse CDF exactly. */
function fixedRng(...draws: number[]): Rng & { calls: number } {
  let i = 0;
  return {
    calls: 0,
    nextUint32() {
      return Math.floor(this.nextFloat() * 4294967296);
    },
    nextFloat() {
      this.calls++;
      return draws[i++ % draws.length]!;
    },
  };
}

describe('xoshiro128** and seeding', () => {
  it('matches the reference C implementation from state {1, 2, 3, 4}', () => {
    const rng = new Xoshiro128StarStar([1, 2, 3, 4]);
    const out = Array.from({ length: 6 }, () => rng.nextUint32());
    expect(out).toEqual([11520, 0, 5927040, 70819200, 2031721883, 1637235492]);
  });

  it('seeds exactly as the C reference of the seeding scheme (cross-platform golden values)', () => {
    const golden: [number, number[]][] = [
      [0, [3232353834, 2796670833, 3904276679, 2815455710]],
      [42, [3412328208, 847278805, 3050529725, 1376212797]],
      [-1, [2536977611, 2196667173, 1736684085, 1088623355]],
      [4294967296, [1581247979, 1140453431, 3915303110, 3679453866]],
      [Number.MAX_SAFE_INTEGER, [3323525986, 917570007, 2866163984, 4053982196]],
    ];
    for (const [seed, expected] of golden) {
      const rng = createRng(seed);
      expect(Array.from({ length: 4 }, () => rng.nextUint32())).toEqual(expected);
    }
  });

  it('gives small seeds different first draws (the first draw depends on every seed bit)', () => {
    const first = new Set(Array.from({ length: 1000 }, (_, seed) => createRng(seed).nextUint32()));
    expect(first.size).toBe(1000);
  });

  it('draws floats in [0, 1) with a plausible mean, and random seeds differ', () => {
    const rng = createRng(5);
    const draws = Array.from({ length: 10000 }, () => rng.nextFloat());
    expect(Math.min(...draws)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...draws)).toBeLessThan(1);
    const sum = draws.reduce((a, b) => a + b, 0);
    expect(Math.abs(sum / 10000 - 0.5)).toBeLessThan(0.01);
    expect(createRng().nextUint32()).not.toBe(createRng().nextUint32()); // 2^-32 chance of a false failure
  });

  it('rejects non-integer seeds and the all-zero state', () => {
    expect(() => createRng(1.5)).toThrow(RangeError);
    expect(() => createRng(Number.NaN)).toThrow(RangeError);
    expect(() => new Xoshiro128StarStar([0, 0, 0, 0])).toThrow(RangeError);
    expect(() => new Xoshiro128StarStar([1, 2, 3])).toThrow(RangeError);
  });
});

describe('logSoftmax', () => {
  it('matches a float64 hand computation', () => {
    const x = [1.5, -2.25, 3, 0.125, 3];
    const lse = Math.log(x.reduce((s, v) => s + Math.exp(v), 0));
    const lp = logSoftmax(Float32Array.from(x));
    expect(lp).toBeInstanceOf(Float64Array);
    x.forEach((v, i) => expect(lp[i]).toBeCloseTo(v - lse, 14));
    expect(lp.reduce((s, v) => s + Math.exp(v), 0)).toBeCloseTo(1, 14);
  });

  it('handles -Infinity entries', () => {
    const lp = logSoftmax(Float32Array.from([0, -Infinity, 2, -Infinity]));
    const lse = Math.log(1 + Math.exp(2));
    expect(lp[1]).toBe(-Infinity);
    expect(lp[3]).toBe(-Infinity);
    expect(lp[0]).toBeCloseTo(-lse, 14);
    expect(lp[2]).toBeCloseTo(2 - lse, 14);
  });

  it('handles huge logits without overflow or lost precision', () => {
    const lp = logSoftmax(Float32Array.from([3e38, -3e38, 3e38]));
    expect(lp[0]).toBeCloseTo(Math.log(0.5), 14);
    expect(lp[2]).toBeCloseTo(Math.log(0.5), 14);
    expect(lp[1]).toBeLessThan(-1e38);
    const lp2 = logSoftmax(Float32Array.from([1000, 0]));
    expect(lp2[0]).toBeCloseTo(-Math.exp(-1000), 14);
    expect(lp2[1]).toBeCloseTo(-1000, 10);
  });

  it('rejects NaN, +Infinity and all -Infinity', () => {
    expect(() => logSoftmax(Float32Array.from([0, Number.NaN]))).toThrow(RangeError);
    expect(() => logSoftmax(Float32Array.from([0, Infinity]))).toThrow(RangeError);
    expect(() => logSoftmax(Float32Array.from([-Infinity, -Infinity]))).toThrow(RangeError);
  });
});

describe('reported log-probs', () => {
  it('tokenLogprob reads the unmodified distribution', () => {
    const lp = logSoftmax(Float32Array.from([0, 1, 2]));
    expect(tokenLogprob(lp, 2)).toBe(lp[2]);
    expect(() => tokenLogprob(lp, 3)).toThrow(RangeError);
  });

  it('topLogprobs sorts descending with ties by lower id and clamps k', () => {
    const lp = logSoftmax(Float32Array.from([1, 3, 2, 3, -Infinity, 2]));
    expect(topLogprobs(lp, 4).map((t) => t.id)).toEqual([1, 3, 2, 5]);
    expect(topLogprobs(lp, 4)[0]!.logprob).toBe(lp[1]);
    expect(topLogprobs(lp, 100).map((t) => t.id)).toEqual([1, 3, 2, 5, 0, 4]);
    expect(topLogprobs(lp, 0)).toEqual([]);
  });

  it('topKIndices equals a full sort on random data with many ties', () => {
    const rng = createRng(11);
    for (let trial = 0; trial < 200; trial++) {
      const n = 1 + (rng.nextUint32() % 300);
      const values = Float32Array.from({ length: n }, () => rng.nextUint32() % 7);
      const k = rng.nextUint32() % (n + 3);
      const full = Array.from(values.keys()).sort((a, b) => values[b]! - values[a]! || a - b);
      expect(Array.from(topKIndices(values, k))).toEqual(full.slice(0, k));
    }
  });
});

describe('sample', () => {
  it('is greedy at temperature 0 and topK 1, ties to the lowest id, without drawing', () => {
    const logits = Float32Array.from([0.5, 2, -1, 2, 1.9]);
    const rng = fixedRng(0.99);
    expect(sample(logits, { temperature: 0 }, rng)).toBe(1);
    expect(sample(logits, { temperature: 1.3, topK: 1 }, rng)).toBe(1);
    expect(sample(Float32Array.from([-Infinity, -5, -Infinity]), { temperature: 0 }, rng)).toBe(1);
    expect(rng.calls).toBe(0);
  });

  it('draws exactly once per token, through the inverse CDF', () => {
    const logits = Float32Array.from([Math.log(0.2), Math.log(0.5), Math.log(0.3)]);
    // CDF over ids in order: [0.2, 0.7, 1.0].
    const cases: [number, number][] = [
      [0, 0],
      [0.19, 0],
      [0.21, 1],
      [0.69, 1],
      [0.71, 2],
      [0.999999, 2],
    ];
    for (const [u, id] of cases) {
      const rng = fixedRng(u);
      expect(sample(logits, { temperature: 1 }, rng)).toBe(id);
      expect(rng.calls).toBe(1);
    }
  });

  it('is reproducible for a seed, and different seeds give different sequences', () => {
    const logits = randomLogits(createRng(1), 50, 2);
    const run = (seed: number): number[] => {
      const rng = createRng(seed);
      return Array.from({ length: 200 }, () => sample(logits, { temperature: 1 }, rng));
    };
    expect(run(7)).toEqual(run(7));
    expect(run(7)).not.toEqual(run(8));
  });

  it('matches softmax empirically at temperature 1 (20k samples)', () => {
    const logits = Float32Array.from([1.2, -0.3, 0.5, 2.0, -1.5, 0.0, 0.9, -0.7]);
    const n = 20000;
    const freq = histogram(logits, { temperature: 1 }, n, 2024);
    const p = softmax(Array.from(logits));
    const maxDiff = Math.max(...freq.map((f, i) => Math.abs(f - p[i]!)));
    expect(maxDiff).toBeLessThan(0.02);
    // Pearson chi-square with 7 degrees of freedom: 24.3 is the 0.1% critical value.
    const chi2 = freq.reduce((s, f, i) => s + (n * (f - p[i]!) ** 2) / p[i]!, 0);
    expect(chi2).toBeLessThan(24.3);
  });

  it('sharpens with lower temperature and flattens with higher, matching softmax(x / T)', () => {
    const logits = Float32Array.from([1, 0.5, 0, -0.5]);
    const top = [0.5, 1, 2].map((t) => {
      const freq = histogram(logits, { temperature: t }, 20000, 99);
      const p = softmax(Array.from(logits), t);
      freq.forEach((f, i) => expect(Math.abs(f - p[i]!)).toBeLessThan(0.02));
      return freq[0]!;
    });
    expect(top[0]!).toBeGreaterThan(top[1]! + 0.1);
    expect(top[1]!).toBeGreaterThan(top[2]! + 0.1);
  });

  it('top-k never returns a token outside the k best, and samples among them by probability', () => {
    const logits = randomLogits(createRng(3), 1000, 3);
    const best = Array.from(logits.keys())
      .sort((a, b) => logits[b]! - logits[a]! || a - b)
      .slice(0, 5);
    const rng = createRng(4);
    const seen = new Map<number, number>();
    for (let i = 0; i < 4000; i++) {
      const id = sample(logits, { temperature: 2, topK: 5 }, rng);
      expect(best).toContain(id);
      seen.set(id, (seen.get(id) ?? 0) + 1);
    }
    expect(seen.size).toBe(5);
    const p = softmax(
      best.map((id) => logits[id]!),
      2,
    );
    best.forEach((id, i) => expect(Math.abs(seen.get(id)! / 4000 - p[i]!)).toBeLessThan(0.03));
  });

  it('top-k keeps the lowest ids among ties at the boundary', () => {
    const logits = Float32Array.from([1, 5, 5, 5, 0]);
    for (let u = 0; u < 1; u += 0.01)
      expect([1, 2]).toContain(sample(logits, { temperature: 1, topK: 2 }, fixedRng(u)));
  });

  it('top-p with a small p returns the argmax', () => {
    const logits = randomLogits(createRng(5), 32000, 2);
    let argmax = 0;
    logits.forEach((x, i) => {
      if (x > logits[argmax]!) argmax = i;
    });
    const rng = createRng(6);
    for (let i = 0; i < 20; i++) expect(sample(logits, { temperature: 1, topP: 1e-6 }, rng)).toBe(argmax);
    expect(sample(logits, { temperature: 1, topP: 0 }, fixedRng(0.999))).toBe(argmax);
  });

  it('top-p keeps the smallest nucleus that reaches p', () => {
    const logits = Float32Array.from([Math.log(0.15), Math.log(0.5), Math.log(0.05), Math.log(0.3)]);
    // Sorted: id1 0.5, id3 0.3, id0 0.15, id2 0.05. p = 0.75 -> {1, 3}; p = 0.85 -> {1, 3, 0}.
    expect(sample(logits, { temperature: 1, topP: 0.75 }, fixedRng(0.999999))).toBe(3);
    expect(sample(logits, { temperature: 1, topP: 0.85 }, fixedRng(0.999999))).toBe(0);
    // Renormalised over {1, 3}: id 1 has 0.625 of the mass.
    expect(sample(logits, { temperature: 1, topP: 0.75 }, fixedRng(0.62))).toBe(1);
    expect(sample(logits, { temperature: 1, topP: 0.75 }, fixedRng(0.63))).toBe(3);
    const freq = histogram(logits, { temperature: 1, topP: 0.85 }, 20000, 8);
    expect(freq[2]).toBe(0);
    expect(Math.abs(freq[0]! - 0.15 / 0.95)).toBeLessThan(0.02);
  });

  it('top-p over a 32k vocabulary picks what a full-sort reference picks', () => {
    /** Reference: rank every id, cut the nucleus, walk the CDF in rank order. */
    const reference = (logits: Float32Array, t: number, p: number, u: number): number => {
      const ranked = Array.from(logits.keys()).sort((a, b) => logits[b]! - logits[a]! || a - b);
      const m = logits[ranked[0]!]!;
      const w = ranked.map((id) => Math.exp((logits[id]! - m) / t));
      const total = w.reduce((a, b) => a + b, 0);
      let n = 0;
      for (let cum = 0; n < w.length && cum < p * total; n++) cum += w[n]!;
      const mass = w.slice(0, Math.max(n, 1)).reduce((a, b) => a + b, 0);
      for (let i = 0, cum = 0; i < Math.max(n, 1); i++) if ((cum += w[i]!) > u * mass) return ranked[i]!;
      return ranked[Math.max(n, 1) - 1]!;
    };
    const smooth = randomLogits(createRng(12), 32000, 8);
    // Quantised to quarters: thousands of ties, ranked by id; and -0 beside +0, which must tie too.
    const tied = smooth.map((x, i) => (i % 7 === 0 ? (i % 14 === 0 ? -0 : 0) : Math.round(x * 4) / 4));
    for (const logits of [smooth, tied]) {
      for (const t of [0.3, 1, 5]) {
        for (const p of [0.1, 0.9, 0.999]) {
          for (const u of [0, 0.3, 0.77, 0.9999]) {
            expect(sample(logits, { temperature: t, topP: p }, fixedRng(u))).toBe(reference(logits, t, p, u));
          }
        }
      }
    }
  });

  it('top-k and top-p compose: the nucleus is taken within the top k', () => {
    const logits = Float32Array.from([Math.log(0.4), Math.log(0.3), Math.log(0.2), Math.log(0.1)]);
    // top-2 renormalises to {0: 4/7, 1: 3/7}; top-p 0.5 then keeps only id 0.
    expect(sample(logits, { temperature: 1, topK: 2, topP: 0.5 }, fixedRng(0.999))).toBe(0);
    expect(sample(logits, { temperature: 1, topK: 2, topP: 0.6 }, fixedRng(0.999))).toBe(1);
  });

  it('min-p drops tokens below minP times the top probability', () => {
    const logits = Float32Array.from([Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)]);
    // minP 0.25 -> threshold 0.125: ids 0, 1, 2 stay.
    const freq = histogram(logits, { temperature: 1, minP: 0.25 }, 20000, 9);
    expect(freq[3]).toBe(0);
    expect(Math.abs(freq[2]! - 0.15 / 0.95)).toBeLessThan(0.02);
  });

  it('rejects bad parameters and NaN logits', () => {
    const logits = Float32Array.from([0, 1]);
    const rng = createRng(1);
    expect(() => sample(logits, { temperature: -1 }, rng)).toThrow(RangeError);
    expect(() => sample(logits, { temperature: 1, topK: 1.5 }, rng)).toThrow(RangeError);
    expect(() => sample(logits, { temperature: 1, topP: 1.5 }, rng)).toThrow(RangeError);
    expect(() => sample(Float32Array.from([0, Number.NaN]), { temperature: 0 }, rng)).toThrow(RangeError);
  });

  it('never samples a -Infinity token', () => {
    const logits = Float32Array.from([-Infinity, 0, -Infinity, 0, -Infinity]);
    for (const u of [0, 0.5, 0.9999999999]) {
      expect([1, 3]).toContain(sample(logits, { temperature: 1 }, fixedRng(u)));
      expect([1, 3]).toContain(sample(logits, { temperature: 1, topK: 4, topP: 0.99 }, fixedRng(u)));
    }
  });
});
