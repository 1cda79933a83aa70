// A ModelSource wrapper that times its reads and the compute between them (model loads read and work in turn).

import type { ModelSource } from '../../engine/run/loaded-model.js';

export interface LoadTiming {
  /** the part of the load spent waiting for the store */
  readMs: number;
  /** bytes read (characters for the text files) */
  bytesRead: number;
  /**
   * Compute time between reads, keyed by the file read just before: after a graph it is that graph's
   * session creation (the first one includes ORT's instantiation); after the last file, the tokenizer.
   */
  computeMs: Record<string, number>;
}

/** Times a source's reads and the compute between them (HymbaEngine.load reads and works in turn). */
export function timedSource(src: ModelSource): { src: ModelSource; finish: () => LoadTiming } {
  let readMs = 0;
  let bytes = 0;
  const computeMs: Record<string, number> = {};
  let last: { name: string; end: number } | null = null;
  const computeUntil = (now: number): void => {
    if (last) computeMs[last.name] = (computeMs[last.name] ?? 0) + (now - last.end);
  };
  const timed =
    <T extends string | Uint8Array>(read: (name: string) => Promise<T | null>) =>
    async (name: string): Promise<T | null> => {
      const t0 = performance.now();
      computeUntil(t0);
      try {
        const out = await read(name);
        if (out !== null) bytes += typeof out === 'string' ? out.length : out.byteLength;
        return out;
      } finally {
        const t1 = performance.now();
        readMs += t1 - t0;
        last = { name, end: t1 };
      }
    };
  return {
    src: { readText: timed((n) => src.readText(n)), readBytes: timed((n) => src.readBytes(n)) } as ModelSource,
    finish: () => {
      computeUntil(performance.now());
      last = null;
      return { readMs, bytesRead: bytes, computeMs };
    },
  };
}
