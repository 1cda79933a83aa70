// Token sampling: a seeded PRNG, log-softmax, greedy / temperature / top-k / top-p / min-p sampling, and the
// log-probs reported to clients. Pure TypeScript, float64 throughout, so a seed reproduces the same tokens on
// Node, workerd and browsers given the same logits. The PRNG is bit-exact everywhere; Math.exp is the one
// engine-dependent step: V8 (Node, workerd, Chrome) ships its own fdlibm port, other engines may differ in the
// last bit, which can flip a draw that lands exactly on a boundary.

/** A source of uniform draws; `sample` takes one `nextFloat()` per sampled token. */
export interface Rng {
  /** Uniform integer in [0, 2^32). */
  nextUint32(): number;
  /** Uniform float in [0, 1) with 32 bits of resolution. */
  nextFloat(): number;
}

const TWO_32 = 4294967296;
const GOLDEN_GAMMA = 0x9e3779b9;

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** splitmix32's output mix: a bijection on 32-bit words, so distinct inputs never collide. */
function mix32(x: number): number {
  let z = x | 0;
  z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
  z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
  return (z ^ (z >>> 15)) >>> 0;
}

/** xoshiro128** 1.1 (Blackman & Vigna): 128-bit state, period 2^128 - 1, small and fast in 32-bit integer maths. */
export class Xoshiro128StarStar implements Rng {
  // Four words as plain fields: 32-bit integer maths with no array bounds checks.
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /** `state`: four 32-bit words, not all zero (the all-zero state is a fixed point). */
  constructor(state: ArrayLike<number>) {
    const [s0, s1, s2, s3] = Array.from(state, (w) => w >>> 0);
    if (state.length !== 4 || s0 === undefined || s1 === undefined || s2 === undefined || s3 === undefined) {
      throw new RangeError('xoshiro128** needs 4 state words');
    }
    if ((s0 | s1 | s2 | s3) === 0) throw new RangeError('xoshiro128** state must not be all zero');
    this.s0 = s0;
    this.s1 = s1;
    this.s2 = s2;
    this.s3 = s3;
  }

  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  nextFloat(): number {
    return this.nextUint32() / TWO_32;
  }
}

/**
 * A PRNG for one request. With a seed (any integer; OpenAI's `seed`), the 128-bit state is four words of a
 * splitmix32 stream over the seed's low 32 bits, with a stream over the high 32 bits XORed into words 1 and 3.
 * Word 1 alone decides the first draw, so it must depend on both halves; word 0 (low half, through a
 * bijection) and word 1 (then the high half) make distinct seeds below 2^64 give distinct states, and words 0
 * and 2 are never both zero. Without a seed the state comes from `crypto.getRandomValues`.
 */
export function createRng(seed?: number): Rng {
  if (seed === undefined) return new Xoshiro128StarStar(randomState());
  if (!Number.isInteger(seed)) throw new RangeError(`seed must be an integer, got ${seed}`);
  // Exact for every integer double: division by 2^32, floor and % are exact; negatives wrap as two's complement.
  const lo = ((seed % TWO_32) + TWO_32) % TWO_32;
  const hi = ((Math.floor(seed / TWO_32) % TWO_32) + TWO_32) % TWO_32;
  const stream = (x: number, i: number): number => mix32(x + Math.imul(i, GOLDEN_GAMMA));
  return new Xoshiro128StarStar([
    stream(lo, 1),
    stream(lo, 2) ^ stream(hi, 1),
    stream(lo, 3),
    stream(lo, 4) ^ stream(hi, 2),
  ]);
}

function randomState(): Uint32Array {
  const state = new Uint32Array(4);
  do crypto.getRandomValues(state);
  while (state.every((w) => w === 0));
  return state;
}

/** Max and lowest-id argmax of the logits; rejects NaN, +Infinity and all -Infinity (a model bug, never data). */
function checkedMax(logits: ArrayLike<number>): { max: number; argmax: number } {
  let max = -Infinity;
  let argmax = -1;
  for (let i = 0; i < logits.length; i++) {
    const x = logits[i]!;
    if (Number.isNaN(x) || x === Infinity) throw new RangeError(`logit ${i} is ${x}`);
    if (x > max) {
      max = x;
      argmax = i;
    }
  }
  if (argmax < 0) throw new RangeError('logits are empty or all -Infinity');
  return { max, argmax };
}

/** log softmax in float64: (x - max) - log(sum exp(x - max)), exact for huge logits and -Infinity entries. */
export function logSoftmax(logits: Float32Array): Float64Array {
  const { max } = checkedMax(logits);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  // Subtract log(sum) after the shift, not (max + log(sum)) at once: with |max| ~ 1e30 the latter rounds away.
  const logSum = Math.log(sum);
  const out = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i]! - max - logSum;
  return out;
}

