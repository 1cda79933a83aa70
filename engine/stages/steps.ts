// The execution order of a model's stages: which run one after another, which run in parallel on the same
// input (the slices of one block), and how their outputs combine. Pure: running a stage is the caller's
// (`call`: a local StageRunner, or a Durable Object over RPC).
//
// A model is the sequence embedding, units 0 .. 2L-1 (unit 2i: layer i's mixer block, 2i+1: its MLP block),
// head. A whole stage covers a consecutive run of it; a slice stage one share of one block (an MLP, the
// embedding, the head), and its sibling slices follow it directly.

import type { HymbaDims } from '../model/config.js';
import { checkStage, sliceRange, stageUnits, type StageSpec } from './stage-spec.js';
import type { KvEntries, StageInput, StageOutput } from '../run/stage-runner.js';

export interface Step {
  /** stage indices; more than one: slices of one block, run in parallel on the same input */
  stages: number[];
  /**
   * chain: the one stage's output is the next input; residual-sum: x + the sum of the MLP slices' partials;
   * sum: the embedding slices' rows summed; concat: the head slices' logits side by side along V
   */
  combine: 'chain' | 'residual-sum' | 'sum' | 'concat';
}

/** The block a slice stage belongs to, as a key (its siblings share it). */
const blockOf = (s: StageSpec): string | null =>
  s.slice ? (s.slice.kind === 'mlp' ? `mlp:${s.slice.layer}` : s.slice.kind) : null;

/**
 * The positions [a, b) a step covers in the sequence embedding (0), unit u (u + 1), head (2L + 1), with L
 * taken as the layer count; checked for gaps and overlaps by the caller.
 */
function span(s: StageSpec, L: number): [number, number] {
  if (s.slice) {
    if (s.slice.kind === 'embed') return [0, 1];
    if (s.slice.kind === 'head') return [2 * L + 1, 2 * L + 2];
    return [2 * s.slice.layer + 2, 2 * s.slice.layer + 3];
  }
  const { from, to } = stageUnits(s);
  return [s.embed ? 0 : from + 1, s.head ? 2 * L + 2 : to + 1];
}

/**
 * The execution order of a stage list: consecutive slice stages of the same block form one parallel step.
 * Checks that the list covers the embedding, every unit and the head exactly once, in order; that slices
 * are complete (parts 0 .. n-1 of one n, each once); and that every mirrored producer (kvIn) is returned
 * (kvOut) by the stage holding its mixer. With `dims`, also each stage's own rules (checkStage: e.g. a
 * consumer whose producer is neither in its stage nor mirrored).
 */
export function pipelineSteps(specs: StageSpec[], dims?: HymbaDims): Step[] {
  if (specs.length === 0) throw new Error('no stages');
  if (dims) for (const s of specs) checkStage(dims, s);
  const L = dims?.L ?? Math.max(...specs.map((s) => (s.slice?.kind === 'mlp' ? s.slice.layer + 1 : s.last)));
  const steps: Step[] = [];
  for (let k = 0; k < specs.length;) {
    const block = blockOf(specs[k]!);
    if (block === null) {
      steps.push({ stages: [k++], combine: 'chain' });
      continue;
    }
    const group: number[] = [];
    while (k < specs.length && blockOf(specs[k]!) === block) group.push(k++);
    const parts = specs[group[0]!]!.slice!.parts;
    const seen = new Set(group.map((g) => specs[g]!.slice!.part));
    if (group.some((g) => specs[g]!.slice!.parts !== parts) || seen.size !== group.length || group.length !== parts)
      throw new Error(
        `the ${block} slices (stages ${group.join(', ')}) are not parts 0..${parts - 1} of ${parts}, each once`,
      );
    const kind = specs[group[0]!]!.slice!.kind;
    steps.push({ stages: group, combine: kind === 'mlp' ? 'residual-sum' : kind === 'embed' ? 'sum' : 'concat' });
  }
  let covered = 0;
  for (const step of steps) {
    const [a, b] = span(specs[step.stages[0]!]!, L);
    if (a !== covered)
      throw new Error(
        a > covered
          ? `stage ${step.stages[0]} leaves a gap before it`
          : `stage ${step.stages[0]} overlaps an earlier one`,
      );
    covered = b;
  }
  if (covered !== 2 * L + 2) throw new Error('the stages do not reach the head');
  // mirrors: the producer's stage must return the entries, and run before the mirroring stage
  specs.forEach((s, k) =>
    (s.kvIn ?? []).forEach((p) => {
      const owner = specs.findIndex((o) => !o.slice && stageUnits(o).from <= 2 * p && 2 * p < stageUnits(o).to);
      if (owner < 0 || owner >= k || !(specs[owner]!.kvOut ?? []).includes(p))
        throw new Error(`stage ${k} mirrors producer ${p}, but no earlier stage returns its K/V (kvOut)`);
    }),
  );
  return steps;
}

