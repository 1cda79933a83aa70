import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../engine/model/config.js';
import { isMirror, kvEntries, kvLayer, mixerLayer, type HymbaState } from '../../engine/state/state.js';
import { fullKvTransformerBytes, heldBytes, stateBytes } from '../../engine/state/bytes.js';
import { deserializeState, serializeState, StateFormatError } from '../../engine/state/codec.js';
import { emptyStageState, stageState } from '../../engine/state/merge.js';
import { presetConfig } from '../../infra/test-model/presets.js';
import { makeConvertedModel, tokenSequence, type TestModel } from '../helpers/tiny-model.js';

let tiny: TestModel;
let state: HymbaState;
beforeAll(async () => {
  tiny = await makeConvertedModel({ preset: 'tiny', seed: 5 });
  state = tiny.engine.newState();
  await tiny.engine.runner.forward(state, tokenSequence(30, tiny.model.dims.V, 2));
});
afterAll(() => tiny?.cleanup());

describe('state layout', () => {
  it('keeps meta + window entries in sliding producers, everything in global ones, nothing in consumers', () => {
    const { dims } = tiny.model;
    expect(state.position).toBe(dims.M + 30);
    dims.layers.forEach((role, i) => {
      const l = state.layers[i]!;
      expect(l.kind).toBe(role.kv.kind);
      if (l.kind !== 'producer') return;
      const expected = role.attention === 'global' ? dims.M + 30 : dims.M + dims.W;
      expect(l.kvLen).toBe(expected);
      expect(kvEntries(dims, i, state.position)).toBe(expected);
      expect(l.key.length).toBe(dims.kvHeads * expected * dims.dqk);
      expect(l.value.length).toBe(dims.kvHeads * expected * dims.dv);
    });
  });

  it('counts the bytes its arrays hold', () => {
    const { dims } = tiny.model;
    const kv = state.layers.reduce((n, l) => n + (l?.kind === 'producer' ? l.kvLen : 0), 0);
    const mixers = dims.L * ((dims.dConv - 1) * dims.dIn + dims.dIn * dims.dState);
    expect(heldBytes(state)).toBe(4 * (mixers + kv * dims.kvHeads * (dims.dqk + dims.dv)));
  });
});

describe('snapshot format', () => {
  const fp = () => tiny.engine.fingerprint;
  it('round-trips exactly', () => {
    const bytes = serializeState(tiny.model.dims, state, fp());
    const back = deserializeState(tiny.model.dims, bytes, fp());
    expect(back.position).toBe(state.position);
    state.layers.forEach((l, i) => expect(back.layers[i]).toEqual(l));
  });

  it('f16 K/V halve the K/V bytes and stay close', () => {
    const f32 = serializeState(tiny.model.dims, state, fp());
    const f16 = serializeState(tiny.model.dims, state, fp(), 'f16');
    expect(f16.length).toBeLessThan(f32.length);
    const back = deserializeState(tiny.model.dims, f16, fp());
    const k = kvLayer(state, 0).key;
    const k16 = kvLayer(back, 0).key;
    for (let i = 0; i < k.length; i++)
      expect(Math.abs(k16[i]! - k[i]!)).toBeLessThanOrEqual(Math.abs(k[i]!) * 1e-3 + 1e-6);
  });

  it('rejects a flipped byte anywhere (checksum)', () => {
    const bytes = serializeState(tiny.model.dims, state, fp());
    for (const at of [20, Math.floor(bytes.length / 2), bytes.length - 10]) {
      const bad = bytes.slice();
      bad[at]! ^= 0x40;
      expect(() => deserializeState(tiny.model.dims, bad, fp())).toThrow(/checksum mismatch/);
    }
  });

  it('rejects a truncated blob, bad magic, and another model', () => {
    const bytes = serializeState(tiny.model.dims, state, fp());
    expect(() => deserializeState(tiny.model.dims, bytes.slice(0, 10), fp())).toThrow(StateFormatError);
    expect(() => deserializeState(tiny.model.dims, bytes.slice(0, bytes.length - 100), fp())).toThrow(/checksum/);
    const magic = bytes.slice();
    magic[0] = 0x58;
    expect(() => deserializeState(tiny.model.dims, magic, fp())).toThrow(/bad magic/);
    expect(() => deserializeState(tiny.model.dims, bytes, 'another-model-fingerprint')).toThrow(/belongs to model/);
  });
});

describe('stage states with mirrors', () => {
  // tiny: KV group [1, 2, 3]; a stage with the mixers of layers 2 and 3 mirrors producer 1
  const spec = { first: 2, last: 4, embed: false, head: false, units: { from: 4, to: 8 }, kvIn: [1] };

  it('hold the mixer layers and K/V-only mirror entries, and round-trip through a snapshot', () => {
    const { dims } = tiny.model;
    const s = stageState(dims, spec, state);
    expect(s.layers.flatMap((l, i) => (l ? [i] : []))).toEqual([1, 2, 3]);
    expect(isMirror(s.layers[1]!)).toBe(true);
    expect(isMirror(s.layers[2]!)).toBe(false);
    const producer = kvLayer(state, 1);
    expect(kvLayer(s, 1).key).toBe(producer.key);
    const bytes = serializeState(dims, s, tiny.engine.fingerprint);
    const back = deserializeState(dims, bytes, tiny.engine.fingerprint);
    expect(back.layers[1]).toEqual({ kind: 'mirror', key: producer.key, value: producer.value, kvLen: producer.kvLen });
    expect(mixerLayer(back, 3).ssm).toEqual(mixerLayer(state, 3).ssm);
    // a mirror costs its K/V only (its header entry names kind "mirror", 2 bytes shorter: within the padding)
    const full = serializeState(dims, { position: s.position, layers: [undefined, state.layers[1]] }, 'x');
    const mirrorOnly = serializeState(dims, { position: s.position, layers: [undefined, s.layers[1]] }, 'x');
    const saved = 4 * (dims.dConv - 1 + dims.dState) * dims.dIn;
    expect(full.length - mirrorOnly.length).toBeGreaterThan(saved - 32);
    expect(full.length - mirrorOnly.length).toBeLessThanOrEqual(saved);
  });

  it('start empty for a fresh stage', () => {
    const s = emptyStageState(tiny.model.dims, spec);
    expect(s.position).toBe(0);
    expect(isMirror(s.layers[1]!)).toBe(true);
    expect(kvLayer(s, 1).kvLen).toBe(0);
    expect(s.layers[0]).toBeUndefined();
  });
});

describe('stateBytes', () => {
  it('reproduces the Hymba-1.5B accounting of docs/model.md at 8K tokens (16-bit)', () => {
    const { dims } = loadConfig(JSON.parse(JSON.stringify(presetConfig('hymba-1.5b'))));
    const b = stateBytes(dims, 8192, 'f16');
    expect(b.globalKv).toBe(3 * 8320 * 1920);
    expect(b.slidingKv).toBe(14 * 1152 * 1920);
    expect(b.ssm).toBe(32 * 3200 * 16 * 2);
    expect(b.conv).toBe(32 * 3200 * 3 * 2);
    expect(b.total / 1e6).toBeGreaterThan(82);
    expect(b.total / 1e6).toBeLessThan(84);
    // same depth, width and GQA heads, full K/V (head width dqk) in every layer, no sharing, no window
    expect(fullKvTransformerBytes(dims, 8192, 'f16')).toBe(32 * 8192 * 5 * 2 * 64 * 2);
    expect(fullKvTransformerBytes(dims, 8192, 'f16') / b.total).toBeGreaterThan(4);
  });
});
