// The Hymba forward pass as an ONNX graph, for one stage (engine/stages/stage-spec.ts: the embedding, the
// blocks of some layers, the head) continuing from any state, for a batch of B sessions at once (B = 1 for a
// prompt; B > 1 decodes one token of each of several sessions). The graph's inputs and outputs (token ids or
// hidden rows, positions, per-layer state, logits) are named in engine/stages/stage-io.ts.
//
//   x = embed(ids)                         // [meta tokens ; tokens], [R, H]
//   for each layer:
//     x = x + mixer(RMSNorm(x))            // attention heads and SSM heads side by side, fused
//     x = x + mlp(RMSNorm(x))              // gated SiLU MLP
//   logits = lm_head(RMSNorm(x))           // tied to the embedding
//
// A stage may hold only part of a layer (its mixer block or its MLP block): the loop runs the blocks held.
// The trunk stays 2-D, rows R = B*T (norms, matmuls, MLP, head work row by row); only the sequential parts
// (RoPE positions, causal conv, scan, attention and the K/V update) see the [B, T, ...] layout.
//
// Glossary (docs/model.md): H hidden, d_in = expand*H SSM channels (= heads * dv), N d_state, W window, M meta
// tokens, S stored K/V entries, delta step size, A = -exp(A_log) decay, B/C input/output projections of the
// selective scan, D skip. A KV producer computes K/V; a consumer attends over its producer's cache.

import { ropeInvFreq } from './config.js';
import { TO_END } from '../onnx/builder.js';
import { DataType } from '../onnx/proto.js';
import { heldBlocks, type BlocksStage } from '../stages/stage-spec.js';
import type { KvIO, LayerIO, StageIO } from '../stages/stage-io.js';
import { embed, lmHead } from './embedding.js';
import { linear, linearOf, rmsNorm, vector, type GraphCtx } from './ops.js';
import { selectiveScan } from './scan.js';
import { layerPrefix, mixerWeights, mlpWeights, type MixerWeights, type MlpWeights } from './weights.js';

/** A producer's K/V for this run (before trimming to the window) and the mask its readers attend with. */
interface RunKv {
  key: string; // [B, kv, S+T, dqk]
  value: string; // [B, kv, S+T, dv]
  mask: string; // [B, 1, 1, T, S+T] additive
}

/** Values shared by every layer of one run. */
export interface RunContext {
  Bs: string; // [1] int64 number of sessions
  T: string; // [1] int64 new tokens per session
  position: string; // [B, 1] int64 each session's position before the run
  qPos: string; // [B, T] int64 absolute positions of the new tokens
  cos: string; // [B, T, 1, dqk]
  sin: string; // [B, T, 1, dqk]
  /** the shape [B, T, ...rest], built once per graph, in the main graph (If branches only read it) */
  shapeBT: (rest: number[]) => string;
  /** K/V of each producer after this run's tokens, by producer layer */
  kv: Map<number, RunKv>;
}

/** One layer's mixer block: the graph, the layer, its weights and state names, and the run. */
interface MixerCtx extends GraphCtx {
  i: number;
  lw: MixerWeights;
  io: LayerIO;
  run: RunContext;
}

/** The graph of a blocks stage; its inputs (io.inputs) are already declared. */
export function stageForward(g: GraphCtx, spec: BlocksStage, io: StageIO): void {
  const { b, d, w } = g;
  const input = io.input.name;
  const run = runContext(g, b.dim(input, 0), b.dim(input, 1), io.position!.name);
  // a mirrored producer's new entries come in as inputs (exactly what its stage output), for its consumers here
  for (const [p, kv] of io.mirrors)
    b.within(`mirror${p}`, () => attachKv(g, run, p, kv, kv.fresh.key.name, kv.fresh.value.name));
  let x = spec.embed ? embed(g, b.reshape(input, [-1])) : b.reshape(input, [-1, d.H]); // [R, H]
  for (const held of heldBlocks(spec)) {
    const i = held.layer;
    b.within(`layer${i}`, () => {
      if (held.mixer) x = mixer({ ...g, i, lw: mixerWeights(w, d, i), io: io.layers.get(i)!, run }, x);
      if (held.mlp) x = b.within('mlp', () => mlp(g, mlpWeights(w, d, i), x));
    });
  }
  const out = spec.head ? lmHead(g, toBT(g, run, x, [d.H]), io.logitsFrom!.name, [0, d.V]) : toBT(g, run, x, [d.H]);
  b.output(out, io.output.name, io.output.shape);
}

/** Rows [R, ...] viewed as [B, T, ...rest]. */
function toBT(g: GraphCtx, run: RunContext, x: string, rest: number[]): string {
  return g.b.op('Reshape', [x, run.shapeBT(rest)]);
}

