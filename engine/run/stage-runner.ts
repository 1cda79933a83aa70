// Runs one stage graph (sublayer units of layers [first, last), optionally the embedding in front and the head
// behind, or one slice of a block) for one
// session, or for several sessions at one token each in a single ONNX run (continuous batching).
// The state given may hold only this stage's layers; it is advanced only when the run succeeds.
// The graph takes a batch axis (engine/model/graph.ts; its inputs and outputs: engine/stages/stage-io.ts): one
// session's arrays are fed as they are; a batch is packed
// here (K/V caches right-padded to the longest) and each session's state is cut out of the outputs. The graph
// returns only the new K/V entries: appending them (and trimming sliding caches) is done here, in one copy.
// A stage that mirrors a producer (kvIn) gets the producer's new entries with its input and appends them to
// its own copy of the cache (a mirror entry, state.ts) exactly as the producer's stage does.

import { concatFloat32 } from './arrays.js';
import type { HymbaDims, ModelConfig } from '../model/config.js';
import { DEFAULT_MAX_RUN_TOKENS } from '../model/scan.js';
import { feedShape, stageIO, type KvIO, type StageIO, type TensorIO } from '../stages/stage-io.js';
import { givesLogits, sliceRange, takesIds } from '../stages/stage-spec.js';
import type { Stage } from './runner.js';
import { float32, int64, type OrtTensor } from './ort.js';
import {
  kvEntries,
  kvLayer,
  mixerLayer,
  type HymbaState,
  type KvCache,
  type LayerState,
  type MixerLayerState,
} from '../state/state.js';

/** New K/V entries of one producer for one session: [kv_heads, T, dqk] and [kv_heads, T, dv] (rotated keys). */
export interface KvEntries {
  key: Float32Array;
  value: Float32Array;
}

/**
 * A stage's input: token ids (stage with the embedding; ids >= V are meta tokens V+j) or hidden rows [T, H]
 * row-major; `kv`: the new entries of each producer the stage mirrors (StageSpec.kvIn), as its stage output them.
 */
export type StageInput = ({ ids: number[] } | { hidden: Float32Array }) & { kv?: Record<number, KvEntries> };

export interface StageOutput {
  /** [T, H] row-major, for a stage without the head (an MLP slice: its partial sum; an embedding slice: its rows) */
  hidden: Float32Array | null;
  /** [rows, V] row-major, head stage only: rows = T - logitsFrom; a head slice: [rows, V_k] */
  logits: Float32Array | null;
  rows: number;
  /** a head slice's vocabulary rows [lo, hi) (an array, not a tuple: outputs cross Durable Object RPC) */
  vocab?: number[];
  /** the new K/V entries of the producers in StageSpec.kvOut */
  kv?: Record<number, KvEntries>;
}

/**
 * ORT Web sessions are not reentrant, and every session of an isolate shares one WASM instance: runs go one
 * at a time, in arrival order, across all StageRunners.
 */
let tail: Promise<unknown> = Promise.resolve();
function exclusive<T>(fn: () => Promise<T>): Promise<T> {
  const run = tail.then(fn, fn);
  tail = run.catch(() => undefined);
  return run;
}

export class StageRunner {
  /** the graph's input and output names and shapes */
  private readonly io: StageIO;

  constructor(
    readonly model: ModelConfig,
    readonly stage: Stage,
    /** the most tokens one run may carry: the graph's scan is built for this many */
    readonly maxRunTokens: number = DEFAULT_MAX_RUN_TOKENS,
  ) {
    this.io = stageIO(model.dims, stage.spec);
  }

  /**
   * One session, T = input length (1 <= T <= maxRunTokens) new tokens at state.position. Advances `state`
   * (its layers [first, last) and position += T); arrays are replaced, never mutated, so a failure leaves
   * `state` as it was. logitsFrom: first row that gets logits (head stage; ignored otherwise).
   */
  async run(state: HymbaState, input: StageInput, logitsFrom: number): Promise<StageOutput> {
    const T = this.inputLength(input);
    if (T < 1 || T > this.maxRunTokens) throw new Error(`a stage run takes 1 to ${this.maxRunTokens} tokens, not ${T}`);
    const from = givesLogits(this.stage.spec) ? logitsFrom : 0;
    if (!(Number.isInteger(from) && from >= 0 && from < T))
      throw new Error(`logitsFrom ${logitsFrom} is outside [0, ${T})`);
    return (await this.runSessions([{ state, input }], T, from))[0]!;
  }

