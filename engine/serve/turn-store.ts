// What a turn needs from the session it runs in: the index of stored states to resume from, fresh snapshot
// ids, and one atomic commit of the turn. The bytes of a snapshot live in the pipeline (the stages); this
// store only indexes them. The SessionDO's SQLite store and the playground's in-memory one implement it.

import type { ChatMessage } from '../text/chat-template.js';

/** A stored state, as the turn sees it. */
export interface SnapshotEntry {
  id: number;
  /** the model that computed it (engine fingerprint) */
  fingerprint: string;
  /** the token ids the state has processed, meta tokens excluded */
  tokens: number[];
}

/** A state the pipeline has just stored under `id`, to be indexed by the commit. */
export interface NewSnapshot extends SnapshotEntry {
  /** its size in the stages */
  bytes: number;
}

/** One finished turn: committed in one transaction, or not at all. */
export interface CommitTurn {
  messages: ChatMessage[];
  promptTokens: number;
  completionTokens: number;
  cachedTokens: number;
  finishReason: string;
  /** the snapshot the stages have just stored under `id` (allocateSnapshotId) */
  snapshot: NewSnapshot | null;
  /** snapshots kept after the commit (newest first) */
  keepSnapshots: number;
  /** the Responses API id this turn answers, stored with the turn (Responses only) */
  responseId?: string;
}

export interface TurnStore {
  /** The stored states, newest first. */
  snapshots(): readonly SnapshotEntry[];
  /** Forget a state that cannot be used (another model's, or one a stage cannot restore). */
  deleteSnapshot(id: number): void;
  /** A snapshot id never used before, for the pipeline to store the new state under before the commit. */
  allocateSnapshotId(): number;
  /** Make the turn and its snapshot current atomically; `keep`: the snapshot ids the pipeline must retain. */
  commitTurn(c: CommitTurn): { keep: number[] };
}
