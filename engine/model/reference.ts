// Hymba forward pass in plain float64 TypeScript, over the whole sequence at once.
// The oracle the ONNX engine is tested against: written for clarity, used only by tests.
// Specification: docs/model.md, "Forward pass".
//
// Glossary (Hymba arXiv 2411.13676; Mamba arXiv 2312.00752; RoFormer arXiv 2104.09864):
//   M          meta (memory) tokens, prepended before BOS at positions 0..M-1
//   T          rows of the meta-prepended sequence, M + n for n input ids; a, b index them
//   H, V, I    hidden size, vocabulary, MLP width
//   heads      query heads; kvHeads key/value heads (GQA: head h reads KV head floor(h / (heads/kvHeads)))
//   dqk, dv    query/key head width, value head width (dv = d_in / heads, twice dqk in Hymba-1.5B)
//   W          sliding window: a sliding layer's query a sees keys a-W..a plus every meta token
//   d_in       SSM channels = expand * H (Mamba's D_inner); c indexes them
//   N          SSM state size per channel (d_state); n indexes it
//   u, z       SSM input and gate, both columns of in_proj's output; u' = SiLU(conv(u))
//   delta      Δ, the per-token, per-channel step size: softplus(dt_proj(RMSNorm(dt~)))
//   A          diagonal state matrix per channel, A = -exp(A_log): [d_in, N]
//   B, C       input and output maps of the state, per token: [T, N]
//   D          skip connection: [d_in]
//   s          SSM state [d_in, N]: s_t = exp(Δ_t A) s_{t-1} + Δ_t B_t u'_t (Mamba's ZOH with Euler B)
//   m          SSM branch output y * SiLU(z): [T, d_in]

import { ropeInvFreq, type HymbaDims, type LayerRole, type ModelConfig } from './config.js';
import { layerPrefix, weight, type Tensor, type WeightMap } from './weights.js';

/** A dense float64 matrix in row-major order; in the forward pass row t is sequence position t. */
export interface Matrix {
  rows: number;
  cols: number;
  data: Float64Array;
}

export function zeros(rows: number, cols: number): Matrix {
  return { rows, cols, data: new Float64Array(rows * cols) };
}

/** A matrix from nested rows (small examples, tests). */
export function fromRows(values: number[][]): Matrix {
  const rows = values.length;
  const cols = values[0]?.length ?? 0;
  const out = zeros(rows, cols);
  values.forEach((r, t) => {
    if (r.length !== cols) throw new Error(`fromRows: row ${t} has ${r.length} columns, expected ${cols}`);
    out.data.set(r, t * cols);
  });
  return out;
}

/** Row t as a view into the matrix (no copy). */
export function row(x: Matrix, t: number): Float64Array {
  return x.data.subarray(t * x.cols, (t + 1) * x.cols);
}

/** Columns start..start+width-1 as a new matrix: how in_proj's output is split into q, k, v, u, z. */
function columns(x: Matrix, start: number, width: number): Matrix {
  const out = zeros(x.rows, width);
  for (let t = 0; t < x.rows; t++)
    out.data.set(x.data.subarray(t * x.cols + start, t * x.cols + start + width), t * width);
  return out;
}

/** A 2-D checkpoint tensor widened to float64. */
function toMatrix(t: Tensor): Matrix {
  if (t.dims.length !== 2) throw new Error(`expected a 2-D tensor, got [${t.dims.join(', ')}]`);
  return { rows: t.dims[0]!, cols: t.dims[1]!, data: Float64Array.from(t.data) };
}

function map(x: Matrix, f: (v: number) => number): Matrix {
  const out = zeros(x.rows, x.cols);
  for (let i = 0; i < x.data.length; i++) out.data[i] = f(x.data[i]!);
  return out;
}

/** f applied element by element to two matrices of one shape. */
function map2(x: Matrix, y: Matrix, f: (a: number, b: number) => number): Matrix {
  if (x.rows !== y.rows || x.cols !== y.cols) throw new Error('map2: shapes differ');
  const out = zeros(x.rows, x.cols);
  for (let i = 0; i < x.data.length; i++) out.data[i] = f(x.data[i]!, y.data[i]!);
  return out;
}

/** x += y, element by element (the residual connections). */
function addInPlace(x: Matrix, y: Matrix): void {
  if (x.rows !== y.rows || x.cols !== y.cols) throw new Error('addInPlace: shapes differ');
  for (let i = 0; i < x.data.length; i++) x.data[i] = x.data[i]! + y.data[i]!;
}

const silu = (v: number): number => v / (1 + Math.exp(-v));

