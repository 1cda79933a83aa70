// A session of the session API: created with its system/first messages, read back, deleted.

import { asResult, errors, type Failed } from '../../engine/serve/errors.js';
import type { ChatMessage } from '../../engine/text/chat-template.js';
import { frontFor } from './front.js';
import type { Session } from './session.js';
import type { StoredMessage, TurnRecord } from './store.js';

export interface SessionInfo {
  created: number;
  messages: StoredMessage[];
  turns: TurnRecord[];
  /** tokens the newest snapshot has processed (meta tokens excluded) */
  stateTokens: number;
  snapshots: number;
  snapshotBytes: number;
}

export function createSession(s: Session, owner: string | null, messages: ChatMessage[]): void {
  s.store.create({ owner, kind: 'session', messages });
}

export function sessionInfo(s: Session, owner: string | null): Promise<SessionInfo | Failed> {
  return asResult(() => {
    s.ownedSession(owner);
    const store = s.store;
    const snapshots = store.snapshots();
    return {
      created: store.meta()!.created,
      messages: store.messages(),
      turns: store.turns(),
      stateTokens: snapshots[0]?.tokens.length ?? 0,
      snapshots: snapshots.length,
      snapshotBytes: store.snapshotBytesTotal(),
    };
  });
}

/** Delete the session: the stages' slices first, then everything stored here. */
export function destroySession(s: Session, owner: string | null): Promise<{ deleted: true } | Failed> {
  return asResult(async () => {
    s.ownedSession(owner);
    if (s.busy) throw errors.busy();
    s.deleting = true;
    try {
      const front = await frontFor(s.env).catch(() => null);
      if (front) await s.pipeline(front).retain([]);
      await s.ctx.storage.deleteAll();
      s.forgetStore();
    } finally {
      s.deleting = false;
    }
    return { deleted: true as const };
  });
}