  /**
   * Continuous batching: several sessions, exactly one new token each, in one ONNX run. Equal (within float
   * tolerance) to calling run() for each item alone; the head stage returns one logits row per item. Each
   * item's state advances as in run(); on failure no state changes.
   */
  async runBatch(items: { state: HymbaState; input: StageInput }[]): Promise<StageOutput[]> {
    if (items.length === 0) return [];
    for (const { input } of items)
      if (this.inputLength(input) !== 1) throw new Error('a batched run takes exactly one token per session');
    if (new Set(items.map((it) => it.state)).size !== items.length)
      throw new Error('a state appears twice in one batch');
    return this.runSessions(items, 1, 0);
  }

  private async runSessions(items: Item[], T: number, logitsFrom: number): Promise<StageOutput[]> {
    const feeds = this.feeds(items, T, logitsFrom);
    const out = await exclusive(() => this.stage.graph.session.run(feeds));
    const results = items.map((it, k) => ({
      layers: [...this.layersFrom(out, items, k, T), ...this.mirrorsFrom(items, k, T)],
      output: this.outputOf(out, items.length, k, T - logitsFrom),
    }));
    // commit only now, all at once: everything above may throw
    items.forEach(({ state }, k) => {
      for (const [i, l] of results[k]!.layers) state.layers[i] = l;
      state.position += T;
    });
    return results.map((r) => r.output);
  }

  private inputLength(input: StageInput): number {
    const { spec } = this.stage;
    if ('ids' in input) {
      if (!takesIds(spec)) throw new Error(`stage [${spec.first}, ${spec.last}) takes hidden rows, not token ids`);
      return input.ids.length;
    }
    if (takesIds(spec)) throw new Error(`stage [${spec.first}, ${spec.last}) takes token ids, not hidden rows`);
    const { H } = this.model.dims;
    if (input.hidden.length % H !== 0)
      throw new Error(`hidden input of ${input.hidden.length} floats is not [T, ${H}]`);
    return input.hidden.length / H;
  }

  /** The graph's inputs for B sessions of T tokens: one session's arrays as they are, a batch's packed. */
  private feeds(items: Item[], T: number, logitsFrom: number): Record<string, OrtTensor> {
    const d = this.model.dims;
    const { io } = this;
    const B = items.length;
    const size = { B, T };
    const feeds: Record<string, OrtTensor> = {};
    // slices take no position (nor state)
    if (io.position)
      feeds[io.position.name] = int64(
        items.map((it) => it.state.position),
        feedShape(io.position, size),
      );
    if (io.logitsFrom) feeds[io.logitsFrom.name] = int64([logitsFrom], []);
    // inputLength() has checked that every input is of the stage's kind
    if (takesIds(this.stage.spec)) {
      const ids = items.flatMap((it) => ('ids' in it.input ? it.input.ids : []));
      feeds[io.input.name] = int64(ids, feedShape(io.input, size));
    } else {
      const rows = stack(items.map((it) => ('hidden' in it.input ? it.input.hidden : EMPTY)));
      feeds[io.input.name] = float32(rows, feedShape(io.input, size));
    }
    for (const [i, l] of io.layers) {
      const layers = items.map(({ state }) => mixerLayer(state, i));
      feeds[l.conv.input.name] = float32(stack(layers.map((s) => s.conv)), feedShape(l.conv.input, size));
      feeds[l.ssm.input.name] = float32(stack(layers.map((s) => s.ssm)), feedShape(l.ssm.input, size));
      if (l.kv) Object.assign(feeds, this.kvFeeds(i, l.kv, items, caches(items, i)));
    }
    for (const [p, m] of io.mirrors) {
      Object.assign(feeds, this.kvFeeds(p, m, items, caches(items, p)));
      const fresh = items.map((it) => mirrorInput(d, it.input, p, T));
      feeds[m.fresh.key.name] = float32(stack(fresh.map((e) => e.key)), feedShape(m.fresh.key, size));
      feeds[m.fresh.value.name] = float32(stack(fresh.map((e) => e.value)), feedShape(m.fresh.value, size));
    }
    return feeds;
  }