/** softplus(v) = log(1 + e^v), written so that large v does not overflow. */
export const softplus = (v: number): number => (v > 20 ? v : Math.log1p(Math.exp(v)));

// ---------------------------------------------------------------------------------------------------
// Building blocks

/** RMSNorm(x, w) = w * x / sqrt(mean(x^2) + eps), row by row. */
export function rmsNorm(x: Matrix, w: ArrayLike<number>, eps: number): Matrix {
  if (w.length !== x.cols) throw new Error(`rmsNorm: weight has ${w.length} entries, rows have ${x.cols}`);
  const out = zeros(x.rows, x.cols); // [rows, cols]
  for (let t = 0; t < x.rows; t++) {
    const xt = row(x, t);
    const ot = row(out, t);
    let sumSq = 0;
    for (let i = 0; i < x.cols; i++) sumSq += xt[i]! * xt[i]!;
    const inv = 1 / Math.sqrt(sumSq / x.cols + eps);
    for (let i = 0; i < x.cols; i++) ot[i] = w[i]! * (xt[i]! * inv);
  }
  return out;
}

/**
 * y = x W^T, with W [out, in] as stored in the checkpoint: y[t, o] = sum_i x[t, i] W[o, i], summed in order i.
 * For speed only: eight weight rows at a time are widened to float64 once and met with every input row,
 * so the weights stream through memory once and each input load feeds eight products (4x the plain loop).
 */
export function linear(x: Matrix, w: Tensor): Matrix {
  const [outF, inF] = w.dims;
  if (w.dims.length !== 2 || outF === undefined || inF !== x.cols)
    throw new Error(`linear: weight [${w.dims.join(', ')}] does not take ${x.cols} inputs`);
  const rows = x.rows;
  const X = x.data;
  const y = zeros(rows, outF + 8); // [rows, out], padded so a block never writes past a row
  const w8 = new Float64Array(8 * inF); // weight rows o..o+7, zero past the last row
  for (let o = 0; o < outF; o += 8) {
    w8.fill(0);
    w8.set(w.data.subarray(o * inF, Math.min(o + 8, outF) * inF));
    for (let t = 0; t < rows; t++) {
      const base = t * inF;
      let y0 = 0,
        y1 = 0,
        y2 = 0,
        y3 = 0,
        y4 = 0,
        y5 = 0,
        y6 = 0,
        y7 = 0;
      for (let i = 0; i < inF; i++) {
        const xi = X[base + i]!;
        y0 += xi * w8[i]!;
        y1 += xi * w8[inF + i]!;
        y2 += xi * w8[2 * inF + i]!;
        y3 += xi * w8[3 * inF + i]!;
        y4 += xi * w8[4 * inF + i]!;
        y5 += xi * w8[5 * inF + i]!;
        y6 += xi * w8[6 * inF + i]!;
        y7 += xi * w8[7 * inF + i]!;
      }
      const at = t * y.cols + o;
      const Y = y.data;
      Y[at] = y0;
      Y[at + 1] = y1;
      Y[at + 2] = y2;
      Y[at + 3] = y3;
      Y[at + 4] = y4;
      Y[at + 5] = y5;
      Y[at + 6] = y6;
      Y[at + 7] = y7;
    }
  }
  return columns(y, 0, outF);
}

/**
 * RoPE, rotate-half convention over the full head width, applied to every head of x [T, nHeads*headDim].
 * Row t is at position firstPosition + t; angle[p, j] = fp32(p * invFreq[j]), emb = concat(angle, angle):
 *   out[j] = x[j] cos - x[j+half] sin,  out[j+half] = x[j+half] cos + x[j] sin.
 */
export function applyRope(x: Matrix, headDim: number, invFreq: Float32Array, firstPosition = 0): Matrix {
  const half = headDim / 2;
  if (invFreq.length !== half || x.cols % headDim !== 0)
    throw new Error(`applyRope: ${x.cols} columns, head width ${headDim}, ${invFreq.length} frequencies`);
  const out = zeros(x.rows, x.cols); // [T, nHeads*headDim]
  const cos = new Float64Array(half);
  const sin = new Float64Array(half);
  for (let t = 0; t < x.rows; t++) {
    const p = firstPosition + t;
    for (let j = 0; j < half; j++) {
      const angle = Math.fround(p * invFreq[j]!); // the fp32 product, exactly as an fp32 implementation
      cos[j] = Math.cos(angle);
      sin[j] = Math.sin(angle);
    }
    const xt = row(x, t);
    const ot = row(out, t);
    for (let base = 0; base < x.cols; base += headDim) {
      for (let j = 0; j < half; j++) {
        const x1 = xt[base + j]!;
        const x2 = xt[base + j + half]!;
        ot[base + j] = x1 * cos[j]! - x2 * sin[j]!;
        ot[base + j + half] = x2 * cos[j]! + x1 * sin[j]!;
      }
    }
  }
  return out;
}

