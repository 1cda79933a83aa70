// Continuous batching: several sessions at different positions decoded together, one token each in one ONNX run
// per stage, give what each session gives decoded alone; and a model cut into stages runs as one does.

import { concatFloat32 } from '../../engine/run/arrays.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HymbaRunner } from '../../engine/run/runner.js';
import { StageRunner } from '../../engine/run/stage-runner.js';
import { cloneState, emptyState, holdsKv, holdsMixer, type HymbaState } from '../../engine/state/state.js';
import { makeConvertedModel, maxDiff, tokenSequence, type TestModel } from '../helpers/tiny-model.js';

// tiny: M = 8, W = 16. After 3 and 12 text tokens the sliding caches are not full (12 fills up while
// decoding), after 20 and 40 they are; global caches differ in length for every session.
const PROMPTS = [3, 12, 20, 40];
const STEPS = 6;
const STAGES = [
  { first: 0, last: 1 },
  { first: 1, last: 4 },
  { first: 4, last: 8 },
];

let f32: TestModel;
let staged: TestModel;
beforeAll(async () => {
  [f32, staged] = await Promise.all([
    makeConvertedModel({ preset: 'tiny', seed: 7 }),
    makeConvertedModel({ preset: 'tiny', seed: 7, stages: STAGES }),
  ]);
});
afterAll(async () => {
  await f32?.cleanup();
  await staged?.cleanup();
});

function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

/** One session per prompt length, each prefilled alone; returns the states and each one's last logits row. */
async function prefilled(t: TestModel): Promise<{ states: HymbaState[]; last: Float32Array[] }> {
  const states: HymbaState[] = [];
  const last: Float32Array[] = [];
  for (const [k, n] of PROMPTS.entries()) {
    const s = t.engine.newState();
    last.push((await t.engine.runner.forward(s, tokenSequence(n, t.model.dims.V, 31 + k), 'last')).logits);
    states.push(s);
  }
  return { states, last };
}

/**
 * Greedy decoding of every session, batched (forwardBatch) and alone (forward) from the same states:
 * the largest logit difference and both token sequences.
 */
async function batchedVsAlone(runner: HymbaRunner, t: TestModel) {
  const { states, last } = await prefilled(t);
  const alone = states.map(cloneState);
  let diff = 0;
  const tokensBatched: number[][] = states.map(() => []);
  const tokensAlone: number[][] = states.map(() => []);
  let rowsBatched = last;
  let rowsAlone = last;
  for (let step = 0; step < STEPS; step++) {
    const ids = rowsBatched.map(argmax);
    ids.forEach((id, k) => tokensBatched[k]!.push(id));
    rowsBatched = await runner.forwardBatch(states, ids);
    const next: Float32Array[] = [];
    for (const [k, s] of alone.entries()) {
      const id = argmax(rowsAlone[k]!);
      tokensAlone[k]!.push(id);
      next.push((await runner.forward(s, [id], 'last')).logits);
    }
    rowsAlone = next;
    rowsBatched.forEach((row, k) => (diff = Math.max(diff, maxDiff(row, rowsAlone[k]!))));
  }
  states.forEach((s, k) => expect(s.position).toBe(alone[k]!.position));
  return { diff, tokensBatched, tokensAlone, states, alone };
}

/** Largest difference between two states' arrays (same layout required). */
function stateDiff(a: HymbaState, b: HymbaState): number {
  expect(a.position).toBe(b.position);
  let max = 0;
  a.layers.forEach((l, i) => {
    const m = b.layers[i];
    expect(!!m).toBe(!!l);
    if (!l || !m) return;
    expect(m.kind).toBe(l.kind);
    if (holdsMixer(l) && holdsMixer(m)) max = Math.max(max, maxDiff(l.conv, m.conv), maxDiff(l.ssm, m.ssm));
    if (holdsKv(l) && holdsKv(m)) {
      expect(m.kvLen).toBe(l.kvLen);
      max = Math.max(max, maxDiff(l.key, m.key), maxDiff(l.value, m.value));
    }
  });
  return max;
}

