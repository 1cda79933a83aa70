// The stage planner: byte accounting against the converter, KV groups kept whole, sub-layer units (mixer and
// MLP blocks, slices, K/V mirrors) when whole layers cannot fit, budgets, run tokens, over-budget units,
// state and sessions-that-fit arithmetic, and the manifest's optional plan record.

import { concatFloat32 } from '../../engine/run/arrays.js';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type HymbaDims, type ModelConfig } from '../../engine/model/config.js';
import type { StageOption } from '../../engine/convert/convert.js';
import { parseManifest, type Manifest } from '../../engine/convert/manifest.js';
import { HymbaEngine } from '../../engine/run/loaded-model.js';
import { emitGraph } from '../../engine/onnx/emit.js';
import { buildStageGraph } from '../../engine/stages/stage-graph.js';
import { checkStage, sliceRange, type StageSpec } from '../../engine/stages/stage-spec.js';
import {
  embedWeightBytes,
  headWeightBytes,
  kvBytes,
  layerStateBytes,
  layerWeightBytes,
  MB,
  mixerWeightBytes,
  mlpWeightBytes,
  RUN_STATE_COPIES,
  stageContent,
  stageWeightBytes,
} from '../../engine/stages/memory.js';
import type { ModelPlan } from '../../engine/stages/estimate.js';
import { atomicUnits } from '../../engine/stages/packing.js';
import { stageLabel } from '../../engine/stages/report.js';
import { estimateStages, maxContextThatFits, planStages } from '../../engine/stages/plan.js';
import type { ModelDtype } from '../../engine/convert/quantize.js';
import { stateBytes } from '../../engine/state/bytes.js';
import { expectedTensors, type WeightMap } from '../../engine/model/weights.js';
import { convertDir, dirModelSource } from '../../infra/model-dir.js';
import { maxDiff, tokenSequence } from '../helpers/tiny-model.js';
import { makeTestModel } from '../../infra/test-model/make-test-model.js';
import { presetConfig, pyJson, type ConfigValue, type PresetName } from '../../infra/test-model/presets.js';

const DTYPES: ModelDtype[] = ['f32', 'f16', 'int8', 'q4'];

const model = (preset: PresetName, layers?: number, overrides: Record<string, ConfigValue> = {}): ModelConfig =>
  loadConfig(JSON.parse(pyJson({ ...presetConfig(preset, layers), ...overrides })));

/** Every stage is consecutive, covers the model, passes the converter's own KV check, and embeds/heads right. */
function expectWellFormed(d: HymbaDims, plan: ModelPlan): void {
  expect(plan.specs).toHaveLength(plan.stages.length);
  if (plan.granularity === 'units') return expectUnitsWellFormed(d, plan);
  expect(plan.stages[0]!.first).toBe(0);
  expect(plan.stages.at(-1)!.last).toBe(d.L);
  plan.stages.forEach((s, k) => {
    if (k > 0) expect(s.first).toBe(plan.stages[k - 1]!.last);
    expect(() => checkStage(d, s)).not.toThrow();
    expect(s.embed).toBe(k === 0);
    expect(s.head).toBe(k === plan.stages.length - 1);
    expect(s.step).toBe(k);
  });
}

/**
 * A sub-layer plan: the embedding, then every sublayer (mixer 2i, MLP 2i+1) exactly once and in order, then the
 * head; sibling slices complete (parts 0..n-1, adjacent, one step, their ranges partitioning the block); every
 * consumer's mixer either with its producer's or mirroring it (kvIn), and the producer's stage sending it (kvOut).
 */