/** Positions of the new tokens and their RoPE tables (angles in fp32, as the reference computes them). */
function runContext(g: GraphCtx, Bs: string, T: string, position: string): RunContext {
  const { b, d } = g;
  const steps = b.op('Range', [b.ints([0], true), b.squeeze(T, [0]), b.ints([1], true)]); // [T]
  const p = b.unsqueeze(position, [1]); // [B, 1]
  const qPos = b.add(p, b.unsqueeze(steps, [0])); // [B, T]
  const invFreq = b.weight('rope.inv_freq', [1, 1, d.dqk / 2], ropeInvFreq(d), 'f32');
  const angle = b.mul(b.unsqueeze(b.cast(qPos, DataType.FLOAT), [2]), invFreq); // [B, T, dqk/2]
  const full = b.unsqueeze(b.concat([angle, angle], 2), [2]); // [B, T, 1, dqk]
  const shapeBT = (rest: number[]): string =>
    b.once(`shapeBT:${rest.join(',')}`, () => b.concat([Bs, T, b.ints(rest)], 0));
  return { Bs, T, position: p, qPos, cos: b.op('Cos', [full]), sin: b.op('Sin', [full]), shapeBT, kv: new Map() };
}

/**
 * A Hymba layer's first residual block, its mixer: attention heads and SSM heads in parallel on the same
 * normalised input, their outputs normalised, averaged and projected back onto the residual stream.
 */
function mixer(m: MixerCtx, x: string): string {
  const { b, d, i, lw } = m;
  const role = d.layers[i]!;
  const producer = role.kv.kind === 'producer';
  const h = rmsNorm(m, x, lw.input_layernorm); // [R, H]
  const P = linear(m, lw.mamba.in_proj, h); // [R, rows]
  const widths = producer ? [d.H, d.kHidden, d.vHidden, d.dIn, d.dIn] : [d.H, d.dIn, d.dIn];
  const parts = b.split(P, 1, widths);
  const [q, u, z] = producer ? [parts[0]!, parts[3]!, parts[4]!] : [parts[0]!, parts[1]!, parts[2]!];
  if (producer) b.within('kv', () => updateKv(m, parts[1]!, parts[2]!));
  const kvOf = role.kv.kind === 'producer' ? i : role.kv.producer;
  const attn = b.within('attention', () => attention(m, q, m.run.kv.get(kvOf)!)); // [R, d_in]
  const s = b.within('ssm', () => ssm(m, u, z)); // [R, d_in]
  return b.within('fuse', () => fuse(m, x, attn, s));
}

/** Rotate-half RoPE over the full head width: x*cos + rotate_half(x)*sin, x [B, T, heads, dqk]. */
function rope(g: GraphCtx, run: RunContext, x: string): string {
  const { b, d } = g;
  const [x1, x2] = b.split(x, 3, [d.dqk / 2, d.dqk / 2]) as [string, string];
  const rotated = b.concat([b.op('Neg', [x2]), x1], 3);
  return b.add(b.mul(x, run.cos), b.mul(rotated, run.sin));
}

/** Each session's entry count [B, 1] before the run (state.ts kvEntries), shared by the producers of the kind. */
function kvCountBefore(g: GraphCtx, run: RunContext, global: boolean): string {
  const { b, d } = g;
  return b.once(`kvCountBefore:${global}`, () => {
    if (global) return run.position;
    const M = b.ints([d.M], true);
    const recent = b.op('Min', [b.op('Max', [b.sub(run.position, M), b.ints([0], true)]), b.ints([d.W], true)]);
    return b.add(b.op('Min', [run.position, M]), recent);
  });
}

/**
 * A producer's K/V for this run's attention: past K/V [B, kv, S, d] (each session's meta entries, then its
 * window or all earlier keys, then padding) with the new rotated keys appended at S. Only the new entries
 * are outputs: appending them to the stored cache (and dropping what leaves the window) is the caller's.
 */
function updateKv(m: MixerCtx, kNew: string, vNew: string): void {
  const { b, d, run } = m;
  const kv = m.io.kv!;
  const k = b.transpose(rope(m, run, toBT(m, run, kNew, [d.kvHeads, d.dqk])), [0, 2, 1, 3]); // [B, kv, T, dqk]
  const v = b.transpose(toBT(m, run, vNew, [d.kvHeads, d.dv]), [0, 2, 1, 3]); // [B, kv, T, dv]
  b.output(k, kv.fresh.key.name, kv.fresh.key.shape);
  b.output(v, kv.fresh.value.name, kv.fresh.value.shape);
  attachKv(m, run, m.i, kv, k, v);
}

