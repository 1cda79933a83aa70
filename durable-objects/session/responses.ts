// Responses API storage: a chain of responses is one session, each response one of its turns (its id is
// committed with the turn). Here: finding a response, its saved body, deleting it. Errors as values (RPC
// loses error classes).

import { errors, type Failed } from '../../engine/serve/errors.js';
import type { Session } from './session.js';
import type { ResponseRecord, StoredMessage, TurnRecord } from './store.js';

/** Where a stored response sits in its session. */
export interface ResponseLocation {
  /** the turn that answered it */
  turn: number;
  /** the session's last turn: equal to `turn` when the response is the newest of its chain */
  lastTurn: number;
  /** the chain's system message (turn 0), null when it has none */
  system: string | null;
}

/** A stored response: its saved body, or what is needed to rebuild one (a turn whose body was never saved). */
export interface StoredResponse {
  created: number;
  body: string | null;
  turn: TurnRecord | null;
  /** the turn's assistant message(s) */
  output: StoredMessage[];
}

const notFound = (): Failed => ({ error: errors.notFound('response').info });

/** This session's live response `id` if `owner` may see it. */
function ownedResponse(s: Session, owner: string | null, id: string): ResponseRecord | null {
  // an object that has never stored anything stays empty: looking up an unknown id writes no schema
  const tables = s.ctx.storage.sql.exec(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'`);
  if (s.deleting || tables.toArray().length === 0) return null;
  const meta = s.store.meta();
  if (!meta || meta.owner !== owner || meta.kind !== 'session') return null;
  const r = s.store.response(id);
  return r && !r.deleted ? r : null;
}

export function locateResponse(s: Session, owner: string | null, id: string): ResponseLocation | Failed {
  const r = ownedResponse(s, owner, id);
  if (!r) return notFound();
  const system = s.store.messages(0).find((m) => m.role === 'system');
  return { turn: r.turn, lastTurn: s.store.lastTurn(), system: system?.content ?? null };
}

/** Save the body of a response after its turn (a no-op for an unknown or deleted one). */
export function saveResponse(s: Session, owner: string | null, id: string, body: string): void {
  if (ownedResponse(s, owner, id)) s.store.saveResponseBody(id, body);
}

export function readResponse(s: Session, owner: string | null, id: string): StoredResponse | Failed {
  const r = ownedResponse(s, owner, id);
  if (!r) return notFound();
  if (r.body !== null) return { created: r.created, body: r.body, turn: null, output: [] };
  return {
    created: r.created,
    body: null,
    turn: s.store.turns().find((t) => t.turn === r.turn) ?? null,
    output: s.store.messages(r.turn).filter((m) => m.turn === r.turn && m.role === 'assistant'),
  };
}

/** Delete a response: it can no longer be read or continued; its turn stays in the session. */
export function deleteResponse(s: Session, owner: string | null, id: string): { deleted: true } | Failed {
  if (!ownedResponse(s, owner, id)) return notFound();
  s.store.deleteResponse(id);
  return { deleted: true };
}