function expectUnitsWellFormed(d: HymbaDims, plan: ModelPlan): void {
  const { stages } = plan;
  let next = 0; // the next sublayer to cover
  let [embedDone, headDone] = [false, false];
  const mixerStage = new Map<number, number>();
  let lastStep = -1;
  for (let k = 0; k < stages.length;) {
    const s = stages[k]!;
    expect(headDone).toBe(false);
    expect(s.step).toBe(lastStep + 1);
    lastStep = s.step;
    if (s.slice) {
      const { parts } = s.slice;
      const group = stages.slice(k, k + parts);
      expect(group).toHaveLength(parts);
      group.forEach((g, part) => {
        expect(g.slice).toEqual({ ...s.slice, part });
        expect(g.step).toBe(s.step);
        expect(g.units).toBeUndefined();
        expect(g.kvIn ?? []).toEqual([]);
      });
      const total = s.slice.kind === 'mlp' ? d.I : d.V;
      const ranges = group.map((_, part) => sliceRange(total, part, parts));
      expect(ranges[0]![0]).toBe(0);
      expect(ranges.at(-1)![1]).toBe(total);
      ranges.forEach(([lo, hi], j) => {
        expect(hi).toBeGreaterThan(lo);
        if (j > 0) expect(lo).toBe(ranges[j - 1]![1]);
      });
      // a slice stage holds nothing but its slice (checkStage)
      expect(group.every((g) => !g.embed && !g.head)).toBe(true);
      group.forEach((g) => expect(() => checkStage(d, g)).not.toThrow());
      if (s.slice.kind === 'embed') {
        expect([embedDone, next]).toEqual([false, 0]);
        expect([s.first, s.last]).toEqual([0, 0]);
        embedDone = true;
      } else if (s.slice.kind === 'head') {
        expect([embedDone, next]).toEqual([true, 2 * d.L]);
        expect([s.first, s.last]).toEqual([d.L, d.L]);
        headDone = true;
      } else {
        const { layer } = s.slice;
        expect(embedDone).toBe(true);
        expect(next).toBe(2 * layer + 1);
        expect(group.every((g) => g.first === layer && g.last === layer + 1)).toBe(true);
        next++;
      }
      k += parts;
      continue;
    }
    const { from, to } = s.units!;
    if (s.embed) {
      expect([embedDone, from]).toEqual([false, 0]);
      embedDone = true;
    }
    expect(embedDone).toBe(true);
    expect(from).toBe(next);
    expect(to).toBeGreaterThan(from);
    expect(() => checkStage(d, s)).not.toThrow();
    expect([s.first, s.last]).toEqual([Math.floor(from / 2), Math.ceil(to / 2)]);
    for (let u = from + (from % 2); u < to; u += 2) mixerStage.set(u / 2, k);
    next = to;
    if (s.head) {
      expect(to).toBe(2 * d.L);
      headDone = true;
    }
    k++;
  }
  expect([embedDone, next, headDone]).toEqual([true, 2 * d.L, true]);
  expect(plan.steps).toBe(lastStep + 1);
  expect(plan.hops).toBe(stages.length);
  for (let c = 0; c < d.L; c++) {
    const kv = d.layers[c]!.kv;
    if (kv.kind !== 'consumer') continue;
    const [sc, sp] = [mixerStage.get(c)!, mixerStage.get(kv.producer)!];
    if (sc === sp) expect(stages[sc]!.kvIn ?? []).not.toContain(kv.producer);
    else {
      expect(sp).toBeLessThan(sc);
      expect(stages[sc]!.kvIn).toContain(kv.producer);
      expect(stages[sp]!.kvOut).toContain(kv.producer);
    }
  }
  // nothing mirrored that is not needed, nothing sent that nobody mirrors
  stages.forEach((s, k) => {
    for (const p of s.kvIn ?? []) expect(mixerStage.get(p)).not.toBe(k);
    for (const p of s.kvOut ?? []) expect(stages.some((t) => t.kvIn?.includes(p))).toBe(true);
  });
}

