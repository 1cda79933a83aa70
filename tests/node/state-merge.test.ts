// Whole-model states from per-stage slices and back (the session handoff, docs/serving.md): mergeStageStates,
// splitState and checkWholeState, on the tiny model's layout split every way a stage can split it.

import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../engine/model/config.js';
import { crc32 } from '../../engine/state/crc32.js';
import type { StageSpec } from '../../engine/stages/stage-spec.js';
import {
  emptyState,
  holdsMixer,
  isMirror,
  kvEntries,
  type HymbaState,
  type LayerState,
} from '../../engine/state/state.js';
import {
  deserializeState,
  serializeState,
  STATE_FORMAT_VERSION,
  StateFingerprintError,
  StateFormatError,
} from '../../engine/state/codec.js';
import { f32ToF16 } from '../../engine/convert/dtype.js';
import { checkWholeState, mergeStageStates, splitState } from '../../engine/state/merge.js';
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
  const position = d.M + tokens;
  let x = 1;
  const fill = (n: number): Float32Array =>
    Float32Array.from({ length: n }, () => (x = (x * 48271) % 2147483647) / 1e9);
  const layers = emptyState(d).layers.map((l, i): LayerState | undefined => {
    if (!l || !holdsMixer(l)) return l;
    const mixer = { conv: fill(l.conv.length), ssm: fill(l.ssm.length) };
    if (l.kind === 'consumer') return { kind: 'consumer', ...mixer };
    const kvLen = kvEntries(d, i, position);
    return {
      kind: 'producer',
      ...mixer,
      key: fill(d.kvHeads * kvLen * d.dqk),
      value: fill(d.kvHeads * kvLen * d.dv),
      kvLen,
    };
  });
  return { position, layers };
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

// ---- format versions ----

/** The entry as version-1 code held it: a mirror had empty conv/SSM, a consumer null K/V. */
interface LayerStateV1 {
  conv: Float32Array;
  ssm: Float32Array;
  key: Float32Array | null;
  value: Float32Array | null;
  kvLen: number;
}

function toV1(l: LayerState): LayerStateV1 {
  const none = new Float32Array(0);
  if (l.kind === 'consumer') return { conv: l.conv, ssm: l.ssm, key: null, value: null, kvLen: 0 };
  if (l.kind === 'mirror') return { conv: none, ssm: none, key: l.key, value: l.value, kvLen: l.kvLen };
  return { conv: l.conv, ssm: l.ssm, key: l.key, value: l.value, kvLen: l.kvLen };
}

