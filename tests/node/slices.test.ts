// Stages that hold part of a layer (sublayer units), one share of a block (MLP, embedding and head slices,
// run side by side) and mirrors of another stage's K/V cache compute exactly what the unsliced model does.

import { concatFloat32 } from '../../engine/run/arrays.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StageOption } from '../../engine/convert/convert.js';
import type { StageSpec } from '../../engine/stages/stage-spec.js';
import { referenceForward } from '../../engine/model/reference.js';
import { StageRunner } from '../../engine/run/stage-runner.js';
import { cloneState, kvLayer, type HymbaState } from '../../engine/state/state.js';
import { deserializeState, serializeState } from '../../engine/state/codec.js';
import { stageState } from '../../engine/state/merge.js';
import { pipelineSteps, runSteps } from '../../engine/stages/steps.js';
import {
  makeStagedModel,
  maxAbsDiff,
  maxDiff,
  TINY_SLICED_PLAN,
  tokenSequence,
  type StagedModel,
} from '../helpers/tiny-model.js';

// tiny: 8 layers, global [0, 4, 7], KV groups [1, 2, 3] and [5, 6], V = 32001, H = 64, M = 8, W = 16
const PLAN = TINY_SLICED_PLAN;
/** PLAN with layer 1's MLP as one unit stage instead of two slices */
const PLAN_NO_MLP_SLICES: StageOption[] = [...PLAN.slice(0, 3), { units: { from: 3, to: 4 } }, ...PLAN.slice(5)];
const TOKENS = 40;
const MAX_RUN = 16; // the sliced model's runs; a 25-token prefill takes two

// int8 (and q4, which runs as int8) MLP slices quantise their share of the down_proj input per row on their
// own (MatMulIntegerToFloat with per-row activation scales), not with the whole row's scale, so they round the
// activations differently from the unsliced int8 model: int8 with MLP slices is compared with the reference at
// the unsliced int8 model's own error level; every other feature is exact in int8 too (PLAN_NO_MLP_SLICES).
describe.each([
  { dtype: 'f32' as const, plan: PLAN, exact: true },
  { dtype: 'int8' as const, plan: PLAN_NO_MLP_SLICES, exact: true },
  { dtype: 'int8' as const, plan: PLAN, exact: false },
])('a model in units, slices and mirrors ($dtype, $plan.length stages)', ({ dtype, plan, exact }) => {
  let whole: StagedModel;
  let sliced: StagedModel;
  let expected: Float32Array;
  const ids = (): number[] => tokenSequence(TOKENS, whole.model.dims.V, 5);

  beforeAll(async () => {
    [whole, sliced] = await Promise.all([
      makeStagedModel({ dtype, stages: [{ first: 0, last: 8 }] }),
      makeStagedModel({ dtype, stages: plan, maxRunTokens: MAX_RUN }),
    ]);
    expected = (await whole.runner.forward(cloneState(whole.prefix), ids(), 'all')).logits;
  });
  afterAll(async () => {
    await whole?.cleanup();
    await sliced?.cleanup();
  });

  /** sliced vs unsliced within 1e-4 where exact; else no further from the reference than the unsliced model + 25% */
  function check(got: Float32Array): void {
    const ref = referenceForward(sliced.model, sliced.weights, ids());
    const V = sliced.model.dims.V;
    const [toWhole, toRef, wholeToRef] = [
      maxDiff(got, expected),
      maxAbsDiff(got, ref, V),
      maxAbsDiff(expected, ref, V),
    ];
    console.log(
      `${dtype} ${plan.length} stages: vs unsliced ${toWhole.toExponential(2)}, vs reference ${toRef.toExponential(2)} (unsliced ${wholeToRef.toExponential(2)})`,
    );
    if (exact) expect(toWhole).toBeLessThanOrEqual(1e-4);
    if (dtype === 'f32') expect(toRef).toBeLessThanOrEqual(1e-3);
    else expect(toRef).toBeLessThanOrEqual(1.25 * wholeToRef);
  }

  it('converts the plan into its stages and steps, with only the tensors each needs', () => {
    if (plan !== PLAN) return;
    expect(sliced.manifest.maxRunTokens).toBe(MAX_RUN);
    expect(sliced.manifest.stages.map((s) => s.slice?.kind ?? 'whole')).toEqual([
      'embed',
      'embed',
      'whole',
      'mlp',
      'mlp',
      'whole',
      'whole',
      'head',
      'head',
      'head',
    ]);
    expect(sliced.runner.steps.map((s) => s.combine)).toEqual([
      'sum',
      'chain',
      'residual-sum',
      'chain',
      'chain',
      'concat',
    ]);
    const bytes = sliced.manifest.stages.map((s) => s.weightBytes);
    const table = whole.model.dims.V * whole.model.dims.H * (dtype === 'f32' ? 4 : 1);
    // each embedding / head slice holds its share of the table, not all of it
    for (const k of [0, 1]) expect(bytes[k]!).toBeLessThan(0.6 * table + 100_000);
    for (const k of [7, 8, 9]) expect(bytes[k]!).toBeLessThan(0.4 * table + 100_000);
    expect(sliced.manifest.fingerprint).not.toBe(whole.manifest.fingerprint);
  });

  it('gives the unsliced logits: chunked prefill, a second turn, decode steps', async () => {
    const all = ids();
    const state = cloneState(sliced.prefix);
    const rows = [
      (await sliced.runner.forward(state, all.slice(0, 25), 'all')).logits,
      (await sliced.runner.forward(state, all.slice(25, 33), 'all')).logits,
    ];
    for (let t = 33; t < TOKENS; t++) rows.push((await sliced.runner.forward(state, [all[t]!], 'all')).logits);
    check(concatFloat32(rows));
  });

  it('runs stage by stage with per-stage states (mirrors included), resumed through snapshots', async () => {
    const { dims } = sliced.model;
    const specs = sliced.runner.stages.map((s) => s.spec);
    const runners = sliced.runner.stages.map((s) => new StageRunner(sliced.model, s, MAX_RUN));
    let states: HymbaState[] = specs.map((spec) => stageState(dims, spec, sliced.prefix));
    const owner = specs.findIndex((s) => s.kvOut?.length);
    const mirror = specs.findIndex((s) => s.kvIn?.length);
    expect(states[mirror]!.layers[1]!.kind).toBe('mirror'); // the mirror entry of producer 1
    const fp = sliced.manifest.fingerprint;
    const persist = (): void => {
      states = states.map((s) => deserializeState(dims, serializeState(dims, s, fp), fp));
    };
    const chunk = (tokens: number[]): Promise<Float32Array> =>
      runSteps(specs, sliced.runner.steps, dims.V, { ids: tokens }, 0, (k, input, from) =>
        runners[k]!.run(states[k]!, input, from),
      );
    const all = ids();
    const rows = [await chunk(all.slice(0, 16)), await chunk(all.slice(16, 29))];
    persist();
    for (let t = 29; t < TOKENS; t++) {
      rows.push(await chunk([all[t]!]));
      if (t === 34) persist();
    }
    check(concatFloat32(rows));
    // the mirror holds exactly the producer's cache
    const [copy, own] = [kvLayer(states[mirror]!, 1), kvLayer(states[owner]!, 1)];
    expect(own.kind).toBe('producer');
    expect(maxDiff(copy.key, own.key)).toBe(0);
    expect(maxDiff(copy.value, own.value)).toBe(0);
    expect(copy.kvLen).toBe(own.kvLen);
  });

  /** The largest difference between forwardBatch and forward alone over 3 steps of 3 sessions. */
  async function batchedVsAlone(t: StagedModel): Promise<number> {
    const { V } = t.model.dims;
    const states = [3, 12, 20].map(() => cloneState(t.prefix));
    for (const [k, s] of states.entries()) await t.runner.forward(s, tokenSequence([3, 12, 20][k]!, V, 40 + k), 'last');
    const alone = states.map(cloneState);
    let diff = 0;
    for (let step = 0; step < 3; step++) {
      const next = states.map((_, k) => 5 + 7 * k + step);
      const batched = await t.runner.forwardBatch(states, next);
      for (const [k, s] of alone.entries())
        diff = Math.max(diff, maxDiff(batched[k]!, (await t.runner.forward(s, [next[k]!], 'last')).logits));
    }
    return diff;
  }

  it('decodes a batch as each session alone', async () => {
    const diff = await batchedVsAlone(sliced);
    // int8: float noise of ~1e-6 between a batched and a lone run can flip one activation's int8 rounding
    // (seen here in the unsliced int8 model too: 0.24 in the third step); sliced must do no worse
    const bound = dtype === 'f32' ? 1e-4 : (await batchedVsAlone(whole)) + 1e-4;
    expect(diff).toBeLessThanOrEqual(bound);
  });
});

