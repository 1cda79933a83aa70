// The commit of a finished turn, in three steps: 1. the pipeline stores the new state under a fresh snapshot
// id; 2. the store's one transaction makes that id current with the transcript and the turn log; 3. only
// then are older snapshots dropped. A failure before the transaction leaves the previous snapshot current
// everywhere (the stray new one is dropped by the next commit); one after it leaves garbage, never a loss.

import type { ModelFront } from '../run/loaded-model.js';
import type { Cursor, StatePipeline } from '../run/pipeline.js';
import type { ChatMessage } from '../text/chat-template.js';
import { encodeConversation, offeredTools } from './prepare.js';
import type { TurnRequest } from './protocol.js';
import type { Reply } from './reply.js';
import type { TurnStore } from './turn-store.js';

/** Snapshots kept per session after each commit (newest first). */
export const KEEP_SNAPSHOTS = 4;

/** A state and the token ids it has processed, meta tokens excluded. */
interface HeldState {
  cursor: Cursor;
  tokens: number[];
}

/** Length of the common prefix of two id lists. */
function commonPrefix(a: number[], b: number[]): number {
  let k = 0;
  while (k < a.length && k < b.length && a[k] === b[k]) k++;
  return k;
}

/**
 * The state to store after a chat turn: the conversation as the template renders it with the reply (the
 * exact ids the next prompt starts with), not the sampled ids, which may tokenize differently. Continues
 * the live state when it is a prefix; otherwise re-runs the reply from the state before the last prompt token.
 */
async function canonicalState(
  pipeline: StatePipeline,
  live: HeldState,
  beforeLast: HeldState,
  canonical: number[],
): Promise<HeldState> {
  const k = commonPrefix(canonical, live.tokens);
  let base = live;
  if (k < live.tokens.length) {
    if (commonPrefix(canonical, beforeLast.tokens) < beforeLast.tokens.length) return live;
    base = beforeLast;
  }
  if (canonical.length > base.tokens.length)
    await pipeline.forward(base.cursor, canonical.slice(base.tokens.length), 'none');
  return { cursor: base.cursor, tokens: canonical };
}

/** The ids of the conversation with the reply appended, as the next turn's prompt will begin. */
function renderedWithReply(engine: ModelFront, req: TurnRequest, reply: ChatMessage): number[] | null {
  if (req.prompt.kind !== 'chat' || !engine.tokenizer) return null;
  return encodeConversation(engine.tokenizer, [...req.prompt.messages, reply], offeredTools(req), false);
}

/** A finished turn, ready to commit. */
export interface FinishedTurn {
  req: TurnRequest;
  /** the prompt's ids */
  ids: number[];
  /** prompt tokens resumed from a snapshot */
  cached: number;
  reply: Reply;
  /** the generation's state: the prompt but its last id, then reply.fedIds */
  live: Cursor;
  /** a fork of the state before the prompt's last id */
  beforeLast: Cursor;
  /** the transcript's new messages (the reply included), [] when only the state is kept */
  messages: ChatMessage[];
  responseId?: string;
}

/** Commit `t` to `store` (see the top of this file); returns the bytes of the stored state. */
export async function commit(
  engine: ModelFront,
  pipeline: StatePipeline,
  store: TurnStore,
  t: FinishedTurn,
): Promise<number> {
  let kept: HeldState = { cursor: t.live, tokens: [...t.ids.slice(0, -1), ...t.reply.fedIds] };
  const canonical = renderedWithReply(engine, t.req, t.reply.message);
  if (canonical)
    kept = await canonicalState(pipeline, kept, { cursor: t.beforeLast, tokens: t.ids.slice(0, -1) }, canonical);
  const snapshotId = store.allocateSnapshotId();
  const bytes = await pipeline.persist(kept.cursor, snapshotId); // 1. every stage stores its slice
  const { keep } = store.commitTurn({
    // 2. the session makes it current, atomically with the transcript
    messages: t.messages,
    promptTokens: t.ids.length,
    completionTokens: t.reply.completionTokens,
    cachedTokens: t.cached,
    finishReason: t.reply.finishReason,
    snapshot: { id: snapshotId, fingerprint: engine.fingerprint, tokens: kept.tokens, bytes },
    keepSnapshots: KEEP_SNAPSHOTS,
    ...(t.responseId !== undefined ? { responseId: t.responseId } : {}),
  });
  // 3. only now may older snapshots go; a failure here leaves garbage the next commit removes
  await pipeline.retain(keep).catch((e: unknown) => console.warn('dropping old snapshots failed:', e));
  return bytes;
}