/** The training mask: query a may read key b iff b <= a and (global, or a - b <= W, or b is a meta token). */
export function isVisible(a: number, b: number, attention: LayerRole['attention'], W: number, M: number): boolean {
  return b <= a && (attention === 'global' || a - b <= W || b < M);
}

/** GQA: the KV head that query head h reads. */
export function kvHeadFor(h: number, heads: number, kvHeads: number): number {
  return Math.floor(h / (heads / kvHeads));
}

export type AttentionDims = Pick<HymbaDims, 'heads' | 'kvHeads' | 'dqk' | 'dv' | 'W' | 'M'>;

/**
 * Attention branch: softmax(q k^T / sqrt(dqk) + mask) v per query head, q and k already rotated.
 * q [T, heads*dqk], k [T, kvHeads*dqk], v [T, kvHeads*dv] -> [T, heads*dv] (head-major).
 */
export function attentionBranch(
  q: Matrix,
  k: Matrix,
  v: Matrix,
  dims: AttentionDims,
  attention: LayerRole['attention'],
): Matrix {
  const { heads, kvHeads, dqk, dv, W, M } = dims;
  const T = q.rows;
  const out = zeros(T, heads * dv); // [T, heads*dv]
  const scale = 1 / Math.sqrt(dqk);
  const p = new Float64Array(T); // scores, then probabilities, of one query row
  for (let a = 0; a < T; a++) {
    for (let h = 0; h < heads; h++) {
      const g = kvHeadFor(h, heads, kvHeads);
      const qa = q.data.subarray(a * q.cols + h * dqk, a * q.cols + (h + 1) * dqk); // [dqk]
      // scores; masked keys get -inf, hence probability 0
      let max = -Infinity;
      for (let b = 0; b <= a; b++) {
        if (!isVisible(a, b, attention, W, M)) {
          p[b] = -Infinity;
          continue;
        }
        const kb = b * k.cols + g * dqk;
        let dot = 0;
        for (let d = 0; d < dqk; d++) dot += qa[d]! * k.data[kb + d]!;
        p[b] = dot * scale;
        if (p[b]! > max) max = p[b]!;
      }
      // softmax
      let sum = 0;
      for (let b = 0; b <= a; b++) {
        p[b] = Math.exp(p[b]! - max);
        sum += p[b]!;
      }
      // weighted sum of values
      const oa = out.data.subarray(a * out.cols + h * dv, a * out.cols + (h + 1) * dv); // [dv]
      for (let b = 0; b <= a; b++) {
        const weightB = p[b]! / sum;
        if (weightB === 0) continue;
        const vb = b * v.cols + g * dv;
        for (let d = 0; d < dv; d++) oa[d] = oa[d]! + weightB * v.data[vb + d]!;
      }
    }
  }
  return out;
}

/**
 * Causal depthwise conv over time (no activation): out[t, c] = bias[c] + sum_k w[c, k] u[t-dConv+1+k, c],
 * with zeros before the sequence start. w is conv1d.weight [d_in, 1, dConv] flattened.
 */
export function causalConv(u: Matrix, w: ArrayLike<number>, bias: ArrayLike<number>, dConv: number): Matrix {
  const dIn = u.cols;
  if (w.length !== dIn * dConv || bias.length !== dIn) throw new Error('causalConv: kernel or bias shape');
  const out = zeros(u.rows, dIn); // [T, d_in]
  for (let t = 0; t < u.rows; t++) {
    for (let c = 0; c < dIn; c++) {
      let acc = bias[c]!;
      for (let k = 0; k < dConv; k++) {
        const src = t - dConv + 1 + k;
        if (src >= 0) acc += w[c * dConv + k]! * u.data[src * dIn + c]!;
      }
      out.data[t * dIn + c] = acc;
    }
  }
  return out;
}

/**
 * Selective scan (Mamba-1, A diagonal per channel), from s = 0:
 *   s_t[c,n] = exp(delta_t[c] A[c,n]) s_{t-1}[c,n] + delta_t[c] B_t[n] u_t[c]
 *   y_t[c]   = sum_n C_t[n] s_t[c,n] + D[c] u_t[c]
 * u, delta [T, d_in]; A [d_in, N]; B, C [T, N]; D [d_in] -> y [T, d_in].
 */