/** Producer p's K/V for this run: its past cache with the new entries k [B, kv, T, dqk], v [B, kv, T, dv] appended. */
function attachKv(g: GraphCtx, run: RunContext, p: number, kv: KvIO, k: string, v: string): void {
  const { b, d } = g;
  const pastK = kv.past.key.name;
  const key = b.concat([pastK, k], 2); // [B, kv, S+T, dqk]
  const value = b.concat([kv.past.value.name, v], 2); // [B, kv, S+T, dv]
  const global = d.layers[p]!.attention === 'global';
  run.kv.set(p, { key, value, mask: attentionMask(g, run, pastK, global) });
}

/**
 * Additive mask [B, 1, 1, T, S+T] from absolute positions. Stored entry j < M is meta token j; later stored
 * entries are the keys just before `position`; entries past the session's count are padding (never seen).
 * Allowed iff key <= query and (global or query-key <= W or key < M).
 */
function attentionMask(g: GraphCtx, run: RunContext, pastK: string, global: boolean): string {
  const { b, d } = g;
  const S = b.dim(pastK, 2);
  const idx = b.op('Range', [b.ints([0], true), b.squeeze(S, [0]), b.ints([1], true)]); // [S]
  const count = kvCountBefore(g, run, global); // [B, 1]
  const recent = b.add(b.sub(run.position, count), idx); // [B, S]: position - count + j
  const M = b.ints([d.M], true);
  const real = b.op('Where', [b.op('Less', [idx, M]), idx, recent]);
  // padding gets a position after every query, so the causal test below excludes it
  const pastPos = b.op('Where', [b.op('Less', [idx, count]), real, b.ints([2 ** 40], true)]); // [B, S]
  const kPos = b.concat([pastPos, run.qPos], 1); // [B, S+T]
  const diff = b.sub(b.unsqueeze(run.qPos, [2]), b.unsqueeze(kPos, [1])); // [B, T, S+T]
  let allowed = b.op('GreaterOrEqual', [diff, b.ints([0], true)]);
  if (!global) {
    const inWindow = b.op('LessOrEqual', [diff, b.ints([d.W], true)]);
    const isMeta = b.unsqueeze(b.op('Less', [kPos, M]), [1]);
    allowed = b.op('And', [allowed, b.op('Or', [inWindow, isMeta])]);
  }
  return b.unsqueeze(b.op('Where', [allowed, b.float(0), b.float(-1e30)]), [1, 2]);
}

/** Grouped-query attention: head h reads KV head floor(h / g); output [R, heads*dv] = [R, d_in]. */
function attention(m: MixerCtx, qFlat: string, kv: RunKv): string {
  const { b, d, run } = m;
  const g = d.heads / d.kvHeads;
  const q = rope(m, run, toBT(m, run, qFlat, [d.heads, d.dqk])); // [B, T, heads, dqk]
  const qs = b.mul(q, b.float(1 / Math.sqrt(d.dqk)));
  const grouped = b.transpose(b.reshape(qs, [0, 0, d.kvHeads, g, d.dqk]), [0, 2, 3, 1, 4]); // [B, kv, g, T, dqk]
  const qg = b.reshape(grouped, [0, 0, -1, d.dqk]); // [B, kv, g*T, dqk]
  const scores = b.matmul(qg, b.transpose(kv.key, [0, 1, 3, 2])); // [B, kv, g*T, S+T]
  const keys = b.dim(kv.key, 2); // S+T
  const masked = b.add(b.reshapeTo(scores, [0, 0, g, -1, keys]), kv.mask); // [B, kv, g, T, S+T]
  const probs = b.op('Softmax', [masked], { axis: -1 });
  const out = b.matmul(b.reshapeTo(probs, [0, 0, -1, keys]), kv.value); // [B, kv, g*T, dv]
  const heads = b.transpose(b.reshape(out, [0, 0, g, -1, d.dv]), [0, 3, 1, 2, 4]); // [B, T, kv, g, dv]
  return b.reshape(heads, [-1, d.heads * d.dv]);
}