  /** Session k's mirror entries after the run: its copy of each mirrored cache with the producer's new entries. */
  private mirrorsFrom(items: Item[], k: number, T: number): [number, LayerState][] {
    const d = this.model.dims;
    const { state, input } = items[k]!;
    return (this.stage.spec.kvIn ?? []).map((p) => {
      const prev = kvLayer(state, p);
      const fresh = mirrorInput(d, input, p, T);
      const cache = (past: Float32Array, entries: Float32Array, width: number): Float32Array =>
        appendEntries(d, p, state.position, past, entries, 0, T, width);
      return [
        p,
        {
          kind: 'mirror',
          key: cache(prev.key, fresh.key, d.dqk),
          value: cache(prev.value, fresh.value, d.dv),
          kvLen: kvEntries(d, p, state.position + T),
        },
      ];
    });
  }

  /** A producer's caches, right-padded to the longest; each must hold what its position implies. */
  private kvFeeds(i: number, kv: KvIO, items: Item[], layers: KvCache[]): Record<string, OrtTensor> {
    const d = this.model.dims;
    const B = items.length;
    const counts = layers.map((l, k) => {
      const { position } = items[k]!.state;
      const expected = kvEntries(d, i, position);
      if (l.kvLen !== expected)
        throw new Error(`layer ${i} holds ${l.kvLen} K/V entries at position ${position}, not ${expected}`);
      return l.kvLen;
    });
    const S = Math.max(...counts);
    const packed = (arrays: Float32Array[], t: TensorIO): OrtTensor => {
      const [, heads, , width] = feedShape(t, { B, S }) as [number, number, number, number];
      return float32(B === 1 ? arrays[0]! : padRows(arrays, counts, heads, S, width), [B, heads, S, width]);
    };
    const { key, value } = kv.past;
    return {
      [key.name]: packed(
        layers.map((l) => l.key),
        key,
      ),
      [value.name]: packed(
        layers.map((l) => l.value),
        value,
      ),
    };
  }

  /** Session k's layers after the run, cut out of the batch's outputs (one session: the outputs as they are). */
  private layersFrom(out: Record<string, OrtTensor>, items: Item[], k: number, T: number): [number, MixerLayerState][] {
    const d = this.model.dims;
    const B = items.length;
    const { state } = items[k]!;
    const part = (t: Float32Array): Float32Array => (B === 1 ? t : sessionPart(t, B, k));
    const layers: [number, MixerLayerState][] = [];
    for (const [i, l] of this.io.layers) {
      const conv = part(outputData(out, l.conv.output.name));
      const ssm = part(outputData(out, l.ssm.output.name));
      if (!l.kv) {
        layers.push([i, { kind: 'consumer', conv, ssm }]);
        continue;
      }
      const prev = kvLayer(state, i);
      const cache = (past: Float32Array, name: string, width: number): Float32Array =>
        appendEntries(d, i, state.position, past, outputData(out, name), k, T, width);
      layers.push([
        i,
        {
          kind: 'producer',
          conv,
          ssm,
          key: cache(prev.key, l.kv.fresh.key.name, d.dqk),
          value: cache(prev.value, l.kv.fresh.value.name, d.dv),
          kvLen: kvEntries(d, i, state.position + T),
        },
      ]);
    }
    return layers;
  }