/** A full state cut into the stages' own states (each holds only its layers, as a stage's host keeps them). */
function cut(s: HymbaState, stages: { first: number; last: number }[]): HymbaState[] {
  return stages.map(({ first, last }) => {
    const layers: HymbaState['layers'] = new Array(s.layers.length);
    for (let i = first; i < last; i++) layers[i] = s.layers[i];
    return { position: s.position, layers };
  });
}

describe('forwardBatch: sessions at different positions decoded together', () => {
  it('equals each session decoded alone (f32)', async () => {
    const r = await batchedVsAlone(f32.engine.runner, f32);
    expect(r.diff).toBeLessThanOrEqual(1e-4);
    expect(r.tokensBatched).toEqual(r.tokensAlone);
    r.states.forEach((s, k) => expect(stateDiff(s, r.alone[k]!)).toBeLessThanOrEqual(1e-4));
  });

  it('equals each session decoded alone (int8)', async () => {
    const int8 = await makeConvertedModel({ preset: 'tiny', seed: 7, dtype: 'int8' });
    try {
      const r = await batchedVsAlone(int8.engine.runner, int8);
      expect(r.diff).toBeLessThanOrEqual(1e-4);
      expect(r.tokensBatched).toEqual(r.tokensAlone);
    } finally {
      await int8.cleanup();
    }
  });

  it('equals each session decoded alone through three stage graphs', async () => {
    const r = await batchedVsAlone(staged.engine.runner, staged);
    expect(r.diff).toBeLessThanOrEqual(1e-4);
    expect(r.tokensBatched).toEqual(r.tokensAlone);
  });

  it('sixteen sessions, some of them at the same position', async () => {
    const { runner } = f32.engine;
    const { states } = await prefilled(f32);
    const many = Array.from({ length: 16 }, (_, k) => cloneState(states[k % states.length]!));
    const ids = many.map((_, k) => 100 + k);
    const rows = await runner.forwardBatch(many, ids);
    for (const [k, s] of many.entries()) {
      const alone = cloneState(states[k % states.length]!);
      const { logits } = await runner.forward(alone, [ids[k]!], 'last');
      expect(maxDiff(rows[k]!, logits)).toBeLessThanOrEqual(1e-4);
      expect(stateDiff(s, alone)).toBeLessThanOrEqual(1e-4);
    }
  });

  it('a rejected batch leaves every state as it was', async () => {
    const { runner } = f32.engine;
    const { states } = await prefilled(f32);
    const before = states.map((s) => ({ position: s.position, layers: s.layers.slice() }));
    await expect(runner.forwardBatch(states, [5, 6, f32.model.dims.V, 7])).rejects.toThrow(/outside/);
    await expect(runner.forwardBatch([states[0]!, states[0]!], [5, 6])).rejects.toThrow(/twice/);
    // a state whose cache does not match its position fails inside the stage run, after others were packed
    const broken = cloneState(states[2]!);
    broken.position += 1;
    await expect(runner.forwardBatch([states[0]!, broken, states[1]!], [5, 6, 7])).rejects.toThrow(/K\/V entries/);
    states.forEach((s, k) => {
      expect(s.position).toBe(before[k]!.position);
      s.layers.forEach((l, i) => expect(l).toBe(before[k]!.layers[i]));
    });
  });
});