/** serializeState as version 1 wrote snapshots (engine/state.ts before the kinds were explicit), verbatim. */
function serializeV1(s: HymbaState, fingerprint: string, kvDtype: 'f32' | 'f16' = 'f32'): Uint8Array {
  const align4 = (n: number): number => Math.ceil(n / 4) * 4;
  const isMirrorV1 = (l: LayerStateV1): boolean => l.conv.length === 0 && l.key !== null;
  const present = s.layers.flatMap((l, index) => (l ? [{ index, l: toV1(l) }] : []));
  const header = {
    fingerprint,
    position: s.position,
    kvDtype,
    dims: { dIn: d.dIn, dState: d.dState, dConv: d.dConv, kvHeads: d.kvHeads, dqk: d.dqk, dv: d.dv },
    layers: present.map(({ index, l }) =>
      isMirrorV1(l) ? { index, kvLen: l.kvLen, kvOnly: true } : { index, kvLen: l.kvLen },
    ),
  };
  const headerBytes = new TextEncoder().encode(JSON.stringify(header));
  const parts: Uint8Array[] = [];
  const asBytes = (a: Float32Array | Uint16Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  for (const { l } of present) {
    parts.push(asBytes(l.conv), asBytes(l.ssm));
    for (const kv of [l.key, l.value]) if (kv) parts.push(asBytes(kvDtype === 'f16' ? f32ToF16(kv) : kv));
  }
  const start = align4(16 + headerBytes.length);
  const total = start + parts.reduce((n, p) => n + align4(p.length), 0) + 4;
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  out.set(new TextEncoder().encode('HYMBASTA'), 0);
  view.setUint32(8, 1, true);
  view.setUint32(12, headerBytes.length, true);
  out.set(headerBytes, 16);
  let o = start;
  for (const p of parts) {
    out.set(p, o);
    o += align4(p.length);
  }
  view.setUint32(o, crc32(out.subarray(0, o)), true);
  return out;
}

const versionOf = (bytes: Uint8Array): number => new DataView(bytes.buffer, bytes.byteOffset).getUint32(8, true);
const headerOf = (bytes: Uint8Array): { layers: Record<string, unknown>[] } => {
  const len = new DataView(bytes.buffer, bytes.byteOffset).getUint32(12, true);
  return JSON.parse(new TextDecoder().decode(bytes.subarray(16, 16 + len))) as { layers: Record<string, unknown>[] };
};

/** The snapshot with its header replaced by `edit(header)`, tensors kept, re-padded and re-checksummed. */
function withHeader(bytes: Uint8Array, edit: (h: { layers: Record<string, unknown>[] }) => unknown, version = 2) {
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  const oldLen = view.getUint32(12, true);
  const tensors = bytes.subarray(Math.ceil((16 + oldLen) / 4) * 4, bytes.length - 4);
  const header = new TextEncoder().encode(JSON.stringify(edit(headerOf(bytes))));
  const start = Math.ceil((16 + header.length) / 4) * 4;
  const out = new Uint8Array(start + tensors.length + 4);
  const v = new DataView(out.buffer);
  out.set(bytes.subarray(0, 8), 0);
  v.setUint32(8, version, true);
  v.setUint32(12, header.length, true);
  out.set(header, 16);
  out.set(tensors, start);
  v.setUint32(out.length - 4, crc32(out.subarray(0, out.length - 4)), true);
  return out;
}

describe('snapshot format versions', () => {
  const full = filledState(37);
  const parts = splitState(d, SPECS, full);

  it('version 2 names each entry kind in the header', () => {
    const bytes = serializeState(d, parts[5]!, FP);
    expect(versionOf(bytes)).toBe(STATE_FORMAT_VERSION);
    expect(STATE_FORMAT_VERSION).toBe(2);
    expect(headerOf(bytes).layers).toEqual([
      { index: 1, kind: 'mirror', kvLen: kvEntries(d, 1, full.position) },
      { index: 2, kind: 'consumer' },
      { index: 3, kind: 'consumer' },
    ]);
    const kinds = headerOf(serializeState(d, full, FP)).layers.map((e) => e.kind);
    expect(kinds).toEqual(d.layers.map((l) => l.kv.kind));
  });

  it('reads version 1 snapshots (whole, per stage with mirrors, f16 K/V) as the same states', () => {
    for (const s of [full, ...parts, filledState(3)]) {
      const v1 = serializeV1(s, FP);
      expect(versionOf(v1)).toBe(1);
      const back = deserializeState(d, Buffer.from(v1), FP);
      expect(back).toEqual(s);
      expect(bytesOf(back).equals(bytesOf(s))).toBe(true);
    }
    const f16 = deserializeState(d, serializeV1(full, FP, 'f16'), FP);
    expect(f16).toEqual(deserializeState(d, serializeState(d, full, FP, 'f16'), FP));
    // the oldest version-1 snapshots had no kvOnly field (nor mirrors): the kinds come from the config
    expect(headerOf(serializeV1(full, FP)).layers.some((e) => 'kvOnly' in e)).toBe(false);
    expect(
      mergeStageStates(
        d,
        SPECS,
        parts.map((p) => deserializeState(d, serializeV1(p, FP), FP)),
      ),
    ).toEqual(full);
  });

  it('refuses version 1 snapshots of another model or with a flipped byte, as version 2 ones', () => {
    expect(() => deserializeState(d, serializeV1(full, 'another-model'), FP)).toThrow(StateFingerprintError);
    const bad = serializeV1(full, FP);
    bad[bad.length >> 1]! ^= 0x40;
    expect(() => deserializeState(d, bad, FP)).toThrow(/checksum mismatch/);
    const mirrorOfConsumer = withHeader(
      serializeV1(parts[5]!, FP),
      (h) => ({ ...h, layers: h.layers.map((e) => (e.index === 2 ? { ...e, kvOnly: true } : e)) }),
      1,
    );
    expect(() => deserializeState(d, mirrorOfConsumer, FP)).toThrow(/layer 2 is no KV producer and cannot be mirrored/);
  });

  it('refuses a header whose kinds disagree with the model, and unknown versions', () => {
    const bytes = serializeState(d, full, FP);
    const kindOf = (index: number, kind: string) =>
      withHeader(bytes, (h) => ({ ...h, layers: h.layers.map((e) => (e.index === index ? { ...e, kind } : e)) }));
    expect(() => deserializeState(d, kindOf(0, 'consumer'), FP)).toThrow(/layer 0 is a producer, not a consumer/);
    expect(() => deserializeState(d, kindOf(2, 'producer'), FP)).toThrow(/layer 2 is a consumer, not a producer/);
    expect(() => deserializeState(d, kindOf(2, 'mirror'), FP)).toThrow(/layer 2 is no KV producer/);
    expect(() => deserializeState(d, kindOf(0, 'something'), FP)).toThrow(StateFormatError);
    expect(
      deserializeState(
        d,
        withHeader(bytes, (h) => h),
        FP,
      ),
    ).toEqual(full);
    expect(() =>
      deserializeState(
        d,
        withHeader(bytes, (h) => h, 3),
        FP,
      ),
    ).toThrow(/format version 3 is not supported/);
  });
});