describe('weight bytes match what the converter records', () => {
  let root: string;
  let hf: string;
  const tiny = model('tiny');
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'hymba-plan-'));
    hf = join(root, 'hf');
    await makeTestModel(hf, { preset: 'tiny', seed: 3, tokenizer: false });
  });
  afterAll(() => rm(root, { recursive: true, force: true }));

  async function manifestOf(dtype: ModelDtype, stages: StageOption[]): Promise<Manifest> {
    let text = '';
    await convertDir(hf, { dtype, stages }, async (name, bytes) => {
      if (name === 'hymba-manifest.json') text = new TextDecoder().decode(bytes);
    });
    return parseManifest(text);
  }

  it.each(DTYPES)('tiny at %s: embedding stage, middle stage, head stage', async (dtype) => {
    const m = await manifestOf(dtype, [
      { first: 0, last: 1 },
      { first: 1, last: 4 },
      { first: 4, last: 8 },
    ]);
    for (const s of m.stages) expect(stageWeightBytes(tiny.dims, s, dtype)).toBe(s.weightBytes);
  });

  it.each(['f16', 'int8'] as const)('tiny at %s in one stage: the tied table is stored once', async (dtype) => {
    const [s] = (await manifestOf(dtype, [{ first: 0, last: 8 }])).stages;
    expect(stageWeightBytes(tiny.dims, s!, dtype)).toBe(s!.weightBytes);
  });

  // tiny: 8 layers, global [0, 4, 7], KV groups [1, 2, 3] and [5, 6]
  const none = { embed: false, head: false };
  const SLICED: StageSpec[] = [
    { first: 0, last: 0, ...none, slice: { kind: 'embed', part: 0, parts: 2 } },
    { first: 0, last: 0, ...none, slice: { kind: 'embed', part: 1, parts: 2 } },
    { first: 0, last: 2, ...none, units: { from: 0, to: 3 }, kvOut: [1] },
    { first: 1, last: 2, ...none, slice: { kind: 'mlp', layer: 1, part: 0, parts: 3 } },
    { first: 1, last: 2, ...none, slice: { kind: 'mlp', layer: 1, part: 1, parts: 3 } },
    { first: 1, last: 2, ...none, slice: { kind: 'mlp', layer: 1, part: 2, parts: 3 } },
    { first: 2, last: 4, ...none, units: { from: 4, to: 8 }, kvIn: [1] },
    { first: 4, last: 5, ...none, units: { from: 8, to: 9 } },
    { first: 4, last: 8, ...none, units: { from: 9, to: 16 } },
    { first: 8, last: 8, ...none, slice: { kind: 'head', part: 0, parts: 2 } },
    { first: 8, last: 8, ...none, slice: { kind: 'head', part: 1, parts: 2 } },
  ];
  const UNITS: StageSpec[] = [
    { first: 0, last: 1, embed: true, head: false, units: { from: 0, to: 1 } },
    { first: 0, last: 2, ...none, units: { from: 1, to: 3 }, kvOut: [1] },
    { first: 1, last: 8, embed: false, head: true, units: { from: 3, to: 16 }, kvIn: [1] },
  ];

  it.each(DTYPES)('tiny at %s in sub-layer units, slices and mirrors', async (dtype) => {
    for (const plan of [SLICED, UNITS]) {
      const m = await manifestOf(dtype, plan);
      expect(m.stages).toHaveLength(plan.length);
      m.stages.forEach((s, k) => expect([k, stageWeightBytes(tiny.dims, plan[k]!, dtype)]).toEqual([k, s.weightBytes]));
    }
  });

  it('Hymba-1.5B-shaped layers (a producer and its consumer, with the head) in every dtype', () => {
    // the real layer shapes with a small vocabulary, so the test stays quick; bytes do not depend on values
    const { config, dims } = model('hymba-1.5b', 3, { vocab_size: 512 });
    const w: WeightMap = new Map();
    for (const [name, shape] of expectedTensors(dims))
      w.set(name, { dims: shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) });
    const spec: StageSpec = { first: 1, last: 3, embed: false, head: true };
    for (const dtype of DTYPES) {
      const emitted = emitGraph(buildStageGraph({ config, dims }, w, spec, { dtype }));
      const estimate = stageWeightBytes(dims, spec, dtype);
      expect(Math.abs(estimate - emitted.weightBytes) / emitted.weightBytes).toBeLessThan(0.01);
      expect(estimate).toBe(emitted.weightBytes);
    }
  }, 60_000);

  it('one full-size Hymba-1.5B layer matches the measured sizes in the docs', () => {
    const d = model('hymba-1.5b').dims;
    // docs/engine.md: one 1.5B layer 186.8 MB f32, 93.6 MB f16, 47.1 MB int8, 30.3 MB q4
    expect(layerWeightBytes(d, 1, 'f32') / MB).toBeCloseTo(186.8, 0);
    expect(layerWeightBytes(d, 1, 'f16') / MB).toBeCloseTo(93.6, 0);
    expect(layerWeightBytes(d, 1, 'int8') / MB).toBeCloseTo(47.1, 0);
    expect(layerWeightBytes(d, 1, 'q4') / MB).toBeCloseTo(30.3, 0);
  });

  it.each(DTYPES)(
    'sub-layer units at %s add up to whole layers; slices to their block plus what each repeats',
    (dtype) => {
      for (const d of [tiny.dims, model('hymba-1.5b').dims]) {
        const [H, I] = [d.H, d.I];
        for (const i of [0, 1, 2]) {
          expect(mixerWeightBytes(d, i, dtype) + mlpWeightBytes(d, I, dtype)).toBe(layerWeightBytes(d, i, dtype));
          const whole: StageSpec = { first: i, last: i + 1, embed: false, head: false };
          expect(stageWeightBytes(d, { ...whole, units: { from: 2 * i, to: 2 * i + 2 } }, dtype)).toBe(
            stageWeightBytes(d, whole, dtype),
          );
        }
        // the MLP in n slices: every slice repeats the pre-MLP norm and (quantised) down's per-row scales and
        // its int8 zero point; gate/up split by rows, so their scales do not repeat
        const mlpOnly: StageSpec = { first: 1, last: 2, embed: false, head: false, units: { from: 3, to: 4 } };
        const consts = dtype === 'int8' ? 1 : dtype === 'q4' ? 3 : 0;
        const rope = (d.dqk / 2) * 4; // every stage but a slice carries the RoPE table
        expect(stageWeightBytes(d, mlpOnly, dtype)).toBe(mlpWeightBytes(d, I, dtype) + rope + consts);
        for (const n of [2, 3, 7]) {
          const slices = Array.from({ length: n }, (_, part): StageSpec => ({
            first: 1,
            last: 2,
            embed: false,
            head: false,
            slice: { kind: 'mlp', layer: 1, part, parts: n },
          }));
          const sum = slices.reduce((a, sl) => a + stageWeightBytes(d, sl, dtype), 0);
          if (dtype === 'f32' || dtype === 'f16' || dtype === 'int8') {
            const downScales = dtype === 'int8' ? H * 4 : 0;
            expect(sum).toBe(mlpWeightBytes(d, I, dtype) + (n - 1) * (H * 4 + downScales) + n * consts);
          } else expect(sum).toBeGreaterThan(mlpWeightBytes(d, I, dtype));
          // embedding and head by vocabulary rows: the table splits exactly; meta tokens in slice 0, the final
          // norm (and the matmul's zero point) in every head slice
          const part = (kind: 'embed' | 'head', k: number): StageSpec => ({
            first: kind === 'embed' ? 0 : d.L,
            last: kind === 'embed' ? 0 : d.L,
            embed: false,
            head: false,
            slice: { kind, part: k, parts: n },
          });
          const embedSum = slices.reduce((a, _, k) => a + stageWeightBytes(d, part('embed', k), dtype), 0);
          const headSum = slices.reduce((a, _, k) => a + stageWeightBytes(d, part('head', k), dtype), 0);
          const q4Consts = dtype === 'q4' ? 2 : 0; // 15 and 4 for nibbles; a Gather needs no zero point
          if (dtype !== 'q4') {
            expect(embedSum).toBe(embedWeightBytes(d, dtype) + n * q4Consts);
            expect(headSum).toBe(headWeightBytes(d, dtype) + (n - 1) * H * 4 + n * consts);
          }
          expect(stageContent(d, part('embed', 0)).meta).toBe(d.M > 0);
          expect(stageContent(d, part('embed', 1)).meta).toBe(false);
        }
      }
    },
  );
});