export function selectiveScan(u: Matrix, delta: Matrix, A: Matrix, B: Matrix, C: Matrix, D: ArrayLike<number>): Matrix {
  const T = u.rows;
  const dIn = u.cols;
  const N = A.cols;
  const s = new Float64Array(dIn * N); // [d_in, N]
  const y = zeros(T, dIn); // [T, d_in]
  for (let t = 0; t < T; t++) {
    for (let c = 0; c < dIn; c++) {
      const dt = delta.data[t * dIn + c]!;
      const uc = u.data[t * dIn + c]!;
      let acc = 0;
      for (let n = 0; n < N; n++) {
        const i = c * N + n;
        s[i] = Math.exp(dt * A.data[i]!) * s[i]! + dt * B.data[t * N + n]! * uc;
        acc += C.data[t * N + n]! * s[i]!;
      }
      y.data[t * dIn + c] = acc + D[c]! * uc;
    }
  }
  return y;
}

// ---------------------------------------------------------------------------------------------------
// Blocks of one layer

const vec = (w: WeightMap, name: string): Float32Array => weight(w, name).data;

/** SSM branch: u, z [T, d_in] -> m [T, d_in]. p is the layer's name prefix. */
function ssmBranch(u: Matrix, z: Matrix, w: WeightMap, p: string, dims: HymbaDims): Matrix {
  const { dConv, dtRank, dState: N, eps } = dims;
  const uConv = causalConv(u, vec(w, `${p}mamba.conv1d.weight`), vec(w, `${p}mamba.conv1d.bias`), dConv); // [T, d_in]
  const uAct = map(uConv, silu); // u' [T, d_in]
  const dbc = linear(uAct, weight(w, `${p}mamba.x_proj.0.weight`)); // [T, dtRank + 2N]
  const dtLow = rmsNorm(columns(dbc, 0, dtRank), vec(w, `${p}mamba.dt_layernorm.weight`), eps); // [T, dtRank]
  const B = rmsNorm(columns(dbc, dtRank, N), vec(w, `${p}mamba.B_layernorm.weight`), eps); // [T, N]
  const C = rmsNorm(columns(dbc, dtRank + N, N), vec(w, `${p}mamba.C_layernorm.weight`), eps); // [T, N]
  const dtBias = vec(w, `${p}mamba.dt_proj.0.bias`);
  const dtProj = linear(dtLow, weight(w, `${p}mamba.dt_proj.0.weight`)); // [T, d_in]
  const delta = zeros(dtProj.rows, dtProj.cols); // [T, d_in]
  for (let i = 0; i < delta.data.length; i++) delta.data[i] = softplus(dtProj.data[i]! + dtBias[i % dtProj.cols]!);
  const A = map(toMatrix(weight(w, `${p}mamba.A_log.0`)), (v) => -Math.exp(v)); // [d_in, N]
  const y = selectiveScan(uAct, delta, A, B, C, vec(w, `${p}mamba.D.0`)); // [T, d_in]
  return map2(y, z, (yi, zi) => yi * silu(zi)); // m [T, d_in]
}

/** Fuse: out_proj of the mean of the two normalised branches. attn, m [T, d_in] -> [T, H]. */
function fuse(attn: Matrix, m: Matrix, w: WeightMap, p: string, eps: number): Matrix {
  const a = rmsNorm(attn, vec(w, `${p}mamba.pre_avg_layernorm1.weight`), eps); // [T, d_in]
  const s = rmsNorm(m, vec(w, `${p}mamba.pre_avg_layernorm2.weight`), eps); // [T, d_in]
  const mean = map2(a, s, (ai, si) => (ai + si) / 2); // [T, d_in]
  return linear(mean, weight(w, `${p}mamba.out_proj.weight`)); // [T, H]
}

/** Gated MLP: down(SiLU(gate n) * up n). n [T, H] -> [T, H]. */
function mlp(n: Matrix, w: WeightMap, p: string): Matrix {
  const gate = linear(n, weight(w, `${p}moe.experts.0.gate_proj.weight`)); // [T, I]
  const up = linear(n, weight(w, `${p}moe.experts.0.up_proj.weight`)); // [T, I]
  const act = map2(gate, up, (g, u) => silu(g) * u); // [T, I]
  return linear(act, weight(w, `${p}moe.experts.0.down_proj.weight`)); // [T, H]
}

