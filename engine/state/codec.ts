// The binary snapshot of a state (whole or one stage's share), as sessions and stages store it in SQLite:
// "HYMBASTA" | u32 version | u32 header length | header JSON | pad to 4 | tensors | u32 CRC-32 of all before.
// Per entry, in header order, its tensors: conv and SSM (f32) if it holds a mixer, then key and value (f32 or
// f16) if it holds K/V. Version 2 names each entry's kind in the header; version 1 (still read) left it to the
// config plus a `kvOnly` flag on mirrors.

import type { HymbaDims } from '../model/config.js';
import { crc32 } from './crc32.js';
import { f16ToF32, f32ToF16 } from '../convert/dtype.js';
import {
  holdsKv,
  holdsMixer,
  kvEntries,
  mixerKind,
  type HymbaState,
  type LayerKind,
  type LayerState,
} from './state.js';

const MAGIC = 'HYMBASTA';
/** 2: each header entry names its kind. */
export const STATE_FORMAT_VERSION = 2;

export class StateFormatError extends Error {
  constructor(message: string) {
    super(`state snapshot rejected: ${message}`);
    this.name = 'StateFormatError';
  }
}

/** A well-formed snapshot of another model (its header names another fingerprint). */
export class StateFingerprintError extends StateFormatError {
  constructor(
    readonly found: string,
    readonly expected: string,
  ) {
    super(`it belongs to model ${found}, not ${expected}`);
    this.name = 'StateFingerprintError';
  }
}

type KvDtype = 'f32' | 'f16';

interface SnapshotHeader {
  fingerprint: string;
  position: number;
  kvDtype: KvDtype;
  dims: { dIn: number; dState: number; dConv: number; kvHeads: number; dqk: number; dv: number };
  layers: HeaderEntry[];
}

/** Version 2: the kind is explicit; kvLen only where the entry holds K/V. */
type HeaderEntry = { index: number; kind: LayerKind; kvLen?: number };
/** Version 1: the kind came from the config; kvOnly marked a mirror (absent in the oldest snapshots). */
type HeaderEntryV1 = { index: number; kvLen: number; kvOnly?: true };

const shapeOf = (d: HymbaDims): SnapshotHeader['dims'] => ({
  dIn: d.dIn,
  dState: d.dState,
  dConv: d.dConv,
  kvHeads: d.kvHeads,
  dqk: d.dqk,
  dv: d.dv,
});

const align4 = (n: number): number => Math.ceil(n / 4) * 4;
const asBytes = (a: Float32Array | Uint16Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** The snapshot (current version) of a whole state or a stage's share; f16 K/V halve it but are lossy. */
export function serializeState(d: HymbaDims, s: HymbaState, fingerprint: string, kvDtype: KvDtype = 'f32'): Uint8Array {
  const present = s.layers.flatMap((l, index) => (l ? [{ index, l }] : []));
  const header: SnapshotHeader = {
    fingerprint,
    position: s.position,
    kvDtype,
    dims: shapeOf(d),
    layers: present.map(({ index, l }) =>
      holdsKv(l) ? { index, kind: l.kind, kvLen: l.kvLen } : { index, kind: l.kind },
    ),
  };
  const headerBytes = new TextEncoder().encode(JSON.stringify(header));
  const parts: Uint8Array[] = [];
  for (const { l } of present) {
    if (holdsMixer(l)) parts.push(asBytes(l.conv), asBytes(l.ssm));
    if (holdsKv(l)) for (const kv of [l.key, l.value]) parts.push(asBytes(kvDtype === 'f16' ? f32ToF16(kv) : kv));
  }
  const start = align4(16 + headerBytes.length);
  const total = start + parts.reduce((n, p) => n + align4(p.length), 0) + 4;
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  out.set(new TextEncoder().encode(MAGIC), 0);
  view.setUint32(8, STATE_FORMAT_VERSION, true);
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

/**
 * The state in a snapshot of model `fingerprint` (version 1 or 2). Throws StateFingerprintError for another
 * model's snapshot and StateFormatError for anything else wrong: magic, version, checksum, layout, sizes.
 */
export function deserializeState(d: HymbaDims, bytes: Uint8Array, fingerprint: string): HymbaState {
  const { version, header, tensors, end } = readEnvelope(bytes);
  if (header.fingerprint !== fingerprint) throw new StateFingerprintError(String(header.fingerprint), fingerprint);
  if (JSON.stringify(header.dims) !== JSON.stringify(shapeOf(d))) throw new StateFormatError('layout differs');
  if (!Array.isArray(header.layers)) throw new StateFormatError('unreadable header');
  const state: HymbaState = { position: header.position, layers: new Array(d.L) };
  const reader = new TensorReader(bytes, tensors, end);
  for (const raw of header.layers) {
    const entry = version === 1 ? fromV1(d, raw as unknown as HeaderEntryV1) : raw;
    if (state.layers[entry.index]) throw new StateFormatError(`layer ${entry.index} appears twice`);
    state.layers[entry.index] = readLayer(d, header, entry, reader);
  }
  if (reader.offset !== end) throw new StateFormatError('trailing bytes after the tensors');
  return state;
}

/** Magic, version, checksum and the parsed header; `tensors` is where the tensor data starts. */
function readEnvelope(bytes: Uint8Array): { version: number; header: SnapshotHeader; tensors: number; end: number } {
  if (bytes.length < 20) throw new StateFormatError(`${bytes.length} bytes is too short`);
  if (new TextDecoder().decode(bytes.subarray(0, 8)) !== MAGIC) throw new StateFormatError('bad magic');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(8, true);
  if (version !== 1 && version !== STATE_FORMAT_VERSION)
    throw new StateFormatError(`format version ${version} is not supported`);
  const end = bytes.length - 4;
  if (crc32(bytes.subarray(0, end)) !== view.getUint32(end, true)) throw new StateFormatError('checksum mismatch');
  const headerLen = view.getUint32(12, true);
  let header: SnapshotHeader;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(16, 16 + headerLen))) as SnapshotHeader;
  } catch {
    throw new StateFormatError('unreadable header');
  }
  return { version, header, tensors: align4(16 + headerLen), end };
}