  private outputOf(out: Record<string, OrtTensor>, B: number, k: number, rows: number): StageOutput {
    const { spec } = this.stage;
    const part = (t: Float32Array): Float32Array => (B === 1 ? t : sessionPart(t, B, k));
    const result: StageOutput = givesLogits(spec)
      ? { hidden: null, logits: part(outputData(out, this.io.output.name)), rows }
      : { hidden: part(outputData(out, this.io.output.name)), logits: null, rows };
    if (spec.slice?.kind === 'head') result.vocab = sliceRange(this.model.dims.V, spec.slice.part, spec.slice.parts);
    if (spec.kvOut?.length) {
      result.kv = {};
      for (const p of spec.kvOut) {
        const { fresh } = this.io.layers.get(p)!.kv!;
        result.kv[p] = { key: part(outputData(out, fresh.key.name)), value: part(outputData(out, fresh.value.name)) };
      }
    }
    return result;
  }
}

type Item = { state: HymbaState; input: StageInput };
const EMPTY = new Float32Array(0);

/** A mirrored producer's new entries in a session's input, checked against [kv_heads, T, d]. */
function mirrorInput(d: HymbaDims, input: StageInput, p: number, T: number): KvEntries {
  const e = input.kv?.[p];
  if (!e) throw new Error(`the input lacks the new K/V entries of mirrored producer ${p}`);
  if (e.key.length !== d.kvHeads * T * d.dqk || e.value.length !== d.kvHeads * T * d.dv)
    throw new Error(`the new K/V entries of producer ${p} are not [${d.kvHeads}, ${T}, d]`);
  return e;
}

/** Each session's K/V cache of layer i (its own producer entry or a mirror). */
function caches(items: Item[], i: number): KvCache[] {
  return items.map(({ state }) => kvLayer(state, i));
}

function outputData(out: Record<string, OrtTensor>, name: string): Float32Array {
  const t = out[name];
  if (!t) throw new Error(`graph output ${name} is missing`);
  return t.data as Float32Array;
}

/** A copy of session k's share of a batch output (`set` of a view: several times faster than `slice` in V8). */
function sessionPart(t: Float32Array, B: number, k: number): Float32Array {
  const n = t.length / B;
  const out = new Float32Array(n);
  out.set(t.subarray(k * n, (k + 1) * n));
  return out;
}

/** Equal-sized arrays one after another (one array: itself, no copy). */
function stack(arrays: Float32Array[]): Float32Array {
  return arrays.length === 1 ? arrays[0]! : concatFloat32(arrays);
}

/** Caches [heads, count_b, width] packed as [B, heads, S, width], each session's rows first, zeros after. */
function padRows(arrays: Float32Array[], counts: number[], heads: number, S: number, width: number): Float32Array {
  const out = new Float32Array(arrays.length * heads * S * width);
  arrays.forEach((a, b) => {
    const n = counts[b]! * width;
    for (let h = 0; h < heads; h++) out.set(a.subarray(h * n, (h + 1) * n), (b * heads + h) * S * width);
  });
  return out;
}

/**
 * A producer's cache after a run: the session's stored entries [heads, n, width] followed by its T new ones
 * (session k of the graph's [B, heads, T, width] output), keeping what state.ts kvEntries keeps: all of them in
 * global layers; in sliding ones the meta entries (always the first ones) and the last W keys.
 */
function appendEntries(
  d: HymbaDims,
  layer: number,
  position: number,
  past: Float32Array,
  fresh: Float32Array,
  k: number,
  T: number,
  width: number,
): Float32Array {
  const heads = d.kvHeads;
  const n = kvEntries(d, layer, position);
  const kept = kvEntries(d, layer, position + T);
  const meta = Math.min(position + T, d.M);
  // entry j of [past ; fresh] for j in [0, meta) and [n + T - (kept - meta), n + T)
  const ranges: [number, number][] = [
    [0, meta],
    [n + T - (kept - meta), n + T],
  ];
  const out = new Float32Array(heads * kept * width);
  let o = 0;
  const copy = (src: Float32Array, from: number, to: number): void => {
    if (to <= from) return;
    out.set(src.subarray(from * width, to * width), o);
    o += (to - from) * width;
  };
  for (let h = 0; h < heads; h++)
    for (const [a, b] of ranges) {
      const split = Math.max(a, Math.min(b, n)); // [a, split) stored, [split, b) new
      copy(past, h * n + a, h * n + split);
      copy(fresh, (k * heads + h) * T + split - n, (k * heads + h) * T + b - n);
    }
  return out;
}
