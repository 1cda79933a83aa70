// The selective scan of the SSM heads as ONNX: s_t = a_t * s_{t-1} + b_t over each session's new positions,
// with a_t = exp(delta_t A) the decay and b_t = delta_t u_t B_t the drive (docs/model.md), per channel and state.

import type { GraphBuilder } from '../onnx/builder.js';
import { TO_END } from '../onnx/builder.js';
import type { RunContext } from './graph.js';
import type { GraphCtx } from './ops.js';

/** Positions per first-level chunk of the parallel scan. */
export const SCAN_CHUNK = 8;
/** Default largest T per run: long enough for efficient prefill, short enough to bound activation memory. */
export const DEFAULT_MAX_RUN_TOKENS = 128;

/**
 * s_t = a_t * s_{t-1} + b_t for every t of the run, a and b as rows [R, d_in, N], s0 [B, d_in, N]. One token
 * per session (T = 1, decode, any B) is a single update; longer runs use the parallel scan below instead of a
 * per-position op chain. Returns the states [R, d_in, N] and each session's last one [B, d_in, N].
 */
export function selectiveScan(g: GraphCtx, run: RunContext, a: string, bb: string, s0: string): [string, string] {
  const { b, d } = g;
  const oneToken = b.op('Equal', [run.T, b.ints([1])]);
  const sessionShape = run.shapeBT([d.dIn, d.dState]); // created out here: the branches only read it
  const [states, last] = b.ifElse(
    oneToken,
    (s) => {
      const next = s.add(s.mul(a, s0), bb); // R = B rows line up with the sessions
      return [next, next];
    },
    (s) => {
      const perSession = (x: string): string => s.op('Reshape', [x, sessionShape]); // [B, T, d_in, N]
      const scanned = parallelScan({ ...g, b: s }, perSession(a), perSession(bb), s0, run.T);
      return [s.reshape(scanned, [-1, d.dIn, d.dState]), s.squeeze(s.slice(scanned, 1, -1, TO_END), [1])];
    },
  );
  return [states!, last!];
}

/**
 * The scan for T > 1 in two levels over (a, b) pairs [B, T, d_in, N], composed as
 * (a2, b2) o (a1, b1) = (a2 a1, a2 b1 + b2):
 * 1. within chunks of Q positions, unrolled: the chunk axis is split into Q slices and combined in order
 *    (every op works on 1/Q of the data, and there are no shift copies);
 * 2. over the chunk totals, a Hillis-Steele scan whose shifts pad with the identity (a=1, b=0), so a step
 *    whose offset exceeds the number of chunks is a no-op and any T up to the limit works.
 * Then each position's state is its in-chunk prefix applied to the state entering its chunk.
 */
function parallelScan(g: GraphCtx, a: string, bb: string, s0: string, T: string): string {
  const { b, d, opts } = g;
  const Q = opts.scanChunk ?? SCAN_CHUNK;
  const carrySteps = Math.ceil(Math.log2(Math.max(1, (opts.maxRunTokens ?? DEFAULT_MAX_RUN_TOKENS) / Q)));
  const nC = b.div(b.add(T, b.ints([Q - 1])), b.ints([Q])); // ceil(T / Q)
  const padLen = b.sub(b.mul(nC, b.ints([Q])), T);
  const padPairs = b.concat([b.ints([0, 0, 0, 0, 0]), padLen, b.ints([0, 0])], 0); // [begins..., ends...]: end of axis 1
  const toChunks = (x: string, fill: number): string[] =>
    b.split(
      b.reshapeTo(b.op('Pad', [x, padPairs, b.float(fill)]), [0, nC, Q, d.dIn, d.dState]),
      2,
      new Array<number>(Q).fill(1),
    ); // Q x [B, nC, 1, d_in, N]
  const as = toChunks(a, 1);
  const bs = toChunks(bb, 0);
  // 1. in-chunk prefixes
  const prefixA = [as[0]!];
  const prefixB = [bs[0]!];
  for (let i = 1; i < Q; i++) {
    prefixA.push(b.mul(as[i]!, prefixA[i - 1]!));
    prefixB.push(b.add(b.mul(as[i]!, prefixB[i - 1]!), bs[i]!));
  }
  // 2. carry across chunks: cumulative (a, b) of each chunk's total
  let A2 = b.squeeze(prefixA[Q - 1]!, [2]); // [B, nC, d_in, N]
  let B2 = b.squeeze(prefixB[Q - 1]!, [2]);
  for (let s = 0, off = 1; s < carrySteps; s++, off *= 2) [A2, B2] = scanStep(b, A2, B2, off, nC);
  const start = b.unsqueeze(s0, [1]); // [B, 1, d_in, N]
  const ends = b.add(b.mul(A2, start), B2); // state after each chunk [B, nC, d_in, N]
  const entering = b.unsqueeze(b.slice(b.concat([start, ends], 1), 1, 0, nC), [2]); // [B, nC, 1, d_in, N]
  const states = prefixA.map((pa, i) => b.add(b.mul(pa, entering), prefixB[i]!)); // Q x [B, nC, 1, d_in, N]
  return b.slice(b.reshape(b.concat(states, 2), [0, -1, d.dIn, d.dState]), 1, 0, T); // [B, T, d_in, N]
}

/** One Hillis-Steele step along the chunk axis 1 (of length `len`) of [B, nC, d_in, N]: combine with `off` earlier. */
function scanStep(b: GraphBuilder, A: string, B: string, off: number, len: string): [string, string] {
  const pads = [0, off, 0, 0, 0, 0, 0, 0]; // rank 4, begins then ends: `off` identity entries in front of axis 1
  const shift = (x: string, fill: number): string => b.slice(b.op('Pad', [x, b.ints(pads), b.float(fill)]), 1, 0, len);
  const [Aprev, Bprev] = [shift(A, 1), shift(B, 0)];
  return [b.mul(A, Aprev), b.add(b.mul(A, Bprev), B)];
}
