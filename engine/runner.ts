// Runs token ids through a model's stage graphs, continuing from and updating a HymbaState.
// Long inputs are split into runs of at most maxRunTokens; a forward either completes or leaves the state as it was.

import type { ModelConfig } from './config.js';
import type { StageSpec } from './onnx/hymba-graph.js';
import { stateNames } from './onnx/hymba-graph.js';
import { float32, int64, type LoadedGraph, type OrtTensor } from './runtime/ort.js';
import { emptyState, type HymbaState, type LayerState } from './state.js';
import type { TokenStepper } from './generate.js';

export interface Stage {
  spec: StageSpec;
  graph: LoadedGraph;
}

/** Which logits a forward returns: every new position, only the last, or none. */
export type LogitsWanted = 'all' | 'last' | 'none';

export interface ForwardResult {
  /** row-major [rows, V] */
  logits: Float32Array;
  rows: number;
}

export class InputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InputError';
  }
}

export class HymbaRunner {
  /** ORT sessions are shared by every caller in an isolate; runs go one at a time, in arrival order */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    readonly model: ModelConfig,
    readonly stages: Stage[],
    readonly maxRunTokens: number,
  ) {}

  /** Feed text token ids (each in [0, V)) and advance `state`. */
  async forward(state: HymbaState, ids: number[], want: LogitsWanted = 'last'): Promise<ForwardResult> {
    const { V } = this.model.dims;
    if (ids.length === 0) throw new InputError('no tokens to process');
    if (state.position < this.model.dims.M) throw new InputError('the state has not processed the meta tokens yet');
    for (const id of ids)
      if (!Number.isInteger(id) || id < 0 || id >= V) throw new InputError(`token id ${id} is outside [0, ${V})`);
    return this.forwardRaw(state, ids, want);
  }

  /** The state after the M meta tokens: the same for every session, computed once per model. */
  async metaPrefix(): Promise<HymbaState> {
    const state = emptyState(this.model.dims);
    await this.feedMeta(state, this.model.dims.M);
    return state;
  }

  /** Feed the next `count` meta tokens (state.position + count <= M); meta token j has the id V + j. */
  async feedMeta(state: HymbaState, count: number): Promise<void> {
    const { V, M } = this.model.dims;
    if (count <= 0) return;
    if (state.position + count > M) throw new InputError(`only ${M - state.position} meta tokens remain`);
    await this.forwardRaw(
      state,
      Array.from({ length: count }, (_, j) => V + state.position + j),
      'none',
    );
  }

  /** A TokenStepper over one state, for the generation loop. */
  stepper(state: HymbaState): TokenStepper {
    return { feed: async (ids) => (await this.forward(state, ids, 'last')).logits };
  }

  private async forwardRaw(state: HymbaState, ids: number[], want: LogitsWanted): Promise<ForwardResult> {
    const { V } = this.model.dims;
    // work on a shallow copy: arrays are replaced, never mutated, so a failure leaves `state` untouched
    const work: HymbaState = { position: state.position, layers: state.layers.slice() };
    const rows: Float32Array[] = [];
    for (let start = 0; start < ids.length; start += this.maxRunTokens) {
      // a long prompt gives the event loop a turn between runs (others share this isolate's sessions)
      if (start > 0) await new Promise((resolve) => setTimeout(resolve, 0));
      const chunk = ids.slice(start, start + this.maxRunTokens);
      const isLast = start + this.maxRunTokens >= ids.length;
      const from = want === 'all' ? 0 : chunk.length - 1; // 'none' still computes one cheap row
      const logits = await this.runChunk(work, chunk, from);
      if (want === 'all' || (want === 'last' && isLast)) rows.push(logits);
    }
    state.position = work.position;
    state.layers = work.layers;
    const total = rows.reduce((n, r) => n + r.length, 0);
    const logits = new Float32Array(total);
    let o = 0;
    for (const r of rows) {
      logits.set(r, o);
      o += r.length;
    }
    return { logits, rows: total / V };
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => undefined);
    return run;
  }

  private async runChunk(state: HymbaState, ids: number[], logitsFrom: number): Promise<Float32Array> {
    const d = this.model.dims;
    let hidden: OrtTensor | null = null;
    let logits: Float32Array = new Float32Array(0);
    for (const { spec, graph } of this.stages) {
      const feeds: Record<string, OrtTensor> = { position: int64([state.position], []) };
      if (spec.embed) feeds.input_ids = int64(ids);
      else feeds.hidden_in = hidden!;
      if (spec.head) feeds.logits_from = int64([logitsFrom], []);
      for (let i = spec.first; i < spec.last; i++) {
        const l = layerOf(state, i);
        const n = stateNames(i);
        feeds[n.conv] = float32(l.conv, [d.dConv - 1, d.dIn]);
        feeds[n.ssm] = float32(l.ssm, [d.dIn, d.dState]);
        if (l.key && l.value) {
          feeds[n.key] = float32(l.key, [d.kvHeads, l.kvLen, d.dqk]);
          feeds[n.value] = float32(l.value, [d.kvHeads, l.kvLen, d.dv]);
        }
      }
      const out = await this.exclusive(() => graph.session.run(feeds));
      for (let i = spec.first; i < spec.last; i++) state.layers[i] = layerFromOutputs(out, i, layerOf(state, i));
      if (spec.head) logits = out.logits!.data as Float32Array;
      else hidden = out.hidden_out!;
    }
    state.position += ids.length;
    return logits;
  }
}

function layerOf(state: HymbaState, i: number): LayerState {
  const l = state.layers[i];
  if (!l) throw new Error(`state has no layer ${i}`);
  return l;
}

function layerFromOutputs(out: Record<string, OrtTensor>, i: number, prev: LayerState): LayerState {
  const n = stateNames(i);
  const data = (name: string): Float32Array => {
    const t = out[`${name}_out`];
    if (!t) throw new Error(`graph output ${name}_out is missing`);
    return t.data as Float32Array;
  };
  if (!prev.key) return { conv: data(n.conv), ssm: data(n.ssm), key: null, value: null, kvLen: 0 };
  return {
    conv: data(n.conv),
    ssm: data(n.ssm),
    key: data(n.key),
    value: data(n.value),
    kvLen: out[`${n.key}_out`]!.dims[1]!,
  };
}
