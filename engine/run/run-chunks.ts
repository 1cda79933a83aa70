// A forward over many tokens is several graph runs of at most `maxRunTokens` each (the graph's activation
// peak grows with the run): the one place that cuts the ids and decides which runs give logits rows.

import type { LogitsWanted } from './runner.js';

export interface RunChunk {
  ids: number[];
  /** offset of the chunk's first id in the whole input */
  start: number;
  /** first row whose logits the run computes ('none' and 'last' still compute one cheap row) */
  from: number;
  /** whether the caller wants this run's logits */
  keep: boolean;
}

export function runChunks(ids: readonly number[], size: number, want: LogitsWanted): RunChunk[] {
  const chunks: RunChunk[] = [];
  for (let start = 0; start < ids.length; start += size) {
    const chunk = ids.slice(start, start + size);
    const isLast = start + size >= ids.length;
    chunks.push({
      ids: chunk,
      start,
      from: want === 'all' ? 0 : chunk.length - 1,
      keep: want === 'all' || (want === 'last' && isLast),
    });
  }
  return chunks;
}
