// Safetensors reading and writing, portable (no Node imports): all I/O goes through ByteSource / ByteSink.
//
// File layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON (padded with spaces),
// then the data section. The JSON maps tensor name -> {dtype, shape, data_offsets: [begin, end]} with
// offsets relative to the data section, plus an optional "__metadata__" object of strings.

import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from './dtype.js';

export type SafetensorsDtype = 'BF16' | 'F16' | 'F32';

export const SUPPORTED_DTYPES: readonly SafetensorsDtype[] = ['BF16', 'F16', 'F32'];

export const DTYPE_BYTES: Readonly<Record<SafetensorsDtype, number>> = { BF16: 2, F16: 2, F32: 4 };

/** The safetensors library refuses headers above 100 MB; so do we. */
export const MAX_HEADER_BYTES = 100_000_000;

/** Random-access bytes: a file, an R2 object, an in-memory buffer... */
export interface ByteSource {
  size(): Promise<number>;
  /** exactly `length` bytes starting at `offset` (reject when the source is shorter) */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** shown in error messages (a file name) */
  readonly name?: string;
  /** release what the source holds (file handle...) */
  close?(): Promise<void>;
}

/** Receives the bytes of a file in order. The chunk may be kept: the writer never reuses it. */
export type ByteSink = (chunk: Uint8Array) => Promise<void>;

/** Where one tensor lives in its file. */
export interface SafetensorsTensorInfo {
  dtype: SafetensorsDtype;
  shape: number[];
  /** absolute byte offsets of the tensor's data in the file (the header's data_offsets + dataOffset) */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  tensors: Map<string, SafetensorsTensorInfo>;
  metadata: Record<string, string>;
  /** first byte of the data section: 8 + header length */
  dataOffset: number;
  /** size of the whole file in bytes */
  size: number;
}