/** Is (va, a) ranked before (vb, b)? Higher value first, then lower id: the one order used everywhere here. */
function ranksBefore(va: number, a: number, vb: number, b: number): boolean {
  return va > vb || (va === vb && a < b);
}

/**
 * Ids of the k highest values, sorted by value descending, ties by lower id. A size-k min-heap keeps the
 * worst kept entry at the root: O(V log k) instead of sorting all V (32k) entries for every token.
 */
export function topKIndices(values: ArrayLike<number>, k: number): Int32Array {
  const n = Math.min(Math.max(0, Math.floor(k)), values.length);
  const heap = new Int32Array(n);
  const worse = (i: number, j: number): boolean =>
    ranksBefore(values[heap[j]!]!, heap[j]!, values[heap[i]!]!, heap[i]!);
  const siftDown = (start: number): void => {
    for (let i = start; ;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let w = i;
      if (l < n && worse(l, w)) w = l;
      if (r < n && worse(r, w)) w = r;
      if (w === i) return;
      [heap[i], heap[w]] = [heap[w]!, heap[i]!];
      i = w;
    }
  };
  for (let i = 0; i < n; i++) heap[i] = i;
  for (let i = (n >> 1) - 1; i >= 0; i--) siftDown(i);
  // Ids arrive in increasing order, so a later id only displaces the root with a strictly larger value.
  for (let id = n; id < values.length && n > 0; id++) {
    if (values[id]! > values[heap[0]!]!) {
      heap[0] = id;
      siftDown(0);
    }
  }
  return heap.sort((a, b) => (ranksBefore(values[a]!, a, values[b]!, b) ? -1 : 1));
}

export interface SamplingParams {
  /** 0 = greedy. Scales logits as logits / temperature before the truncations below. */
  temperature: number;
  /** Keep the k most likely tokens; 0 or undefined = off, 1 = greedy. */
  topK?: number;
  /** Nucleus: keep the smallest most-likely set whose probability reaches topP (at least one token); 1 = off. */
  topP?: number;
  /** Keep tokens with probability >= minP * (top probability), after temperature; 0 = off. */
  minP?: number;
}

function validate(p: SamplingParams): void {
  if (!(p.temperature >= 0 && Number.isFinite(p.temperature))) throw new RangeError('temperature must be >= 0');
  if (p.topK !== undefined && !(Number.isInteger(p.topK) && p.topK >= 0)) throw new RangeError('topK must be >= 0');
  if (p.topP !== undefined && !(p.topP >= 0 && p.topP <= 1)) throw new RangeError('topP must be in [0, 1]');
  if (p.minP !== undefined && !(p.minP >= 0 && p.minP <= 1)) throw new RangeError('minP must be in [0, 1]');
}

/**
 * Pick the next token id. Greedy (lowest id among ties) when temperature is 0 or topK is 1; otherwise
 * temperature, then top-k, top-p and min-p, then one `rng.nextFloat()` draw through the inverse CDF.
 */
export function sample(logits: Float32Array, params: SamplingParams, rng: Rng): number {
  validate(params);
  const { max, argmax } = checkedMax(logits);
  if (params.temperature === 0 || params.topK === 1) return argmax;
  const topK = params.topK ?? 0;
  const topP = params.topP ?? 1;
  const useTopK = topK > 0 && topK < logits.length;
  // Candidates: ranked by logit after top-k; otherwise in id order (the inverse CDF needs no ranking).
  let ids = useTopK ? topKIndices(logits, topK) : identity(logits.length);
  let w = weights(logits, ids, max, params.temperature);
  if (topP < 1) {
    const target = topP * sum(w);
    if (!useTopK) ({ ids, w } = rankedHead(logits, w, target));
    const n = nucleusSize(w, target);
    ids = ids.subarray(0, n);
    w = w.subarray(0, n);
  }
  // The top weight is exp(0) = 1 and survives every truncation, so minP is the absolute threshold.
  const minP = params.minP ?? 0;
  if (minP > 0) w = w.map((x) => (x < minP ? 0 : x));
  return inverseCdf(ids, w, rng.nextFloat());
}

/** Unnormalised probabilities exp((x - max) / T), in (0, 1] (0 for -Infinity), float64. */
function weights(logits: Float32Array, ids: Int32Array, max: number, temperature: number): Float64Array {
  const w = new Float64Array(ids.length);
  for (let i = 0; i < ids.length; i++) w[i] = Math.exp((logits[ids[i]!]! - max) / temperature);
  return w;
}