describe('planStages', () => {
  const tiny = model('tiny').dims;
  const big = model('hymba-1.5b').dims;

  it('keeps KV reuse groups whole (and everything between their members)', () => {
    expect(atomicUnits(tiny)).toEqual([
      { first: 0, last: 1 },
      { first: 1, last: 4 },
      { first: 4, last: 5 },
      { first: 5, last: 7 },
      { first: 7, last: 8 },
    ]);
    const units = atomicUnits(big);
    expect(units).toHaveLength(17);
    expect(units).toContainEqual({ first: 16, last: 19 });
    for (const budgetMb of [60, 90, 120, 250, 400, 1000, 5000])
      for (const dtype of DTYPES) {
        expectWellFormed(tiny, planStages(tiny, { dtype, budgetMb }));
        expectWellFormed(big, planStages(big, { dtype, budgetMb }));
      }
  });

  it('puts every stage under the budget when each unit fits, in as few stages as greedy packing allows', () => {
    const one = planStages(tiny, { dtype: 'f32' });
    expect(one.fits).toBe(true);
    expect(one.stages).toHaveLength(1);
    expect(one.problems).toEqual([]);
    for (const budgetMb of [75, 80, 100]) {
      const plan = planStages(tiny, { dtype: 'f32', budgetMb });
      expect(plan.fits).toBe(true);
      for (const s of plan.stages) expect(s.estimatedBytes).toBeLessThanOrEqual(budgetMb * MB);
      // greedy: no two neighbouring stages could have been one
      for (let k = 1; k < plan.stages.length; k++) {
        const [a, b] = [plan.stages[k - 1]!, plan.stages[k]!];
        const merged = estimateStages(tiny, [{ first: a.first, last: b.last, embed: a.embed, head: b.head }], {
          dtype: 'f32',
          budgetMb,
        });
        expect(merged.stages[0]!.overBudget).toBe(true);
      }
    }
    expect(planStages(tiny, { dtype: 'f32', budgetMb: 75 }).stages.length).toBeGreaterThan(1);
    const roomy = planStages(big, { dtype: 'int8', budgetMb: 1500 });
    expect(roomy.fits).toBe(true);
    expect(roomy.stages.length).toBeLessThan(8);
  });

  it('with whole layers only, reports the units that cannot fit alone, still printing a plan', () => {
    const plan = planStages(big, { dtype: 'int8', budgetMb: 128, granularity: 'layers' });
    expect(plan.granularity).toBe('layers');
    expect(plan.fits).toBe(false);
    expect(plan.stages).toHaveLength(17); // one stage per unit, every one over budget
    expect(plan.stages.every((s) => s.overBudget)).toBe(true);
    const text = plan.problems.join('\n');
    expect(text).toMatch(/the embedding \(32001 x 1600 table \+ 128 meta tokens\) needs ~\d+ MB at int8/);
    expect(text).toMatch(
      /layers 0, 15, 31 need ~\d+ MB each at int8: over the 128 MB budget; each would need splitting/,
    );
    expect(text).toMatch(/layers 16-18 \(one KV group\) need ~\d+ MB at int8: over the 128 MB budget; it would need/);
    expect(plan.minBudgetMb).toBeGreaterThan(128);
    expect(planStages(big, { dtype: 'int8', budgetMb: plan.minBudgetMb, granularity: 'layers' }).fits).toBe(true);
    // a single layer that does not fit: the brief's sentence
    const cut = model('hymba-1.5b', 1).dims;
    const single = planStages(cut, {
      dtype: 'int8',
      budgetMb: 128,
      runTokens: 0,
      hotSessions: 0,
      granularity: 'layers',
    });
    expect(single.problems).toContainEqual(
      expect.stringMatching(
        /^layer 0 needs ~\d+ MB at int8: over the 128 MB budget; it would need splitting into layer slices$/,
      ),
    );
  });

  it('Hymba-1.5B int8 at 128 MB: sub-layer stages, 16-token runs, only the global mixers over at 8K', () => {
    const plan = planStages(big, { dtype: 'int8', budgetMb: 128 });
    expectWellFormed(big, plan);
    expect(plan).toMatchObject({ granularity: 'units', runTokens: 16, fits: false, steps: 66, hops: 68 });
    expect(plan.stages.filter((s) => s.overBudget).map((s) => s.units)).toEqual(
      [0, 15, 31].map((i) => ({ from: 2 * i, to: 2 * i + 1 })),
    );
    expect(plan.problems).toHaveLength(1);
    expect(plan.problems[0]).toMatch(
      /^the mixers of layers 0, 15, 31 need ~\d+ MB each at int8 \(of which \d+ MB session state at 8064 tokens\): over the 128 MB budget; mixer blocks are not sliced/,
    );
    expect(planStages(big, { dtype: 'int8', budgetMb: plan.minBudgetMb, runTokens: 16 }).fits).toBe(true);
    // the global layers' K/V is what does not fit: at 1K tokens of context every stage does
    const context = maxContextThatFits(big, { dtype: 'int8', budgetMb: 128 });
    expect(context).toBeGreaterThan(1024);
    expect(context).toBeLessThan(2048);
  });

  it('Hymba-1.5B int8 at 128 MB and 1K context: every stage under budget, units once and in order, mirrors', () => {
    const plan = planStages(big, { dtype: 'int8', budgetMb: 128, contextTokens: 1024 });
    expectWellFormed(big, plan);
    expect(plan).toMatchObject({ granularity: 'units', runTokens: 16, fits: true, problems: [] });
    for (const s of plan.stages) expect(s.estimatedBytes).toBeLessThanOrEqual(128 * MB);
    // embedding and head in two vocabulary slices each, then each mixer and each MLP alone
    expect(plan.stages.slice(0, 2).map(stageLabel)).toEqual(['embed 1/2', 'embed 2/2']);
    expect(plan.stages.slice(-2).map(stageLabel)).toEqual(['head 1/2', 'head 2/2']);
    expect(plan.stages.slice(2, 6).map(stageLabel)).toEqual(['0.mixer', '0.mlp', '1.mixer', '1.mlp']);
    expect([plan.stages.length, plan.steps, plan.hops]).toEqual([68, 66, 68]);
    // every consumer mirrors its producer: the mirror costs the producer's K/V in its state
    const c2 = plan.stages.find((s) => s.units?.from === 4)!;
    expect(c2.kvIn).toEqual([1]);
    expect(plan.stages.find((s) => s.units?.from === 2)!.kvOut).toEqual([1]);
    expect(c2.stateBytesPerSession).toBe(layerStateBytes(big, 2, 1024) + kvBytes(big, 1, 1024));
    expect(plan.stages.filter((s) => s.kvIn?.includes(16)).map((s) => s.units!.from / 2)).toEqual([17, 18]);
    // the stage specs convert takes
    expect(plan.specs.map((s) => s.units ?? s.slice)).toEqual(plan.stages.map((s) => s.units ?? s.slice));
    // runs of 32 tokens would not fit: the 128-token activation peak scaled linearly in T
    expect(planStages(big, { dtype: 'int8', budgetMb: 128, contextTokens: 1024, runTokens: 32 }).fits).toBe(false);
    expect(plan.activationBytes).toBeCloseTo(
      planStages(big, { dtype: 'int8', budgetMb: 128, runTokens: 128 }).activationBytes / 8,
      6,
    );
  });

  it('Hymba-1.5B f16 at 128 MB: no mixer fits (f16 keeps its folded fp32 copy), at any context', () => {
    const plan = planStages(big, { dtype: 'f16', budgetMb: 128 });
    expectWellFormed(big, plan);
    expect(plan.fits).toBe(false);
    expect(plan.stages.filter((s) => s.overBudget)).toHaveLength(32);
    expect(plan.stages.filter((s) => !s.overBudget).every((s) => s.slice !== undefined)).toBe(true);
    expect(plan.problems.join('\n')).toMatch(/the mixers of layers 1, 3, 5, .* need ~\d+ MB each at f16/);
    expect(maxContextThatFits(big, { dtype: 'f16', budgetMb: 128 })).toBe(0);
  });

  it('cuts tiny into embedding, MLP and head slices and mirrors K/V when whole layers do not fit', () => {
    const wide = model('tiny', undefined, { intermediate_size: 2048 }).dims;
    const plan = planStages(wide, { dtype: 'f32', budgetMb: 38, contextTokens: 1024 });
    expectWellFormed(wide, plan);
    expect(plan).toMatchObject({ granularity: 'units', fits: true, runTokens: 128 });
    for (const s of plan.stages) expect(s.estimatedBytes).toBeLessThanOrEqual(38 * MB);
    const kinds = new Set(plan.stages.map((s) => s.slice?.kind));
    expect([...kinds]).toEqual(expect.arrayContaining(['embed', 'mlp', 'head']));
    expect(plan.stages.some((s) => (s.kvIn ?? []).length > 0)).toBe(true);
    // each MLP alone is over budget, and its fewest slices are: one slice fewer would not fit
    const mlp = plan.stages.find((s) => s.slice?.kind === 'mlp')!;
    const n = mlp.slice!.parts;
    const fewer: StageSpec = { ...mlp, slice: { kind: 'mlp', layer: 0, part: 0, parts: n - 1 } };
    expect(estimateStages(wide, [fewer], { dtype: 'f32', budgetMb: 38, contextTokens: 1024 }).fits).toBe(false);
    // a plan of the same stages estimated again (as from a manifest) reads the same
    const again = estimateStages(wide, plan.specs, { dtype: 'f32', budgetMb: 38, contextTokens: 1024 });
    expect(again.stages.map((s) => s.estimatedBytes)).toEqual(plan.stages.map((s) => s.estimatedBytes));
    expect([again.steps, again.hops]).toEqual([plan.steps, plan.hops]);
  });

  it('takes the largest run length that fits, and the given one when set', () => {
    expect(planStages(tiny, { dtype: 'f32' }).runTokens).toBe(128);
    expect(planStages(tiny, { dtype: 'f32', runTokens: 32 }).runTokens).toBe(32);
    const c = { dtype: 'int8' as const, budgetMb: 128, contextTokens: 1024 };
    expect(planStages(big, c).runTokens).toBe(16);
    expect(planStages(big, { ...c, budgetMb: 150 }).runTokens).toBeGreaterThan(16);
  });

  it('names a stage whose parts fit alone but not together', () => {
    // tiny at a budget where the embedding and layer 0 each fit but not both: stage 0 must hold both
    const base = { dtype: 'f32' as const, baselineBytes: 0, factor: 1, runTokens: 0, hotSessions: 0 };
    const embed = estimateStages(tiny, [{ first: 0, last: 1, embed: true, head: false }], base).stages[0]!;
    const layer0 = estimateStages(tiny, [{ first: 0, last: 1, embed: false, head: false }], base).stages[0]!;
    const budgetMb = (embed.estimatedBytes - 1) / MB;
    expect(layer0.estimatedBytes).toBeLessThan(budgetMb * MB);
    const plan = planStages(tiny, { ...base, budgetMb, granularity: 'layers' });
    expect(plan.stages[0]!.overBudget).toBe(true);
    expect(plan.problems.join('\n')).toMatch(
      /stage 0 \(0 \+embed\) needs ~\d+ MB: over the .* budget; its parts fit alone/,
    );
  });

  it('sizes state as state.ts does (fp32 in memory) and counts the sessions that fit', () => {
    for (const tokens of [0, 10, 1024, 8000]) {
      let sum = 0;
      for (let i = 0; i < tiny.L; i++) sum += layerStateBytes(tiny, i, tokens);
      expect(sum).toBe(stateBytes(tiny, tokens, 'f32').total);
    }
    // tiny at 1024 tokens by hand: per layer conv 3 x 128 + SSM 128 x 16; K/V 2 heads x (16 + 32) per entry;
    // global producers 0, 4, 7 keep 8 + 1024 entries, sliding producers 1, 5 keep 8 + 16
    expect(stateBytes(tiny, 1024, 'f32').total).toBe(8 * (384 + 2048) * 4 + 3 * 1032 * 96 * 4 + 2 * 24 * 96 * 4);
    const plan = planStages(tiny, { dtype: 'f32', budgetMb: 100 });
    const s = plan.stages[0]!;
    // the room left after ORT, less the state copies a run at that context makes, in whole sessions
    for (const { context, sessions } of s.sessionsThatFit) {
      const per = stateBytes(tiny, context, 'f32').total;
      expect(sessions).toBe(Math.floor((100 * MB - s.ortBytes - RUN_STATE_COPIES * per) / per));
      expect(s.ortBytes + (RUN_STATE_COPIES + sessions!) * per).toBeLessThanOrEqual(100 * MB);
      expect(s.ortBytes + (RUN_STATE_COPIES + sessions! + 1) * per).toBeGreaterThan(100 * MB);
    }
    expect(s.sessionsThatFit.map((f) => f.context)).toEqual([1024, 4096, 8184]); // 8K clamped to 8192 - M
    const atContext = stateBytes(tiny, plan.contextTokens, 'f32').total;
    expect(s.estimatedBytes).toBeCloseTo(s.ortBytes + (RUN_STATE_COPIES + 1) * atContext, 3);
    // the state each stage must hold shapes the plan: more hot sessions, more stages
    const many = planStages(tiny, { dtype: 'f32', budgetMb: 100, hotSessions: 4 });
    expect(many.stages.length).toBeGreaterThan(plan.stages.length);
  });
});

