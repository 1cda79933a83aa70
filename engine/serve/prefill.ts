// The prompt into the model state: resume from the newest stored state whose tokens are a prefix of the prompt
// (prefix caching: a session's next prompt starts with the last one and its reply), then run only the new
// tokens. The last prompt token is left for generation, which needs its logits row.

import type { ModelFront } from '../run/loaded-model.js';
import type { Cursor, StatePipeline } from '../run/pipeline.js';
import { scorePrompt } from './logprobs.js';
import type { TokenLogprob } from './protocol.js';
import type { TurnStore } from './turn-store.js';

const isPrefix = (prefix: number[], ids: number[]): boolean =>
  prefix.length <= ids.length && prefix.every((id, i) => ids[i] === id);

/** A cursor at the meta-token prefix. */
async function openFresh(pipeline: StatePipeline): Promise<Cursor> {
  const r = await pipeline.open(null);
  if (!r.ok) throw new Error(`the meta-token prefix state is unavailable: ${r.reason}`);
  return r.cursor;
}

/** A working state and how many prompt tokens it already holds. */
export interface Resumed {
  cursor: Cursor;
  cached: number;
}

/**
 * The newest usable snapshot whose tokens are a proper prefix of `ids` (at least one new token is needed for
 * logits), else the meta prefix. Snapshots of another model, or that a stage cannot restore (checksum, missing
 * rows), are deleted. `fresh`: always the meta prefix (echo scores every prompt token).
 */
export async function resume(
  engine: ModelFront,
  pipeline: StatePipeline,
  store: TurnStore | null,
  ids: number[],
  fresh = false,
): Promise<Resumed> {
  if (fresh || !store) return { cursor: await openFresh(pipeline), cached: 0 };
  for (const s of store.snapshots()) {
    if (s.fingerprint !== engine.fingerprint) {
      store.deleteSnapshot(s.id);
      continue;
    }
    if (s.tokens.length >= ids.length || !isPrefix(s.tokens, ids)) continue;
    const r = await pipeline.open(s.id);
    if (r.ok && r.cursor.position === engine.model.dims.M + s.tokens.length)
      return { cursor: r.cursor, cached: s.tokens.length };
    if (r.ok) await pipeline.close(r.cursor);
    else console.warn(`snapshot ${s.id} is unusable, recomputing: ${r.reason}`);
    store.deleteSnapshot(s.id); // the transcript is the truth: this state will be recomputed
  }
  return { cursor: await openFresh(pipeline), cached: 0 };
}

/**
 * Run the prompt's new tokens except the last through `at.cursor`. With `scoreTop` (echo with log-probs,
 * from the meta prefix) returns every prompt token's log-prob, the first null; otherwise undefined.
 */
export async function prefill(
  engine: ModelFront,
  pipeline: StatePipeline,
  at: Resumed,
  ids: number[],
  scoreTop?: number,
): Promise<(TokenLogprob | null)[] | undefined> {
  const score = scoreTop !== undefined;
  if (ids.length - at.cached <= 1) return score ? [null] : undefined;
  const run = await pipeline.forward(at.cursor, ids.slice(at.cached, -1), score ? 'all' : 'none');
  return score ? scorePrompt(engine, ids, run.logits, scoreTop) : undefined;
}
