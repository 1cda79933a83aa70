// Whole-model states from per-stage slices and back (the session handoff, docs/serving.md): mergeStageStates,
// splitState and checkWholeState, on the tiny model's layout split every way a stage can split it.

import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../engine/model/config.js';
import { crc32 } from '../../engine/state/crc32.js';
import type { StageSpec } from '../../engine/model/graph.js';
import {
  checkWholeState,
  deserializeState,
  emptyState,
  isMirror,
  kvEntries,
  mergeStageStates,
  serializeState,
  splitState,
  StateFingerprintError,
  StateFormatError,
  type HymbaState,
} from '../../engine/state/state.js';
import { presetConfig } from '../../infra/test-model/presets.js';

const { dims: d } = loadConfig(JSON.parse(JSON.stringify(presetConfig('tiny'))) as Record<string, unknown>);
const FP = 'fingerprint-of-the-test-model-0123';

const none = { embed: false, head: false };
/** The tiny model as TINY_SLICED_PLAN splits it (tests/helpers/tiny-model.ts): slices, units and a mirror. */
const SPECS: StageSpec[] = [
  { first: 0, last: 0, ...none, slice: { kind: 'embed', part: 0, parts: 2 } },
  { first: 0, last: 0, ...none, slice: { kind: 'embed', part: 1, parts: 2 } },
  { first: 0, last: 2, ...none, units: { from: 0, to: 3 }, kvOut: [1] },
  { first: 1, last: 2, ...none, slice: { kind: 'mlp', layer: 1, part: 0, parts: 2 } },
  { first: 1, last: 2, ...none, slice: { kind: 'mlp', layer: 1, part: 1, parts: 2 } },
  { first: 2, last: 4, ...none, units: { from: 4, to: 8 }, kvIn: [1] },
  { first: 4, last: 8, ...none },
  { first: 8, last: 8, ...none, slice: { kind: 'head', part: 0, parts: 3 } },
  { first: 8, last: 8, ...none, slice: { kind: 'head', part: 1, parts: 3 } },
  { first: 8, last: 8, ...none, slice: { kind: 'head', part: 2, parts: 3 } },
];

/** A whole-model state after `tokens` text tokens, every number distinct and deterministic. */
function filledState(tokens: number): HymbaState {
  const s = emptyState(d);
  s.position = d.M + tokens;
  let x = 1;
  const fill = (n: number): Float32Array =>
    Float32Array.from({ length: n }, () => (x = (x * 48271) % 2147483647) / 1e9);
  s.layers.forEach((l, i) => {
    if (!l) return;
    l.conv = fill(l.conv.length);
    l.ssm = fill(l.ssm.length);
    if (l.key) {
      l.kvLen = kvEntries(d, i, s.position);
      l.key = fill(d.kvHeads * l.kvLen * d.dqk);
      l.value = fill(d.kvHeads * l.kvLen * d.dv);
    }
  });
  return s;
}

/** Serialized, as a Node Buffer (whose `slice` is a view: deserializeState must copy anyway). */
const bytesOf = (s: HymbaState): Buffer => Buffer.from(serializeState(d, s, FP));