describe('a planned sub-layer model runs as the unsliced one', () => {
  let root: string;
  let whole: HymbaEngine;
  let sliced: HymbaEngine;
  let plan: ModelPlan;
  // tiny with a wide MLP, so that a small budget slices the MLPs as well as the embedding and the head
  const overrides = { intermediate_size: 2048 };
  const wide = model('tiny', undefined, overrides).dims;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'hymba-plan-run-'));
    const hf = join(root, 'hf');
    await makeTestModel(hf, { preset: 'tiny', seed: 5, tokenizer: false, overrides });
    plan = planStages(wide, { dtype: 'f32', budgetMb: 38, contextTokens: 1024 });
    const convert = async (name: string, opts: Parameters<typeof convertDir>[1]): Promise<HymbaEngine> => {
      const dir = join(root, name);
      await mkdir(dir, { recursive: true });
      await convertDir(hf, opts, (file, bytes) => writeFile(join(dir, file), bytes));
      return HymbaEngine.load(dirModelSource(dir));
    };
    whole = await convert('whole', { dtype: 'f32' });
    sliced = await convert('sliced', { dtype: 'f32', stages: plan.specs, maxRunTokens: plan.runTokens });
  }, 120_000);
  afterAll(async () => {
    await whole?.release();
    await sliced?.release();
    await rm(root, { recursive: true, force: true });
  });

  it('converts the plan stage for stage, with the estimated weight bytes', () => {
    expect(plan.fits).toBe(true);
    const kinds = new Set(plan.stages.map((s) => s.slice?.kind));
    expect([...kinds]).toEqual(expect.arrayContaining(['embed', 'mlp', 'head']));
    expect(plan.stages.some((s) => (s.kvIn ?? []).length > 0)).toBe(true);
    expect(sliced.manifest.maxRunTokens).toBe(plan.runTokens);
    expect(sliced.manifest.stages.map((s) => s.weightBytes)).toEqual(plan.stages.map((s) => s.weightBytes));
    expect(sliced.runner.steps).toHaveLength(plan.steps);
  });

  it('gives the unsliced logits within 1e-4: a chunked prompt, a second turn, decode steps', async () => {
    const ids = tokenSequence(40, wide.V, 9);
    const run = async (e: HymbaEngine): Promise<Float32Array> => {
      const state = e.newState();
      const rows = [
        (await e.runner.forward(state, ids.slice(0, 25), 'all')).logits,
        (await e.runner.forward(state, ids.slice(25, 33), 'all')).logits,
      ];
      for (let t = 33; t < ids.length; t++) rows.push((await e.runner.forward(state, [ids[t]!], 'all')).logits);
      return concatFloat32(rows);
    };
    const [a, b] = [await run(sliced), await run(whole)];
    expect(a).toHaveLength(40 * wide.V);
    expect(maxDiff(a, b)).toBeLessThanOrEqual(1e-4);
  }, 60_000);
});

describe('manifest plan record', () => {
  const base = {
    format: 'hymba-edge-model',
    version: 1,
    graphVersion: 2,
    fingerprint: 'f'.repeat(64),
    dtype: 'int8',
    config: {},
    maxRunTokens: 128,
    stages: [{ first: 0, last: 8, embed: true, head: true, graph: 'stage-0.onnx', weightBytes: 10 }],
    prefixState: null,
    tokenizer: false,
    generation: { bosTokenId: 1, eosTokenIds: [2] },
  };

  it('is optional: manifests without it still parse', () => {
    expect(parseManifest(JSON.stringify(base)).plan).toBeUndefined();
  });

  it('parses when present and is checked', () => {
    const plan = {
      budgetMb: 128,
      contextTokens: 8184,
      hotSessions: 1,
      stages: [{ first: 0, last: 8, estimatedBytes: 75_000_000, stateBytesPerSession: 9_530_000 }],
    };
    expect(parseManifest(JSON.stringify({ ...base, plan })).plan).toEqual(plan);
    expect(() => parseManifest(JSON.stringify({ ...base, plan: { ...plan, budgetMb: -1 } }))).toThrow(/plan.budgetMb/);
  });
});