/** A version-1 entry's kind, as version-1 readers inferred it. */
function fromV1(d: HymbaDims, e: HeaderEntryV1): HeaderEntry {
  const known = Number.isInteger(e.index) && e.index >= 0 && e.index < d.L;
  const kind: LayerKind = e.kvOnly ? 'mirror' : known ? mixerKind(d, e.index) : 'consumer';
  return { index: e.index, kind, kvLen: e.kvLen };
}

/** One entry's tensors, checked against the model: its kind, and the K/V entries its position implies. */
function readLayer(d: HymbaDims, header: SnapshotHeader, e: HeaderEntry, reader: TensorReader): LayerState {
  const { index, kind } = e;
  if (!(Number.isInteger(index) && index >= 0 && index < d.L))
    throw new StateFormatError(`layer ${index} is outside the model`);
  const own = mixerKind(d, index);
  if (kind === 'mirror' && own !== 'producer')
    throw new StateFormatError(`layer ${index} is no KV producer and cannot be mirrored`);
  if (kind !== 'mirror' && kind !== own)
    throw new StateFormatError(`layer ${index} is a ${own}, not a ${String(kind)}`);
  const expected = kvEntries(d, index, header.position);
  if (kind !== 'consumer' && e.kvLen !== expected)
    throw new StateFormatError(`layer ${index} holds ${e.kvLen} K/V entries, expected ${expected}`);
  const mixer = (): { conv: Float32Array; ssm: Float32Array } => ({
    conv: reader.take((d.dConv - 1) * d.dIn, 'f32'),
    ssm: reader.take(d.dIn * d.dState, 'f32'),
  });
  const cache = (): { key: Float32Array; value: Float32Array; kvLen: number } => ({
    key: reader.take(d.kvHeads * expected * d.dqk, header.kvDtype),
    value: reader.take(d.kvHeads * expected * d.dv, header.kvDtype),
    kvLen: expected,
  });
  if (kind === 'consumer') return { kind, ...mixer() };
  if (kind === 'mirror') return { kind, ...cache() };
  const m = mixer(); // conv and SSM come before the cache
  return { kind, ...m, ...cache() };
}

/** Reads the tensors one after another, each 4-byte aligned, as fresh aligned f32 arrays. */
class TensorReader {
  constructor(
    private readonly bytes: Uint8Array,
    public offset: number,
    private readonly end: number,
  ) {}

  take(count: number, dtype: KvDtype): Float32Array {
    const n = count * (dtype === 'f32' ? 4 : 2);
    if (this.offset + n > this.end) throw new StateFormatError('truncated tensor data');
    const copy = new Uint8Array(this.bytes.subarray(this.offset, this.offset + n)); // a Node Buffer's slice is a view
    this.offset += align4(n);
    return dtype === 'f32' ? new Float32Array(copy.buffer) : f16ToF32(new Uint16Array(copy.buffer));
  }
}