export class SafetensorsError extends Error {
  constructor(
    readonly file: string,
    reason: string,
  ) {
    super(`${file}: ${reason}`);
    this.name = 'SafetensorsError';
  }
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

const isDtype = (d: unknown): d is SafetensorsDtype => d === 'BF16' || d === 'F16' || d === 'F32';

const isCount = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;

const fmtShape = (s: readonly number[]): string => `[${s.join(', ')}]`;

/** At most `max` lines of a list, then how many more. */
function listLines(lines: string[], max = 20): string {
  const shown = lines.slice(0, max).map((l) => `\n  ${l}`);
  if (lines.length > max) shown.push(`\n  ... and ${lines.length - max} more`);
  return shown.join('');
}

async function readExact(src: ByteSource, file: string, offset: number, length: number): Promise<Uint8Array> {
  const bytes = await src.read(offset, length);
  if (bytes.length !== length)
    throw new SafetensorsError(file, `short read: wanted ${length} bytes at offset ${offset}, got ${bytes.length}`);
  return bytes;
}

/** Read and validate the header: only the first 8 + N bytes of the file are read. */
export async function parseSafetensorsHeader(src: ByteSource): Promise<SafetensorsHeader> {
  const file = src.name ?? 'safetensors file';
  const fail = (reason: string): never => {
    throw new SafetensorsError(file, reason);
  };
  const size = await src.size();
  if (size < 8) fail(`only ${size} bytes, too short for a safetensors header (truncated, or not a safetensors file)`);
  const lenBytes = await readExact(src, file, 0, 8);
  const dv = new DataView(lenBytes.buffer, lenBytes.byteOffset, 8);
  const lo = dv.getUint32(0, true);
  const hi = dv.getUint32(4, true);
  const headerLen = hi * 2 ** 32 + lo;
  if (hi !== 0 || headerLen > MAX_HEADER_BYTES || headerLen < 2)
    fail(
      `header length ${headerLen} is not sane (expected 2..${MAX_HEADER_BYTES}): not a safetensors file, or a corrupt one`,
    );
  if (8 + headerLen > size)
    fail(`header length ${headerLen} runs past the end of the file (${size} bytes): the file is truncated or corrupt`);
  const dataOffset = 8 + headerLen;
  const headerBytes = await readExact(src, file, 8, headerLen);
  let text = '';
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    fail('header is not valid UTF-8: not a safetensors file, or a corrupt one');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    fail(`header is not valid JSON (${(e as Error).message}): not a safetensors file, or a corrupt one`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) fail('header JSON is not an object');

  const dataSize = size - dataOffset;
  const tensors = new Map<string, SafetensorsTensorInfo>();
  let metadata: Record<string, string> = {};
  const problems: string[] = [];
  const unsupported: string[] = [];
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (
        typeof entry !== 'object' ||
        entry === null ||
        Array.isArray(entry) ||
        !Object.values(entry).every((v) => typeof v === 'string')
      )
        problems.push('__metadata__ must be an object of strings');
      else metadata = entry as Record<string, string>;
      continue;
    }
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
      problems.push(`${name}: entry is not an object`);
      continue;
    }
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      problems.push(`${name}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
      continue;
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0]! > offsets[1]!) {
      problems.push(`${name}: data_offsets ${JSON.stringify(offsets)} is not [begin, end] with begin <= end`);
      continue;
    }
    if (!isDtype(dtype)) {
      unsupported.push(`${name} (${typeof dtype === 'string' ? dtype : JSON.stringify(dtype)})`);
      continue;
    }
    const [b, e] = offsets as [number, number];
    const want = numel(shape) * DTYPE_BYTES[dtype];
    if (e - b !== want)
      problems.push(
        `${name}: ${dtype} ${fmtShape(shape)} needs ${want} bytes, data_offsets [${b}, ${e}] hold ${e - b}`,
      );
    else if (e > dataSize)
      problems.push(
        `${name}: data ends at byte ${dataOffset + e}, past the end of the file (${size} bytes): the file is truncated`,
      );
    else tensors.set(name, { dtype, shape: shape.slice(), begin: dataOffset + b, end: dataOffset + e });
  }
  if (unsupported.length > 0)
    problems.unshift(
      `unsupported dtype (supported: ${SUPPORTED_DTYPES.join(', ')}) in ${unsupported.length} tensor(s):${listLines(unsupported)}`,
    );
  if (problems.length === 0) {
    // tensors must not overlap (empty tensors may sit anywhere)
    const spans = [...tensors.entries()].filter(([, t]) => t.end > t.begin).sort((x, y) => x[1].begin - y[1].begin);
    for (let i = 1; i < spans.length; i++) {
      const [pn, p] = spans[i - 1]!;
      const [cn, c] = spans[i]!;
      if (c.begin < p.end) problems.push(`${cn} overlaps ${pn} (bytes ${c.begin} < ${p.end})`);
    }
  }
  if (problems.length > 0) fail(`invalid header:${listLines(problems)}`);
  return { tensors, metadata, dataOffset, size };
}

/** Bytes read per request when widening a tensor: bounds the extra memory to one chunk. */
const READ_CHUNK_BYTES = 16 << 20;

/** The raw little-endian bytes of one tensor. */
export async function readTensorBytes(src: ByteSource, info: SafetensorsTensorInfo): Promise<Uint8Array> {
  return readExact(src, src.name ?? 'safetensors file', info.begin, info.end - info.begin);
}

/** One tensor widened to fp32, reading only its bytes (in chunks, never the whole file). */
export async function readTensorF32(src: ByteSource, info: SafetensorsTensorInfo): Promise<Float32Array> {
  const file = src.name ?? 'safetensors file';
  const width = DTYPE_BYTES[info.dtype];
  const n = numel(info.shape);
  if (info.end - info.begin !== n * width)
    throw new SafetensorsError(
      file,
      `tensor spans ${info.end - info.begin} bytes, ${info.dtype} ${fmtShape(info.shape)} needs ${n * width}`,
    );
  const out = new Float32Array(n);
  const perChunk = Math.floor(READ_CHUNK_BYTES / width);
  for (let i = 0; i < n; i += perChunk) {
    const count = Math.min(perChunk, n - i);
    const bytes = await readExact(src, file, info.begin + i * width, count * width);
    if (info.dtype === 'F32') {
      new Uint8Array(out.buffer, i * 4, count * 4).set(bytes);
      continue;
    }
    // a Uint16Array view needs an even byte offset; copy otherwise
    const aligned = bytes.byteOffset % 2 === 0 ? bytes : bytes.slice();
    const half = new Uint16Array(aligned.buffer, aligned.byteOffset, count);
    const dst = out.subarray(i, i + count);
    if (info.dtype === 'BF16') bf16ToF32(half, dst);
    else f16ToF32(half, dst);
  }
  return out;
}

// ---------------------------------------------------------------- writing

export interface TensorSpec {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
}

export interface SafetensorsLayout {
  /** the first bytes of the file: length prefix + padded header JSON */
  header: Uint8Array;
  /** tensors in file order, offsets relative to the data section (as in the header) */
  entries: (TensorSpec & { begin: number; end: number })[];
  /** size of the whole file */
  totalBytes: number;
}

const DTYPE_ORDER: Record<SafetensorsDtype, number> = { F32: 0, BF16: 1, F16: 2 };

/**
 * Header and offsets for a file holding `specs`. With `sort` (the default) tensors are ordered as the
 * safetensors library orders them (by dtype, widest first, then by name); otherwise in the given order.
 */
export function safetensorsLayout(
  specs: readonly TensorSpec[],
  metadata: Record<string, string> | null = { format: 'pt' },
  sort = true,
): SafetensorsLayout {
  const seen = new Set<string>();
  for (const s of specs) {
    if (s.name === '__metadata__') throw new Error('a tensor cannot be named __metadata__');
    if (seen.has(s.name)) throw new Error(`tensor ${s.name} is listed twice`);
    seen.add(s.name);
    if (!isDtype(s.dtype)) throw new Error(`tensor ${s.name}: unsupported dtype ${String(s.dtype)}`);
    if (!s.shape.every(isCount)) throw new Error(`tensor ${s.name}: bad shape ${JSON.stringify(s.shape)}`);
  }
  const ordered = sort
    ? [...specs].sort(
        (a, b) => DTYPE_ORDER[a.dtype] - DTYPE_ORDER[b.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0),
      )
    : [...specs];
  const entries: SafetensorsLayout['entries'] = [];
  const json: Record<string, unknown> = {};
  if (metadata !== null) json.__metadata__ = metadata;
  let offset = 0;
  for (const s of ordered) {
    const bytes = numel(s.shape) * DTYPE_BYTES[s.dtype];
    const entry = { name: s.name, dtype: s.dtype, shape: s.shape.slice(), begin: offset, end: offset + bytes };
    entries.push(entry);
    json[s.name] = { dtype: s.dtype, shape: entry.shape, data_offsets: [entry.begin, entry.end] };
    offset += bytes;
  }
  const text = new TextEncoder().encode(JSON.stringify(json));
  const padded = Math.ceil(text.length / 8) * 8;
  const header = new Uint8Array(8 + padded).fill(0x20, 8 + text.length);
  const dv = new DataView(header.buffer);
  dv.setUint32(0, padded % 2 ** 32, true);
  dv.setUint32(4, Math.floor(padded / 2 ** 32), true);
  header.set(text, 8);
  return { header, entries, totalBytes: header.length + offset };
}

/** Values converted per sink call. */
const WRITE_CHUNK_ELEMS = 1 << 22;

/**
 * Streams a safetensors file to a sink: the tensor list is fixed up front (so the header goes first),
 * then each tensor's data is written in file order (`order`), one at a time, converted to its dtype.
 * Only one chunk of converted data is alive at a time.
 */
export class SafetensorsWriter {
  readonly layout: SafetensorsLayout;
  private next = 0;
  private headerWritten = false;
  private busy = false;
  private failed = false;

  constructor(
    specs: readonly TensorSpec[],
    private readonly sink: ByteSink,
    options: { metadata?: Record<string, string> | null; sort?: boolean } = {},
  ) {
    this.layout = safetensorsLayout(
      specs,
      options.metadata === undefined ? { format: 'pt' } : options.metadata,
      options.sort ?? true,
    );
  }

  /** Tensor names in the order `write` must be called. */
  get order(): string[] {
    return this.layout.entries.map((e) => e.name);
  }

  /** Name of the next tensor to write, or null when all are written. */
  get pending(): string | null {
    return this.layout.entries[this.next]?.name ?? null;
  }

  /** Check the call and mark the writer busy (the caller clears it). */
  private begin(name: string, count: number | null, byteLength: number | null): TensorSpec {
    if (this.failed) throw new Error('SafetensorsWriter: an earlier write failed; the output is incomplete');
    if (this.busy) throw new Error('SafetensorsWriter: await each write before starting the next');
    const entry = this.layout.entries[this.next];
    if (entry === undefined) throw new Error(`SafetensorsWriter: ${name} written after the last tensor`);
    if (entry.name !== name) throw new Error(`SafetensorsWriter: expected tensor ${entry.name} next, got ${name}`);
    const n = numel(entry.shape);
    if (count !== null && count !== n)
      throw new Error(`SafetensorsWriter: ${name} ${fmtShape(entry.shape)} needs ${n} values, got ${count}`);
    if (byteLength !== null && byteLength !== entry.end - entry.begin)
      throw new Error(`SafetensorsWriter: ${name} needs ${entry.end - entry.begin} bytes, got ${byteLength}`);
    this.busy = true;
    return entry;
  }

  /** Run one write: header first if still due; a failure leaves the writer unusable (the sink has a partial file). */
  private async run(body: () => Promise<void>): Promise<void> {
    try {
      if (!this.headerWritten) {
        this.headerWritten = true;
        await this.sink(this.layout.header.slice());
      }
      await body();
      this.next++;
    } catch (e) {
      this.failed = true;
      throw e;
    } finally {
      this.busy = false;
    }
  }

  /** Write the next tensor from fp32 values, converted to its dtype (round to nearest even). */
  async write(name: string, data: Float32Array): Promise<void> {
    const entry = this.begin(name, data.length, null);
    await this.run(async () => {
      for (let i = 0; i < data.length; i += WRITE_CHUNK_ELEMS) {
        const part = data.subarray(i, Math.min(data.length, i + WRITE_CHUNK_ELEMS));
        let bytes: Uint8Array;
        if (entry.dtype === 'F32') bytes = new Uint8Array(part.buffer, part.byteOffset, part.byteLength).slice();
        else {
          const half = entry.dtype === 'BF16' ? f32ToBf16(part) : f32ToF16(part);
          bytes = new Uint8Array(half.buffer, half.byteOffset, half.byteLength);
        }
        await this.sink(bytes);
      }
    });
  }

  /** Write the next tensor from bytes already in its dtype (little-endian). */
  async writeBytes(name: string, bytes: Uint8Array): Promise<void> {
    this.begin(name, null, bytes.length);
    await this.run(async () => {
      if (bytes.length > 0) await this.sink(bytes.slice());
    });
  }

  /** Check every tensor was written (writes the header of a file without tensors). */
  async finish(): Promise<void> {
    if (this.failed) throw new Error('SafetensorsWriter: an earlier write failed; the output is incomplete');
    if (this.busy) throw new Error('SafetensorsWriter: finish() while a write is in flight');
    const left = this.layout.entries.slice(this.next).map((e) => e.name);
    if (left.length > 0) throw new Error(`SafetensorsWriter: ${left.length} tensor(s) not written:${listLines(left)}`);
    if (!this.headerWritten) {
      this.headerWritten = true;
      await this.sink(this.layout.header.slice());
    }
  }
}