/** Rotated keys and values of a producer layer, read again by its consumers. */
interface KeyValue {
  k: Matrix; // [T, kvHeads*dqk], rotated
  v: Matrix; // [T, kvHeads*dv]
}

/** One Hymba layer, updating the residual stream x [T, H] in place. */
function hymbaLayer(
  x: Matrix,
  i: number,
  dims: HymbaDims,
  w: WeightMap,
  invFreq: Float32Array,
  shared: Map<number, KeyValue>,
): void {
  const { H, dIn, kHidden, vHidden, dqk, eps } = dims;
  const role = dims.layers[i]!;
  const p = layerPrefix(i);
  // input norm and the one projection that feeds both branches
  const h = rmsNorm(x, vec(w, `${p}input_layernorm.weight`), eps); // [T, H]
  const P = linear(h, weight(w, `${p}mamba.in_proj.weight`)); // [T, q|k|v|u|z] or [T, q|u|z]
  const q = applyRope(columns(P, 0, H), dqk, invFreq); // [T, heads*dqk]
  let kv: KeyValue;
  let uStart: number;
  if (role.kv.kind === 'producer') {
    kv = {
      k: applyRope(columns(P, H, kHidden), dqk, invFreq), // [T, kvHeads*dqk]
      v: columns(P, H + kHidden, vHidden), // [T, kvHeads*dv]
    };
    shared.set(i, kv);
    uStart = H + kHidden + vHidden;
  } else {
    const produced = shared.get(role.kv.producer);
    if (!produced) throw new Error(`layer ${i} reads K/V of layer ${role.kv.producer}, which has not run`);
    kv = produced;
    uStart = H;
  }
  const u = columns(P, uStart, dIn); // [T, d_in]
  const z = columns(P, uStart + dIn, dIn); // [T, d_in]
  // attention branch and SSM branch, in parallel on the same input
  const attn = attentionBranch(q, kv.k, kv.v, dims, role.attention); // [T, d_in]
  const m = ssmBranch(u, z, w, p, dims); // [T, d_in]
  // fuse, residual
  addInPlace(x, fuse(attn, m, w, p, eps)); // [T, H]
  // MLP, residual
  const n = rmsNorm(x, vec(w, `${p}pre_moe_layernorm.weight`), eps); // [T, H]
  addInPlace(x, mlp(n, w, p)); // [T, H]
}

// ---------------------------------------------------------------------------------------------------
// The model

/** Input: x = [memory_tokens ; embed(ids)], no scaling. -> [M + n, H] */
function embedInput(dims: HymbaDims, w: WeightMap, ids: number[]): Matrix {
  const { H, M, V } = dims;
  const x = zeros(M + ids.length, H); // [T, H]
  if (M > 0) x.data.set(vec(w, 'model.memory_tokens').subarray(0, M * H), 0);
  const embed = vec(w, 'model.embed_tokens.weight'); // [V, H]
  ids.forEach((id, t) => {
    if (!Number.isInteger(id) || id < 0 || id >= V) throw new Error(`token id ${id} is outside 0..${V - 1}`);
    x.data.set(embed.subarray(id * H, (id + 1) * H), (M + t) * H);
  });
  return x;
}

/** Head: final norm, drop the M meta rows, logits = x embed^T (tied). x [T, H] -> n rows of [V]. */
function lmHead(x: Matrix, dims: HymbaDims, w: WeightMap): Float64Array[] {
  const { M, eps } = dims;
  const text: Matrix = { rows: x.rows - M, cols: x.cols, data: x.data.subarray(M * x.cols) }; // [n, H], a view
  const normed = rmsNorm(text, vec(w, 'model.final_layernorm.weight'), eps); // [n, H]
  const logits = linear(normed, weight(w, 'model.embed_tokens.weight')); // [n, V]
  return Array.from({ length: logits.rows }, (_, t) => row(logits, t).slice());
}

/** The residual stream after every layer, meta rows included, before the final norm: [M + n, H]. */
export function referenceHidden(model: ModelConfig, weights: WeightMap, ids: number[]): Matrix {
  const { dims } = model;
  const invFreq = ropeInvFreq(dims);
  const shared = new Map<number, KeyValue>();
  const x = embedInput(dims, weights, ids); // [T, H]
  for (let i = 0; i < dims.L; i++) hymbaLayer(x, i, dims, weights, invFreq, shared);
  return x;
}

/** One row of logits [V] per input id (meta rows dropped), float64, full-sequence. */
export function referenceForward(model: ModelConfig, weights: WeightMap, ids: number[]): Float64Array[] {
  return lmHead(referenceHidden(model, weights, ids), model.dims, weights);
}
