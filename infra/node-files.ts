// Node file-system adapters for the portable engine I/O interfaces (ByteSource, CheckpointSource, ByteSink).

import { open, readFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { CheckpointSource } from '../engine/convert/checkpoint.js';
import type { ByteSource } from '../engine/convert/safetensors.js';

export interface FileByteSource extends ByteSource {
  readonly name: string;
  close(): Promise<void>;
}

const isNotFound = (e: unknown): boolean => (e as NodeJS.ErrnoException | null)?.code === 'ENOENT';

/** Positional reads from one file. The file is opened on first use and stays open until close(). */
export function fileByteSource(path: string, handle?: FileHandle): FileByteSource {
  let fh: Promise<FileHandle> | null = handle === undefined ? null : Promise.resolve(handle);
  let closed = false;
  const get = (): Promise<FileHandle> => {
    if (closed) return Promise.reject(new Error(`${path}: read after close()`));
    fh ??= open(path, 'r');
    return fh;
  };
  return {
    name: path,
    async size() {
      return (await (await get()).stat()).size;
    },
    async read(offset, length) {
      if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0)
        throw new RangeError(`${path}: bad read of ${length} bytes at ${offset}`);
      const f = await get();
      const out = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        // reads may come back short; one call moves at most 2 GiB
        const { bytesRead } = await f.read(out, done, Math.min(length - done, 1 << 30), offset + done);
        if (bytesRead === 0)
          throw new Error(
            `${path}: unexpected end of file: wanted ${length} bytes at ${offset}, file ends after ${done}`,
          );
        done += bytesRead;
      }
      return out;
    },
    async close() {
      if (closed) return;
      closed = true;
      const pending = fh;
      fh = null;
      if (pending !== null) await (await pending).close();
    },
  };
}

/** Plain file names only: a checkpoint index must not reach outside its directory. */
function inDir(dirPath: string, name: string): string {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\\') || name.includes('\0'))
    throw new Error(`${JSON.stringify(name)} is not a plain file name`);
  return join(dirPath, name);
}

/** A local checkpoint directory. */
export function dirCheckpointSource(dirPath: string): CheckpointSource {
  return {
    async readText(name) {
      try {
        return await readFile(inDir(dirPath, name), 'utf8');
      } catch (e) {
        if (isNotFound(e)) return null;
        throw e;
      }
    },
    async open(name) {
      const path = inDir(dirPath, name);
      try {
        return fileByteSource(path, await open(path, 'r'));
      } catch (e) {
        if (isNotFound(e)) return null;
        throw e;
      }
    },
  };
}

export interface FileSink {
  /** a ByteSink: appends the chunk (done with it when the promise resolves) */
  write(chunk: Uint8Array): Promise<void>;
  /** bytes written so far */
  readonly bytesWritten: number;
  close(): Promise<void>;
}

/** A new file (truncated if it exists) written front to back: pass `sink.write` to SafetensorsWriter. */
export async function fileSink(path: string): Promise<FileSink> {
  const fh = await open(path, 'w');
  let written = 0;
  return {
    async write(chunk) {
      let done = 0;
      while (done < chunk.length) {
        const { bytesWritten } = await fh.write(chunk, done, chunk.length - done);
        done += bytesWritten;
      }
      written += chunk.length;
    },
    get bytesWritten() {
      return written;
    },
    async close() {
      await fh.close();
    },
  };
}
