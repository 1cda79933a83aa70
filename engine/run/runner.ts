// Runs token ids through a model's stage graphs (one StageRunner each), continuing from and updating a HymbaState.
// Long inputs are split into runs of at most maxRunTokens; a forward either completes or leaves the state as it was.
// Several sessions at one token each can be decoded together in one run per stage (forwardBatch).
// The stages run in the order of engine/stages/steps.ts (slices of one block side by side, outputs combined).
//
// The state is the whole model's: one entry per layer, held by the stage with that layer's mixer. Stages that
// mirror a producer (kvIn) keep no state of their own here: in one process a mirror always equals the
// producer's cache, so each run hands the mirroring stage the producer's entry as it was before the chunk
// (plus, with its input, the new entries the producer's stage just returned), and drops what it appends.

import { runChunks } from './run-chunks.js';
import { concatFloat32 } from './arrays.js';
import type { HymbaDims, ModelConfig } from '../model/config.js';
import { mixerLayers, type StageSpec } from '../stages/stage-spec.js';
import type { LoadedGraph } from './ort.js';
import { StageRunner } from './stage-runner.js';
import { emptyState, mirrorOf, type HymbaState, type LayerState } from '../state/state.js';
import { pipelineSteps, runSteps, runStepsBatch, type Step } from '../stages/steps.js';
import type { TokenStepper } from '../generate/generate.js';

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

/** Text ids may only follow the meta tokens, and each must be in [0, V) (ids >= V name meta tokens). */
export function checkTextIds(dims: HymbaDims, position: number, ids: readonly number[]): void {
  const { V, M } = dims;
  if (position < M) throw new InputError('the state has not processed the meta tokens yet');
  for (const id of ids)
    if (!Number.isInteger(id) || id < 0 || id >= V) throw new InputError(`token id ${id} is outside [0, ${V})`);
}

export class HymbaRunner {
  /** one per stage, in layer order; ORT runs go one at a time through StageRunner's queue */
  readonly stageRunners: StageRunner[];
  /** the execution order of the stages */
  readonly steps: Step[];

  constructor(
    readonly model: ModelConfig,
    readonly stages: Stage[],
    readonly maxRunTokens: number,
  ) {
    this.stageRunners = stages.map((s) => new StageRunner(model, s, maxRunTokens));
    this.steps = pipelineSteps(
      stages.map((s) => s.spec),
      model.dims,
    );
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
    const before = work.map((w) => w.layers.slice());
    const logits = await runStepsBatch(this.specs(), this.steps, this.model.dims.V, ids, async (k, inputs) => {
      // each stage advances its own layers and a position of its own; the sessions' positions move once, below
      const views = work.map((w, b) => this.view(k, w.position, w.layers, before[b]!));
      const outs = await this.stageRunners[k]!.runBatch(views.map((state, b) => ({ state, input: inputs[b]! })));
      views.forEach((v, b) => this.commit(k, v, work[b]!.layers));
      return outs;
    });
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
    checkTextIds(this.model.dims, state.position, ids);
  }

  private async forwardRaw(state: HymbaState, ids: number[], want: LogitsWanted): Promise<ForwardResult> {
    const { V } = this.model.dims;
    // work on a shallow copy: arrays are replaced, never mutated, so a failure leaves `state` untouched
    const work: HymbaState = { position: state.position, layers: state.layers.slice() };
    const rows: Float32Array[] = [];
    for (const chunk of runChunks(ids, this.maxRunTokens, want)) {
      // a long prompt gives the event loop a turn between runs (others share this isolate's sessions)
      if (chunk.start > 0) await new Promise((resolve) => setTimeout(resolve, 0));
      const logits = await this.runChunk(work, chunk.ids, chunk.from);
      if (chunk.keep) rows.push(logits);
    }
    state.position = work.position;
    state.layers = work.layers;
    const logits = concatFloat32(rows);
    return { logits, rows: logits.length / V };
  }

  /** One run through every step, each passing its (combined) output to the next. */
  private async runChunk(state: HymbaState, ids: number[], logitsFrom: number): Promise<Float32Array> {
    const before = state.layers.slice();
    const logits = await runSteps(
      this.specs(),
      this.steps,
      this.model.dims.V,
      { ids },
      logitsFrom,
      async (k, input, from) => {
        // every stage starts at the chunk's position; its layers go back into the shared layers array
        const view = this.view(k, state.position, state.layers, before);
        const out = await this.stageRunners[k]!.run(view, input, from);
        this.commit(k, view, state.layers);
        return out;
      },
    );
    state.position += ids.length;
    return logits;
  }

  private specs(): StageSpec[] {
    return this.stages.map((s) => s.spec);
  }

  /**
   * Stage k's state for one run: the current entries of the layers whose mixer it holds, and mirror entries
   * of the producers it mirrors as they were before the chunk (`before`), which its input's new entries extend.
   */
  private view(
    k: number,
    position: number,
    layers: (LayerState | undefined)[],
    before: (LayerState | undefined)[],
  ): HymbaState {
    const { spec } = this.stages[k]!;
    const own: (LayerState | undefined)[] = new Array(this.model.dims.L);
    for (const i of mixerLayers(spec)) own[i] = layers[i];
    for (const p of spec.kvIn ?? []) {
      const l = before[p];
      if (!l) throw new Error(`state has no layer ${p}`);
      own[p] = mirrorOf(l);
    }
    return { position, layers: own };
  }

  /** Stage k's layers after its run back into the whole-model layers (its mirror copies are dropped). */
  private commit(k: number, view: HymbaState, layers: (LayerState | undefined)[]): void {
    for (const i of mixerLayers(this.stages[k]!.spec)) layers[i] = view.layers[i];
  }
}