describe('StageRunner', () => {
  const runners = (): StageRunner[] =>
    staged.engine.runner.stages.map((s) => new StageRunner(staged.model, s, staged.engine.manifest.maxRunTokens));

  /** One token through every stage, each session alone (run) or all together (runBatch), per-stage states. */
  async function step(rs: StageRunner[], perStage: HymbaState[][], ids: number[], batched: boolean) {
    let inputs: ({ ids: number[] } | { hidden: Float32Array })[] = ids.map((id) => ({ ids: [id] }));
    let logits: Float32Array[] = [];
    for (const [j, r] of rs.entries()) {
      const outs = batched
        ? await r.runBatch(perStage.map((stages, k) => ({ state: stages[j]!, input: inputs[k]! })))
        : await Promise.all(perStage.map((stages, k) => r.run(stages[j]!, inputs[k]!, 0)));
      if (r.stage.spec.head) logits = outs.map((o) => o.logits!);
      else inputs = outs.map((o) => ({ hidden: o.hidden! }));
    }
    return logits;
  }

  it('runBatch per stage equals run per session, one session still inside the meta tokens', async () => {
    const { V, M } = staged.model.dims;
    const rs = runners();
    const { states, last } = await prefilled(staged);
    const metaSession = emptyState(staged.model.dims);
    await staged.engine.runner.feedMeta(metaSession, 3);
    const all = [...states, metaSession];
    const batched = all.map((s) => cut(cloneState(s), STAGES));
    const alone = all.map((s) => cut(cloneState(s), STAGES));
    let rows = [...last, new Float32Array(V)];
    let diff = 0;
    for (let k = 0; k < STEPS; k++) {
      // the meta session feeds its remaining meta tokens (ids V + j), then text
      const ids = all.map((_, s) => (batched[s]![0]!.position < M ? V + batched[s]![0]!.position : argmax(rows[s]!)));
      const a = await step(rs, batched, ids, true);
      const b = await step(rs, alone, ids, false);
      a.forEach((row, s) => (diff = Math.max(diff, maxDiff(row, b[s]!))));
      rows = a;
    }
    expect(diff).toBeLessThanOrEqual(1e-4);
    batched.forEach((stages, s) =>
      stages.forEach((st, j) => expect(stateDiff(st, alone[s]![j]!)).toBeLessThanOrEqual(1e-4)),
    );
    expect(batched[4]![0]!.position).toBe(3 + STEPS);
  });

  it('a batch of one equals run()', async () => {
    const rs = runners();
    const { states } = await prefilled(staged);
    const a = cut(cloneState(states[1]!), STAGES);
    const b = cut(cloneState(states[1]!), STAGES);
    const x = await step(rs, [a], [42], true);
    const y = await step(rs, [b], [42], false);
    expect(maxDiff(x[0]!, y[0]!)).toBeLessThanOrEqual(1e-6);
    a.forEach((st, j) => expect(stateDiff(st, b[j]!)).toBeLessThanOrEqual(1e-6));
  });

  it('run() over three stage graphs equals one graph with every layer', async () => {
    const rs = runners();
    const { V } = staged.model.dims;
    const ids = tokenSequence(40, V, 5);
    const parts = cut(staged.engine.newState(), STAGES);
    const rows: Float32Array[] = [];
    const feed = async (tokens: number[]): Promise<void> => {
      let input: { ids: number[] } | { hidden: Float32Array } = { ids: tokens };
      for (const [j, r] of rs.entries()) {
        const out = await r.run(parts[j]!, input, 0);
        if (out.logits) rows.push(out.logits);
        else input = { hidden: out.hidden! };
      }
    };
    await feed(ids.slice(0, 33));
    for (const id of ids.slice(33)) await feed([id]);
    const once = await f32.engine.runner.forward(f32.engine.newState(), ids, 'all');
    const got = concatFloat32(rows);
    expect(got.length).toBe(once.logits.length);
    expect(maxDiff(got, once.logits)).toBeLessThanOrEqual(1e-4);
    parts.forEach((p) => expect(p.position).toBe(f32.model.dims.M + ids.length));
  });

  it('refuses input of the wrong kind or size', async () => {
    const [first, middle] = runners();
    const s = cut(staged.engine.newState(), STAGES);
    await expect(first!.run(s[0]!, { hidden: new Float32Array(staged.model.dims.H) }, 0)).rejects.toThrow(/token ids/);
    await expect(middle!.run(s[1]!, { ids: [5] }, 0)).rejects.toThrow(/hidden rows/);
    await expect(first!.runBatch([{ state: s[0]!, input: { ids: [5, 6] } }])).rejects.toThrow(/one token/);
    await expect(first!.run(s[1]!, { ids: [5] }, 0)).rejects.toThrow(/no layer 0/);
    expect(s[0]!.position).toBe(staged.model.dims.M);
  });
});
