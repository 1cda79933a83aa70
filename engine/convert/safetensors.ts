// Safetensors reading, portable (no Node imports): all I/O goes through ByteSource. Writing, through a
// ByteSink, is in safetensors-writer.ts; the format's types and checks shared by both live here.
//
// File layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON (padded with spaces),
// then the data section. The JSON maps tensor name -> {dtype, shape, data_offsets: [begin, end]} with
// offsets relative to the data section, plus an optional "__metadata__" object of strings.

import { bf16ToF32, f16ToF32 } from './dtype.js';

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

export const isDtype = (d: unknown): d is SafetensorsDtype => d === 'BF16' || d === 'F16' || d === 'F32';

export const isCount = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;

export const fmtShape = (s: readonly number[]): string => `[${s.join(', ')}]`;

/** At most `max` lines of a list, then how many more. */
export function listLines(lines: string[], max = 20): string {
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
  const size = await src.size();
  const headerLen = await readHeaderLength(src, file, size);
  const dataOffset = 8 + headerLen;
  const json = parseHeaderJson(file, await readExact(src, file, 8, headerLen));
  const { tensors, metadata, problems } = checkHeaderEntries(json, dataOffset, size);
  if (problems.length > 0) throw new SafetensorsError(file, `invalid header:${listLines(problems)}`);
  return { tensors, metadata, dataOffset, size };
}

/** The 8-byte little-endian length prefix, checked against sanity and the file's size. */
async function readHeaderLength(src: ByteSource, file: string, size: number): Promise<number> {
  if (size < 8)
    throw new SafetensorsError(
      file,
      `only ${size} bytes, too short for a safetensors header (truncated, or not a safetensors file)`,
    );
  const lenBytes = await readExact(src, file, 0, 8);
  const dv = new DataView(lenBytes.buffer, lenBytes.byteOffset, 8);
  const lo = dv.getUint32(0, true);
  const hi = dv.getUint32(4, true);
  const headerLen = hi * 2 ** 32 + lo;
  if (hi !== 0 || headerLen > MAX_HEADER_BYTES || headerLen < 2)
    throw new SafetensorsError(
      file,
      `header length ${headerLen} is not sane (expected 2..${MAX_HEADER_BYTES}): not a safetensors file, or a corrupt one`,
    );
  if (8 + headerLen > size)
    throw new SafetensorsError(
      file,
      `header length ${headerLen} runs past the end of the file (${size} bytes): the file is truncated or corrupt`,
    );
  return headerLen;
}

/** The header bytes as a JSON object (strict UTF-8, then JSON). */
function parseHeaderJson(file: string, headerBytes: Uint8Array): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw new SafetensorsError(file, 'header is not valid UTF-8: not a safetensors file, or a corrupt one');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError(
      file,
      `header is not valid JSON (${(e as Error).message}): not a safetensors file, or a corrupt one`,
    );
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    throw new SafetensorsError(file, 'header JSON is not an object');
  return json as Record<string, unknown>;
}

/** What the header says of one tensor: where it lives, or why it cannot be read. */
type EntryCheck =
  | { kind: 'tensor'; info: SafetensorsTensorInfo }
  | { kind: 'problem'; reason: string }
  | { kind: 'unsupported'; dtype: string };

/**
 * Every entry of the header checked, collecting all problems (not just the first): unsupported dtypes
 * first, as one item, then the other problems in header order; overlaps only when all entries are sound.
 */
function checkHeaderEntries(
  json: Record<string, unknown>,
  dataOffset: number,
  size: number,
): { tensors: Map<string, SafetensorsTensorInfo>; metadata: Record<string, string>; problems: string[] } {
  const tensors = new Map<string, SafetensorsTensorInfo>();
  let metadata: Record<string, string> = {};
  const problems: string[] = [];
  const unsupported: string[] = [];
  for (const [name, entry] of Object.entries(json)) {
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
    const check = checkTensorEntry(name, entry, dataOffset, size);
    if (check.kind === 'tensor') tensors.set(name, check.info);
    else if (check.kind === 'problem') problems.push(check.reason);
    else unsupported.push(`${name} (${check.dtype})`);
  }
  if (unsupported.length > 0)
    problems.unshift(
      `unsupported dtype (supported: ${SUPPORTED_DTYPES.join(', ')}) in ${unsupported.length} tensor(s):${listLines(unsupported)}`,
    );
  if (problems.length === 0) problems.push(...overlapProblems(tensors));
  return { tensors, metadata, problems };
}

/** One tensor entry: shape, data_offsets and dtype well-formed, its byte span the right size and inside the file. */
function checkTensorEntry(name: string, entry: unknown, dataOffset: number, size: number): EntryCheck {
  const problem = (reason: string): EntryCheck => ({ kind: 'problem', reason: `${name}: ${reason}` });
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) return problem('entry is not an object');
  const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
  if (!Array.isArray(shape) || !shape.every(isCount))
    return problem(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[0]! > offsets[1]!)
    return problem(`data_offsets ${JSON.stringify(offsets)} is not [begin, end] with begin <= end`);
  if (!isDtype(dtype)) return { kind: 'unsupported', dtype: typeof dtype === 'string' ? dtype : JSON.stringify(dtype) };
  const [b, e] = offsets as [number, number];
  const want = numel(shape) * DTYPE_BYTES[dtype];
  if (e - b !== want)
    return problem(`${dtype} ${fmtShape(shape)} needs ${want} bytes, data_offsets [${b}, ${e}] hold ${e - b}`);
  if (e > size - dataOffset)
    return problem(
      `data ends at byte ${dataOffset + e}, past the end of the file (${size} bytes): the file is truncated`,
    );
  return { kind: 'tensor', info: { dtype, shape: shape.slice(), begin: dataOffset + b, end: dataOffset + e } };
}

/** Tensors must not overlap (empty tensors may sit anywhere). */
function overlapProblems(tensors: ReadonlyMap<string, SafetensorsTensorInfo>): string[] {
  const problems: string[] = [];
  const spans = [...tensors.entries()].filter(([, t]) => t.end > t.begin).sort((x, y) => x[1].begin - y[1].begin);
  for (let i = 1; i < spans.length; i++) {
    const [pn, p] = spans[i - 1]!;
    const [cn, c] = spans[i]!;
    if (c.begin < p.end) problems.push(`${cn} overlaps ${pn} (bytes ${c.begin} < ${p.end})`);
  }
  return problems;
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
