// Runs token ids through a model's stage graphs (one StageRunner each), continuing from and updating a HymbaState.
// Long inputs are split into runs of at most maxRunTokens; a forward either completes or leaves the state as it was.
// Several sessions at one token each can be decoded together in one run per stage (forwardBatch).

import type { ModelConfig } from './config.js';
import type { StageSpec } from './onnx/hymba-graph.js';
import type { LoadedGraph } from './runtime/ort.js';
import { StageRunner, type StageInput } from './stage-runner.js';
import { emptyState, type HymbaState } from './state.js';
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
  /** one per stage, in layer order; ORT runs go one at a time through StageRunner's queue */
  readonly stageRunners: StageRunner[];

  constructor(
    readonly model: ModelConfig,
    readonly stages: Stage[],
    readonly maxRunTokens: number,
  ) {
    this.stageRunners = stages.map((s) => new StageRunner(model, s, maxRunTokens));
  }

  /** Feed text token ids (each in [0, V)) and advance `state`. */
  async forward(state: HymbaState, ids: number[], want: LogitsWanted = 'last'): Promise<ForwardResult> {
    if (ids.length === 0) throw new InputError('no tokens to process');
    this.checkText(state, ids);
    return this.forwardRaw(state, ids, want);
  }

  /**
   * Continuous batching: one text token for each session, all decoded in one run per stage. Returns each
   * session's logits row [V]; equal (to float tolerance) to forward(states[k], [ids[k]]) one by one. Either
   * every state advances or none does.
   */
  async forwardBatch(states: HymbaState[], ids: number[]): Promise<Float32Array[]> {
    if (states.length !== ids.length) throw new InputError(`${states.length} states but ${ids.length} tokens`);
    if (states.length === 0) return [];
    if (new Set(states).size !== states.length) throw new InputError('a state appears twice in one batch');
    states.forEach((s, k) => this.checkText(s, [ids[k]!]));
    const work = states.map((s) => ({ position: s.position, layers: s.layers.slice() }));
    let inputs: StageInput[] = ids.map((id) => ({ ids: [id] }));
    let logits: Float32Array[] = [];
    for (const runner of this.stageRunners) {
      // each stage advances its own layers and a position of its own; the sessions' positions move once, below
      const views = work.map((w) => ({ position: w.position, layers: w.layers }));
      const outs = await runner.runBatch(views.map((state, k) => ({ state, input: inputs[k]! })));
      if (runner.stage.spec.head)
        logits = outs.map((o) => o.logits!); // one row [V] each
      else inputs = outs.map((o) => ({ hidden: o.hidden! }));
    }
    states.forEach((s, k) => {
      s.layers = work[k]!.layers;
      s.position = work[k]!.position + 1;
    });
    return logits;
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

  private checkText(state: HymbaState, ids: number[]): void {
    const { V, M } = this.model.dims;
    if (state.position < M) throw new InputError('the state has not processed the meta tokens yet');
    for (const id of ids)
      if (!Number.isInteger(id) || id < 0 || id >= V) throw new InputError(`token id ${id} is outside [0, ${V})`);
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

  /** One run through every stage, each passing its hidden rows to the next. */
  private async runChunk(state: HymbaState, ids: number[], logitsFrom: number): Promise<Float32Array> {
    let input: StageInput = { ids };
    let logits: Float32Array = new Float32Array(0);
    for (const runner of this.stageRunners) {
      // every stage starts at the chunk's position; the shared layers array collects each stage's layers
      const view: HymbaState = { position: state.position, layers: state.layers };
      const out = await runner.run(view, input, logitsFrom);
      if (runner.stage.spec.head) logits = out.logits!;
      else input = { hidden: out.hidden! };
    }
    state.position += ids.length;
    return logits;
  }
}