/** The Mamba branch on u, gated by z (both [R, d_in]): causal conv, input-dependent delta/B/C, selective scan. */
function ssm(m: MixerCtx, u: string, z: string): string {
  const { b, d, lw, io, run } = m;
  const mamba = lw.mamba;
  const uc = b.silu(causalConv(m, u)); // [R, d_in]
  const [dtRaw, Braw, Craw] = b.split(linear(m, mamba.x_proj, uc), 1, [d.dtRank, d.dState, d.dState]) as [
    string,
    string,
    string,
  ];
  const dt = rmsNorm(m, dtRaw, mamba.dt_layernorm); // [R, dt_rank]
  const B = rmsNorm(m, Braw, mamba.B_layernorm); // [R, N]
  const C = rmsNorm(m, Craw, mamba.C_layernorm); // [R, N]
  const delta = b.op('Softplus', [b.add(linear(m, mamba.dt_proj.weight, dt), vector(m, mamba.dt_proj.bias))]); // [R, d_in]
  const A = b.weight(
    `${layerPrefix(m.i)}mamba.A`,
    mamba.A_log.dims,
    mamba.A_log.data.map((v) => -Math.exp(v)),
    'f32',
  ); // [d_in, N]
  const delta3 = b.unsqueeze(delta, [2]); // [R, d_in, 1]
  const decay = b.exp(b.mul(delta3, A)); // [R, d_in, N]
  const drive = b.mul(b.mul(delta3, b.unsqueeze(uc, [2])), b.unsqueeze(B, [1])); // [R, d_in, N]
  const [states, last] = selectiveScan(m, run, decay, drive, io.ssm.input.name); // [R, d_in, N], [B, d_in, N]
  b.output(last, io.ssm.output.name, io.ssm.output.shape);
  const y = b.squeeze(b.matmul(states, b.unsqueeze(C, [2])), [2]); // [R, d_in] = sum_n C[n] s[c, n]
  const withSkip = b.add(y, b.mul(uc, vector(m, mamba.D)));
  return b.mul(withSkip, b.silu(z));
}

/** Depthwise causal conv over [conv state ; u] per session; the new state is the last d_conv-1 inputs. */
function causalConv(m: MixerCtx, u: string): string {
  const { b, d, io, run } = m;
  const conv1d = m.lw.mamba.conv1d;
  const xs = b.concat([io.conv.input.name, toBT(m, run, u, [d.dIn])], 1); // [B, d_conv-1+T, d_in]
  b.output(b.slice(xs, 1, -(d.dConv - 1), TO_END), io.conv.output.name, io.conv.output.shape);
  const k = vector(m, conv1d.weight); // [d_in, 1, d_conv]
  const y = b.op('Conv', [b.transpose(xs, [0, 2, 1]), k, vector(m, conv1d.bias)], {
    group: d.dIn,
    kernel_shape: [d.dConv],
  }); // [B, d_in, T]: the sessions are Conv's batch
  return b.reshape(b.transpose(y, [0, 2, 1]), [-1, d.dIn]);
}

/** x + out_proj((RMSNorm(attn) + RMSNorm(ssm)) / 2): the two branches are normalised, then averaged. */
function fuse(m: MixerCtx, x: string, attn: string, s: string): string {
  const { b, lw } = m;
  const a = rmsNorm(m, attn, lw.mamba.pre_avg_layernorm1);
  const sn = rmsNorm(m, s, lw.mamba.pre_avg_layernorm2);
  const avg = b.mul(b.add(a, sn), b.float(0.5));
  return b.add(x, linear(m, lw.mamba.out_proj, avg));
}

/** A Hymba layer's second residual block, the gated MLP: x + down(SiLU(gate n) * up n), n = RMSNorm(x). */
function mlp(g: GraphCtx, lw: MlpWeights, x: string): string {
  return g.b.add(x, linear(g, lw.down_proj, mlpHidden(g, lw, x, [0, g.d.I])));
}

/**
 * SiLU(gate_k n) * up_k n [R, hi - lo] over intermediate columns [lo, hi) (all of them in the MLP block; an
 * MLP slice's share in engine/stages/slices.ts), gate and up fused into one matmul. gate/up rows and int8/q4
 * scales are per intermediate column, so slicing them is exact.
 */
export function mlpHidden(g: GraphCtx, lw: MlpWeights, x: string, [lo, hi]: [number, number]): string {
  const { b, d } = g;
  const n = rmsNorm(g, x, lw.pre_moe_layernorm);
  const Ik = hi - lo;
  const both = new Float32Array(2 * Ik * d.H);
  both.set(lw.gate_proj.data.subarray(lo * d.H, hi * d.H), 0);
  both.set(lw.up_proj.data.subarray(lo * d.H, hi * d.H), Ik * d.H);
  const gateUp = { dims: [2 * Ik, d.H], data: both };
  const fusedName = lw.gate_proj.name.replace('gate_proj', 'gate_up_proj'); // model.layers.i.moe.experts.0.gate_up_proj.weight
  const [gate, up] = b.split(linearOf(g, fusedName, gateUp, n), 1, [Ik, Ik]) as [string, string];
  return b.mul(b.silu(gate), up); // [R, Ik]
}
