// The ONNX engine computes Hymba as the float64 reference does, and continuing from a saved state is exact.

import { concatFloat32 } from '../../engine/run/arrays.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { referenceForward } from '../../engine/model/reference.js';
import type { HymbaState } from '../../engine/state/state.js';
import { deserializeState, serializeState } from '../../engine/state/codec.js';
import type { ConfigValue } from '../../infra/test-model/presets.js';
import { makeConvertedModel, maxAbsDiff, maxDiff, tokenSequence, type TestModel } from '../helpers/tiny-model.js';

let tiny: TestModel;
beforeAll(async () => {
  tiny = await makeConvertedModel({ preset: 'tiny', seed: 7 });
});
afterAll(() => tiny?.cleanup());

/** Round-trip a state through the binary format, as a session does between turns. */
function persist(t: TestModel, s: HymbaState): HymbaState {
  return deserializeState(t.model.dims, serializeState(t.model.dims, s, t.engine.fingerprint), t.engine.fingerprint);
}

describe('ONNX graph vs float64 reference (tiny preset)', () => {
  it('matches over 64 tokens, longer than the window, within 1e-3 in f32', async () => {
    const { dims } = tiny.model;
    expect(dims.W).toBeLessThan(48);
    const ids = tokenSequence(64, dims.V, 3);
    const { logits, rows } = await tiny.engine.runner.forward(tiny.engine.newState(), ids, 'all');
    expect(rows).toBe(ids.length);
    const ref = referenceForward(tiny.model, tiny.weights, ids);
    const diff = maxAbsDiff(logits, ref, dims.V);
    expect(diff).toBeLessThanOrEqual(1e-3);
    // the logits are spread, so the comparison is meaningful
    const row = ref[40]!;
    const mean = row.reduce((a, b) => a + b, 0) / row.length;
    const std = Math.sqrt(row.reduce((a, b) => a + (b - mean) ** 2, 0) / row.length);
    expect(std).toBeGreaterThan(1);
  });

  it('returns only the last row when asked, equal to the last of all rows', async () => {
    const ids = tokenSequence(20, tiny.model.dims.V, 5);
    const all = await tiny.engine.runner.forward(tiny.engine.newState(), ids, 'all');
    const last = await tiny.engine.runner.forward(tiny.engine.newState(), ids, 'last');
    const V = tiny.model.dims.V;
    expect(last.rows).toBe(1);
    expect(maxDiff(last.logits, all.logits.subarray((ids.length - 1) * V))).toBeLessThan(1e-5);
  });
});

describe('resumption is exact', () => {
  const V = () => tiny.model.dims.V;

  /** prefill(A) -> serialize -> deserialize -> prefill(B) -> decode k greedy steps, vs one pass. */
  async function resumedVsOnePass(split: number, total: number, decodeSteps: number): Promise<number> {
    const { runner } = tiny.engine;
    const ids = tokenSequence(total, V(), 11);
    let state = tiny.engine.newState();
    const a = await runner.forward(state, ids.slice(0, split), 'all');
    state = persist(tiny, state);
    const b = await runner.forward(state, ids.slice(split), 'all');
    const rows = [a.logits, b.logits];
    let last = b.logits.subarray(b.logits.length - V());
    const decoded: number[] = [];
    for (let k = 0; k < decodeSteps; k++) {
      const next = argmax(last);
      decoded.push(next);
      state = persist(tiny, state);
      const step = await runner.forward(state, [next], 'all');
      rows.push(step.logits);
      last = step.logits;
    }
    const once = await runner.forward(tiny.engine.newState(), [...ids, ...decoded], 'all');
    return maxDiff(concatFloat32(rows), once.logits);
  }

  // tiny: W = 16, M = 8; text position p sits at index M + p of the meta-prepended sequence
  for (const split of [1, 2, 15, 16, 17, 18, 33]) {
    it(`split after ${split} tokens, then 6 decode steps`, async () => {
      expect(await resumedVsOnePass(split, 40, 6)).toBeLessThanOrEqual(1e-4);
    });
  }

  it('split inside the meta-token region', async () => {
    const { runner } = tiny.engine;
    const { M, V: vocab } = tiny.model.dims;
    const ids = tokenSequence(30, vocab, 13);
    let state = (await import('../../engine/state/state.js')).emptyState(tiny.model.dims);
    await runner.feedMeta(state, 3);
    state = persist(tiny, state);
    await runner.feedMeta(state, M - 3);
    const resumed = await runner.forward(persist(tiny, state), ids, 'all');
    const once = await runner.forward(tiny.engine.newState(), ids, 'all');
    expect(maxDiff(resumed.logits, once.logits)).toBeLessThanOrEqual(1e-4);
  });

  it('a chunked prefill equals one run', async () => {
    const ids = tokenSequence(50, V(), 17);
    const once = await tiny.engine.runner.forward(tiny.engine.newState(), ids, 'all');
    const state = tiny.engine.newState();
    const parts: Float32Array[] = [];
    for (let i = 0; i < ids.length; i += 7)
      parts.push((await tiny.engine.runner.forward(state, ids.slice(i, i + 7), 'all')).logits);
    expect(maxDiff(concatFloat32(parts), once.logits)).toBeLessThanOrEqual(1e-4);
  });
});

describe('f16 weights', () => {
  it('stay within 1e-3 of the reference (bf16 checkpoint values fit f16 exactly)', async () => {
    const f16 = await makeConvertedModel({ preset: 'tiny', seed: 7, dtype: 'f16' });
    try {
      const ids = tokenSequence(50, f16.model.dims.V, 3);
      const { logits } = await f16.engine.runner.forward(f16.engine.newState(), ids, 'all');
      expect(maxAbsDiff(logits, referenceForward(f16.model, f16.weights, ids), f16.model.dims.V)).toBeLessThanOrEqual(
        1e-3,
      );
      expect(f16.engine.fingerprint).not.toBe(tiny.engine.fingerprint);
    } finally {
      await f16.cleanup();
    }
  });
});

function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

describe('other model shapes', () => {
  const variants: [string, Record<string, ConfigValue>][] = [
    ['no meta tokens, no sliding window', { num_memory_tokens: 0, sliding_window: null }],
    [
      'KV shared every 2 layers, window 5, rope "default"',
      { kv_reuse_group: null, kv_reuse_every_i_layer: 2, global_attn_idx: [], sliding_window: 5, rope_type: 'default' },
    ],
    ['every layer its own KV, all global', { kv_reuse_group: null, global_attn_idx: [0, 1, 2, 3, 4, 5, 6, 7] }],
  ];
  for (const [name, overrides] of variants) {
    it(`${name}: matches the reference and resumes exactly`, async () => {
      const t = await makeConvertedModel({ preset: 'tiny', seed: 9, overrides });
      try {
        const ids = tokenSequence(30, t.model.dims.V, 21);
        const once = await t.engine.runner.forward(t.engine.newState(), ids, 'all');
        expect(maxAbsDiff(once.logits, referenceForward(t.model, t.weights, ids), t.model.dims.V)).toBeLessThanOrEqual(
          1e-3,
        );
        const state = t.engine.newState();
        const a = await t.engine.runner.forward(state, ids.slice(0, 11), 'all');
        const b = await t.engine.runner.forward(persist(t, state), ids.slice(11), 'all');
        expect(maxDiff(concatFloat32([a.logits, b.logits]), once.logits)).toBeLessThanOrEqual(1e-4);
      } finally {
        await t.cleanup();
      }
    });
  }
});
