// The stage planner: byte accounting against the converter, KV groups kept whole, budgets, over-budget units,
// state and sessions-that-fit arithmetic, and the manifest's optional plan record.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type HymbaDims, type ModelConfig } from '../../engine/config.js';
import { parseManifest, type Manifest } from '../../engine/manifest.js';
import { emitGraph } from '../../engine/onnx/emit.js';
import { buildStageGraph, checkStage, type StageSpec } from '../../engine/onnx/hymba-graph.js';
import {
  atomicUnits,
  estimateStages,
  layerStateBytes,
  layerWeightBytes,
  MB,
  planStages,
  RUN_STATE_COPIES,
  stageWeightBytes,
  type ModelPlan,
} from '../../engine/plan.js';
import type { ModelDtype } from '../../engine/quantize.js';
import { stateBytes } from '../../engine/state.js';
import { expectedTensors, type WeightMap } from '../../engine/weights.js';
import { convertDir } from '../../infra/model-dir.js';
import { makeTestModel } from '../../infra/test-model/make-test-model.js';
import { presetConfig, pyJson, type ConfigValue, type PresetName } from '../../infra/test-model/presets.js';

const DTYPES: ModelDtype[] = ['f32', 'f16', 'int8', 'q4'];

const model = (preset: PresetName, layers?: number, overrides: Record<string, ConfigValue> = {}): ModelConfig =>
  loadConfig(JSON.parse(pyJson({ ...presetConfig(preset, layers), ...overrides })));

/** Every stage is consecutive, covers the model, passes the converter's own KV check, and embeds/heads right. */
function expectWellFormed(d: HymbaDims, plan: ModelPlan): void {
  expect(plan.stages[0]!.first).toBe(0);
  expect(plan.stages.at(-1)!.last).toBe(d.L);
  plan.stages.forEach((s, k) => {
    if (k > 0) expect(s.first).toBe(plan.stages[k - 1]!.last);
    expect(() => checkStage(d, s)).not.toThrow();
    expect(s.embed).toBe(k === 0);
    expect(s.head).toBe(k === plan.stages.length - 1);
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

  async function manifestOf(dtype: ModelDtype, stages: { first: number; last: number }[]): Promise<Manifest> {
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

  it('reports units that cannot fit alone, still printing a plan with those stages marked', () => {
    const plan = planStages(big, { dtype: 'int8', budgetMb: 128 });
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
    expect(planStages(big, { dtype: 'int8', budgetMb: plan.minBudgetMb }).fits).toBe(true);
    // a single layer that does not fit: the brief's sentence
    const cut = model('hymba-1.5b', 1).dims;
    const single = planStages(cut, { dtype: 'int8', budgetMb: 128, runTokens: 0, hotSessions: 0 });
    expect(single.problems).toContainEqual(
      expect.stringMatching(
        /^layer 0 needs ~\d+ MB at int8: over the 128 MB budget; it would need splitting into layer slices$/,
      ),
    );
  });

  it('names a stage whose parts fit alone but not together', () => {
    // tiny at a budget where the embedding and layer 0 each fit but not both: stage 0 must hold both
    const base = { dtype: 'f32' as const, baselineBytes: 0, factor: 1, runTokens: 0, hotSessions: 0 };
    const embed = estimateStages(tiny, [{ first: 0, last: 1, embed: true, head: false }], base).stages[0]!;
    const layer0 = estimateStages(tiny, [{ first: 0, last: 1, embed: false, head: false }], base).stages[0]!;
    const budgetMb = (embed.estimatedBytes - 1) / MB;
    expect(layer0.estimatedBytes).toBeLessThan(budgetMb * MB);
    const plan = planStages(tiny, { ...base, budgetMb });
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
      expect(s.ortBytes + (RUN_STATE_COPIES + sessions) * per).toBeLessThanOrEqual(100 * MB);
      expect(s.ortBytes + (RUN_STATE_COPIES + sessions + 1) * per).toBeGreaterThan(100 * MB);
    }
    expect(s.sessionsThatFit.map((f) => f.context)).toEqual([1024, 4096, 8184]); // 8K clamped to 8192 - M
    const atContext = stateBytes(tiny, plan.contextTokens, 'f32').total;
    expect(s.estimatedBytes).toBeCloseTo(s.ortBytes + (RUN_STATE_COPIES + 1) * atContext, 3);
    // the state each stage must hold shapes the plan: more hot sessions, more stages
    const many = planStages(tiny, { dtype: 'f32', budgetMb: 100, hotSessions: 4 });
    expect(many.stages.length).toBeGreaterThan(plan.stages.length);
  });
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
