// Safetensors writing, portable (no Node imports): the layout of a file from its tensor list, and a writer
// that streams the header and then each tensor's data to a ByteSink.

import { f32ToBf16, f32ToF16 } from './dtype.js';
import { DTYPE_BYTES, fmtShape, isCount, isDtype, listLines, numel, type SafetensorsDtype } from './safetensors.js';

/** Receives the bytes of a file in order. The chunk may be kept: the writer never reuses it. */
export type ByteSink = (chunk: Uint8Array) => Promise<void>;

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