function identity(n: number): Int32Array {
  const ids = new Int32Array(n);
  for (let i = 0; i < n; i++) ids[i] = i;
  return ids;
}

function sum(w: Float64Array): number {
  let s = 0;
  for (let i = 0; i < w.length; i++) s += w[i]!;
  return s;
}

/** Weight floors tried before sorting the whole vocabulary; the last (0) keeps everything. */
const HEAD_FLOORS = [1e-3, 1e-6, 1e-9, 0];

/**
 * The top of the ranking (by logit, ties by lower id) that surely holds the nucleus: the tokens with weight at
 * or above a floor, once their mass reaches the target. They are a prefix of the full ranking, so the nucleus
 * taken from them is the one a full sort gives, and typically only a few hundred of 32k ids get sorted.
 * `w` is indexed by id (no top-k ran).
 */
function rankedHead(logits: Float32Array, w: Float64Array, target: number): { ids: Int32Array; w: Float64Array } {
  for (const floor of HEAD_FLOORS) {
    let mass = 0;
    let count = 0;
    for (let id = 0; id < w.length; id++) {
      if (w[id]! >= floor) {
        mass += w[id]!;
        count++;
      }
    }
    if (mass < target && floor > 0) continue;
    const head = new Int32Array(count);
    for (let id = 0, j = 0; id < w.length; id++) if (w[id]! >= floor) head[j++] = id;
    const ids = rankByLogit(logits, head);
    return { ids, w: Float64Array.from(ids, (id) => w[id]!) };
  }
  throw new Error('unreachable: the 0 floor keeps every candidate');
}

const ID_BITS = 20;
const ID_SPAN = 2 ** ID_BITS;

/**
 * Sort ids by logit descending, ties by lower id. A comparator sort of 32k entries takes tens of ms per token
 * in V8; instead each id becomes one float64 key, high 32 bits the logit's bits made order-preserving, low 20
 * bits the inverted id, and a native numeric sort does the rest.
 */
function rankByLogit(logits: Float32Array, ids: Int32Array): Int32Array {
  if (logits.length > ID_SPAN) return ids.sort((a, b) => (ranksBefore(logits[a]!, a, logits[b]!, b) ? -1 : 1));
  const bits = new Uint32Array(logits.buffer, logits.byteOffset, logits.length);
  const keys = new Float64Array(ids.length);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    const b = bits[id] === 0x80000000 ? 0 : bits[id]!; // -0 ties with +0, as the comparator order has it
    // IEEE order trick: flip every bit of a negative, set the sign bit of a positive; < 2^52, exact in float64.
    const ordered = b & 0x80000000 ? ~b >>> 0 : (b | 0x80000000) >>> 0;
    keys[i] = ordered * ID_SPAN + (ID_SPAN - 1 - id);
  }
  keys.sort();
  const out = new Int32Array(ids.length);
  for (let i = 0; i < keys.length; i++) out[i] = ID_SPAN - 1 - (keys[keys.length - 1 - i]! % ID_SPAN);
  return out;
}

/** Smallest prefix of ranked weights whose mass reaches the target; at least one token. */
function nucleusSize(w: Float64Array, target: number): number {
  let cum = 0;
  for (let i = 0; i < w.length; i++) {
    cum += w[i]!;
    if (cum >= target) return i + 1;
  }
  return w.length; // rounding left cum a hair under target: keep everything
}

/** One draw u in [0, 1): the first id whose cumulative weight exceeds u * mass; zero-weight ids never win. */
function inverseCdf(ids: Int32Array, w: Float64Array, u: number): number {
  const target = u * sum(w);
  let cum = 0;
  let lastPositive = ids[0]!;
  for (let i = 0; i < w.length; i++) {
    if (w[i]! === 0) continue;
    cum += w[i]!;
    lastPositive = ids[i]!;
    if (cum > target) return lastPositive;
  }
  return lastPositive; // u * mass rounded up to the full mass
}

/** Log-prob of one id from `logSoftmax` output (temperature 1, no truncation: what OpenAI reports). */
export function tokenLogprob(logprobs: Float64Array, id: number): number {
  const lp = logprobs[id];
  if (lp === undefined) throw new RangeError(`token id ${id} outside vocabulary of ${logprobs.length}`);
  return lp;
}

/** The k most likely tokens from `logSoftmax` output, descending, ties by lower id. */
export function topLogprobs(logprobs: Float64Array, k: number): { id: number; logprob: number }[] {
  return Array.from(topKIndices(logprobs, k), (id) => ({ id, logprob: logprobs[id]! }));
}