describe('pipelineSteps', () => {
  let dims: StagedModel['model']['dims'];
  let specs: StageSpec[];
  beforeAll(async () => {
    const { loadConfig } = await import('../../engine/model/config.js');
    const { presetConfig, pyJson } = await import('../../infra/test-model/presets.js');
    dims = loadConfig(JSON.parse(pyJson(presetConfig('tiny')))).dims;
    const { stageSpecs } = await import('../../engine/convert/convert.js');
    specs = stageSpecs(dims, PLAN);
  });
  const whole = (first: number, last: number, embed: boolean, head: boolean): StageSpec => ({
    first,
    last,
    embed,
    head,
  });

  it('orders the plan into steps', () => {
    expect(pipelineSteps(specs, dims).map((s) => s.stages)).toEqual([[0, 1], [2], [3, 4], [5], [6], [7, 8, 9]]);
    expect(pipelineSteps([whole(0, 8, true, true)], dims)).toEqual([{ stages: [0], combine: 'chain' }]);
  });

  it('rejects gaps, overlaps, incomplete slices and unmirrored consumers', () => {
    expect(() => pipelineSteps([whole(0, 4, true, false), whole(5, 8, false, true)], dims)).toThrow(/gap/);
    expect(() => pipelineSteps([whole(0, 4, true, false), whole(4, 7, false, false)], dims)).toThrow(/head/);
    expect(() => pipelineSteps([whole(0, 5, true, false), whole(4, 8, false, true)], dims)).toThrow(/overlap/);
    // one MLP slice missing
    expect(() =>
      pipelineSteps(
        specs.filter((_, k) => k !== 4),
        dims,
      ),
    ).toThrow(/slices/);
    // a duplicated head slice
    expect(() => pipelineSteps([...specs.slice(0, 9), specs[8]!], dims)).toThrow(/slices/);
    // the consumers of layer 1 with neither their producer nor a mirror of it
    const noMirror = specs.map((s, k) => (k === 5 ? { ...s, kvIn: [] } : s));
    expect(() => pipelineSteps(noMirror, dims)).toThrow(/producer 1/);
    // a mirror whose producer's stage does not return the entries
    const noKvOut = specs.map((s, k) => (k === 2 ? { ...s, kvOut: [] } : s));
    expect(() => pipelineSteps(noKvOut, dims)).toThrow(/kvOut/);
    // a layer-range split inside a KV group
    expect(() => pipelineSteps([whole(0, 2, true, false), whole(2, 8, false, true)], dims)).toThrow(/producer 1/);
  });
});