describe('splitState / mergeStageStates', () => {
  const full = filledState(37); // past the sliding window
  const parts = splitState(d, SPECS, full);

  it('split gives each stage its mixers and mirrors; merge of the serialized slices gives the state back', () => {
    expect(parts[5]!.layers.flatMap((l, i) => (l ? [[i, isMirror(l)]] : []))).toEqual([
      [1, true],
      [2, false],
      [3, false],
    ]);
    expect(parts[0]!.layers.every((l) => l === undefined)).toBe(true);
    const slices = parts.map((p) => deserializeState(d, bytesOf(p), FP));
    const merged = mergeStageStates(d, SPECS, slices);
    expect(merged.position).toBe(full.position);
    expect(merged.layers.some((l) => l && isMirror(l))).toBe(false);
    expect(bytesOf(merged).equals(bytesOf(full))).toBe(true);
    // and the merged state splits into byte-identical slices again
    splitState(d, SPECS, merged).forEach((p, k) => expect(bytesOf(p).equals(bytesOf(parts[k]!))).toBe(true));
    expect(() => checkWholeState(d, merged)).not.toThrow();
  });

  it('one stage (the whole model) is the identity', () => {
    const one: StageSpec[] = [{ first: 0, last: d.L, embed: true, head: true }];
    const [only] = splitState(d, one, full);
    expect(bytesOf(mergeStageStates(d, one, [only!])).equals(bytesOf(full))).toBe(true);
  });

  it('refuses incomplete, inconsistent or misplaced slices, naming the problem', () => {
    const bad =
      (states: HymbaState[], specs: StageSpec[] = SPECS) =>
      () =>
        mergeStageStates(d, specs, states);
    expect(bad(parts.slice(1))).toThrow(/9 stage states for 10 stages/);
    const moved = parts.map((p, k) => (k === 6 ? { ...p, position: p.position + 1 } : p));
    expect(bad(moved)).toThrow(/stage 6 is at position/);
    const missing = parts.map((p, k) =>
      k === 6 ? { ...p, layers: p.layers.map((l, i) => (i === 5 ? undefined : l)) } : p,
    );
    expect(bad(missing)).toThrow(/stage 6 has no layer 5/);
    const noMirror = parts.map((p, k) =>
      k === 5 ? { ...p, layers: p.layers.map((l, i) => (i === 1 ? undefined : l)) } : p,
    );
    expect(bad(noMirror)).toThrow(/stage 5 has no mirror of layer 1/);
    const extra = parts.map((p, k) => (k === 0 ? { ...p, layers: full.layers } : p));
    expect(bad(extra)).toThrow(/stage 0 holds layer 0, not its own/);
    // two stages claiming the same layers: the whole-model spec next to the split ones
    const twice = [...SPECS, { first: 0, last: d.L, embed: true, head: true }];
    expect(bad([...parts, full], twice)).toThrow(/held by two stages/);
    // a layer nobody holds
    const gap = SPECS.filter((_, k) => k !== 6);
    expect(
      bad(
        parts.filter((_, k) => k !== 6),
        gap,
      ),
    ).toThrow(/no stage holds layer 4/);
    expect(bad([], [])).toThrow(StateFormatError);
  });
});

describe('checkWholeState', () => {
  it('accepts a whole state and rejects missing layers, mirrors and wrong K/V lengths', () => {
    const s = filledState(5);
    expect(() => checkWholeState(d, s)).not.toThrow();
    const part = splitState(d, SPECS, s)[5]!;
    expect(() => checkWholeState(d, part)).toThrow(/layer 0 is missing/);
    const withMirror = { ...s, layers: s.layers.map((l, i) => (i === 1 ? splitState(d, SPECS, s)[5]!.layers[1] : l)) };
    expect(() => checkWholeState(d, withMirror)).toThrow(/layer 1 is a mirror entry/);
    expect(() => checkWholeState(d, { ...s, position: s.position + 1 })).toThrow(/K\/V entries, expected/);
  });
});

describe('snapshot format additions', () => {
  it('another fingerprint is a StateFingerprintError (a StateFormatError) naming both', () => {
    const bytes = serializeState(d, filledState(3), 'another-model-fingerprint-42');
    let err: unknown;
    try {
      deserializeState(d, bytes, FP);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(StateFingerprintError);
    expect(err).toBeInstanceOf(StateFormatError);
    expect((err as StateFingerprintError).found).toBe('another-model-fingerprint-42');
    expect((err as Error).message).toMatch(/another-model-fingerprint-42.*fingerprint-of-the-test-model/);
  });

  it('a header listing a layer twice is rejected', () => {
    const s = filledState(3);
    // the same bytes with layer 1's entry listed twice (and layer 2's dropped) in a re-checksummed snapshot
    const bytes = serializeState(d, s, FP);
    const view = new DataView(bytes.buffer);
    const headerLen = view.getUint32(12, true);
    const header = new TextDecoder().decode(bytes.subarray(16, 16 + headerLen));
    const edited = header.replace('{"index":2,', '{"index":1,');
    expect(edited).not.toBe(header);
    expect(edited.length).toBe(header.length);
    const out = bytes.slice();
    out.set(new TextEncoder().encode(edited), 16);
    new DataView(out.buffer).setUint32(out.length - 4, crc32(out.subarray(0, out.length - 4)), true);
    expect(() => deserializeState(d, out, FP)).toThrow(/layer 1 appears twice/);
  });
});