/** Several sessions' inputs through all steps; `call` runs stage k for all of them. */
async function runItems(
  specs: StageSpec[],
  steps: Step[],
  V: number,
  inputs: StageInput[],
  logitsFrom: number,
  call: (k: number, inputs: StageInput[], logitsFrom: number) => Promise<StageOutput[]>,
): Promise<Float32Array[]> {
  let current = inputs;
  const kv: Record<number, KvEntries>[] = inputs.map(() => ({}));
  let logits: Float32Array[] | null = null;
  for (const step of steps) {
    const inputFor = (k: number): StageInput[] => {
      const mirrored = specs[k]!.kvIn ?? [];
      if (mirrored.length === 0) return current;
      return current.map((inp, b) => ({ ...inp, kv: Object.fromEntries(mirrored.map((p) => [p, kv[b]![p]!])) }));
    };
    const outs = await Promise.all(step.stages.map((k) => call(k, inputFor(k), logitsFrom)));
    for (const stageOuts of outs) stageOuts.forEach((o, b) => Object.assign(kv[b]!, o.kv ?? {}));
    const perItem = (b: number): StageOutput[] => outs.map((o) => o[b]!);
    switch (step.combine) {
      case 'chain': {
        const o = outs[0]!;
        if (specs[step.stages[0]!]!.head) logits = o.map((x) => x.logits!);
        else current = o.map((x) => ({ hidden: x.hidden! }));
        break;
      }
      case 'sum':
        current = current.map((_, b) => ({ hidden: sum(perItem(b).map((o) => o.hidden!)) }));
        break;
      case 'residual-sum':
        current = current.map((inp, b) => {
          if (!('hidden' in inp)) throw new Error('an MLP slice takes hidden rows');
          return { hidden: addInto(sum(perItem(b).map((o) => o.hidden!)), inp.hidden) };
        });
        break;
      case 'concat':
        logits = current.map((_, b) =>
          concatVocab(
            V,
            perItem(b),
            step.stages.map((k) => {
              const s = specs[k]!.slice!;
              return sliceRange(V, s.part, s.parts);
            }),
          ),
        );
        break;
    }
  }
  if (!logits) throw new Error('no stage returned logits');
  return logits;
}

/**
 * One chunk of one session through all steps. `call(k, input)` runs stage k (locally, or over RPC with
 * ordering: the caller's business). New K/V entries returned by kvOut stages go to the kvIn stages that
 * mirror them; parallel outputs are combined. Returns the logits rows [rows, V] (rows from logitsFrom on).
 */
export async function runSteps(
  specs: StageSpec[],
  steps: Step[],
  V: number,
  input: { ids: number[] },
  logitsFrom: number,
  call: (k: number, input: StageInput, logitsFrom: number) => Promise<StageOutput>,
): Promise<Float32Array> {
  const [logits] = await runItems(specs, steps, V, [input], logitsFrom, async (k, inputs, from) => [
    await call(k, inputs[0]!, from),
  ]);
  return logits!;
}

/**
 * One token of each of several sessions through all steps (continuous batching): `call(k, inputs)` runs
 * stage k for every session at once (StageRunner.runBatch). Returns each session's logits row [V].
 */
export async function runStepsBatch(
  specs: StageSpec[],
  steps: Step[],
  V: number,
  ids: number[],
  call: (k: number, inputs: StageInput[]) => Promise<StageOutput[]>,
): Promise<Float32Array[]> {
  return runItems(
    specs,
    steps,
    V,
    ids.map((id) => ({ ids: [id] })),
    0,
    (k, inputs) => call(k, inputs),
  );
}

/** Elementwise sum of equally long arrays, in order, into a new array. */
function sum(parts: Float32Array[]): Float32Array {
  const out = parts[0]!.slice();
  for (let j = 1; j < parts.length; j++) addInto(out, parts[j]!);
  return out;
}

/** acc += x; returns acc. */
function addInto(acc: Float32Array, x: Float32Array): Float32Array {
  if (acc.length !== x.length) throw new Error(`cannot add ${x.length} floats to ${acc.length}`);
  for (let i = 0; i < acc.length; i++) acc[i] = acc[i]! + x[i]!;
  return acc;
}

/** The head slices' logits [rows, V_k] side by side: [rows, V]. */
function concatVocab(V: number, outs: StageOutput[], ranges: [number, number][]): Float32Array {
  const rows = outs[0]!.rows;
  const out = new Float32Array(rows * V);
  outs.forEach((o, j) => {
    const [lo, hi] = ranges[j]!;
    const w = hi - lo;
    if (o.logits!.length !== rows * w)
      throw new Error(`head slice ${j} returned ${o.logits!.length} logits, not ${rows} x ${w}`);
    for (let r = 0; r < rows; r++) out.set(o.logits!.subarray(r * w, (r + 1) * w), r * V + lo);
  });
  return out;
}
