// Forking a session at a turn: the new session gets the transcript up to it and, when that turn's snapshot
// is still kept, a copy of its stage slices (the fork then resumes without re-prefilling).

import { asResult, errors, type Failed } from '../../engine/serve/errors.js';
import type { ChatMessage } from '../../engine/text/chat-template.js';
import { frontFor } from './front.js';
import type { Session } from './session.js';
import type { StoredMessage, TurnRecord } from './store.js';

export interface ForkData {
  messages: StoredMessage[];
  turns: TurnRecord[];
  /** the snapshot at the fork's turn, by reference: its slices are copied between the stages */
  snapshot: { turn: number; from: string; id: number; fingerprint: string; tokens: number[]; bytes: number } | null;
}

/** What a fork at `turn` copies from the source session. */
export function exportFork(s: Session, owner: string | null, turn: number): Promise<ForkData | Failed> {
  return asResult(() => {
    s.ownedSession(owner);
    const store = s.store;
    if (!Number.isInteger(turn) || turn < 0 || turn > store.lastTurn()) throw errors.notFound(`turn ${turn}`, 'turn');
    const snap = store.snapshots().find((x) => x.turn === turn) ?? null;
    return {
      messages: store.messages(turn),
      turns: store.turns().filter((t) => t.turn <= turn),
      snapshot: snap ? { ...snap, turn, from: s.key } : null,
    };
  });
}

/** Start the new session (this one) from a fork's data. */
export async function importFork(s: Session, owner: string | null, data: ForkData): Promise<void> {
  const strip = ({ turn: _turn, ...m }: StoredMessage): ChatMessage => m;
  s.store.create({ owner, kind: 'session', messages: data.messages.filter((m) => m.turn === 0).map(strip) });
  s.store.importTurns(
    data.turns,
    data.messages.filter((m) => m.turn > 0),
  );
  if (data.snapshot) await importSnapshot(s, data.snapshot);
}

/** Copy a fork's snapshot slices from the source session's stages to this one's (replicas may differ). */
async function importSnapshot(s: Session, snap: NonNullable<ForkData['snapshot']>): Promise<void> {
  const front = await frontFor(s.env);
  if (snap.fingerprint !== front.fingerprint) return;
  const from = s.routes(front, snap.from);
  const to = s.routes(front);
  const id = s.store.allocateSnapshotId();
  const slices = await Promise.all(from.map((st) => st.stub.exportSlice(snap.from, snap.id)));
  if (slices.some((b) => b === null)) return; // the fork re-prefills its transcript instead
  await Promise.all(to.map((st, k) => st.stub.importSlice(s.key, id, slices[k]!)));
  s.store.importSnapshot(snap.turn, { id, fingerprint: snap.fingerprint, tokens: snap.tokens, bytes: snap.bytes });
}
