// Talking to a SessionDO: pick the object for a request, open a turn, and read its NDJSON event stream.

import type { StreamEvent, TurnCall } from '../durable-objects/session/session-do.js';
import type { TurnEvent, TurnRequest } from '../engine/serve/protocol.js';
import { ApiError } from './api/errors.js';
import type { Env } from '../durable-objects/env.js';

/** Objects that serve requests without a prompt_cache_key (compute only, nothing stored). */
const EPHEMERAL_POOL = 8;

export function sessionStub(
  env: Env,
  id: string,
): DurableObjectStub<import('../durable-objects/session/session-do.js').SessionDO> {
  let doId: DurableObjectId;
  try {
    doId = env.SESSIONS.idFromString(id);
  } catch {
    throw ApiError.notFound(`session ${id} not found`, 'session_id');
  }
  return env.SESSIONS.get(doId);
}

/** The object a Chat Completions / Completions request runs in, and how. */
export function routeTurn(env: Env, owner: string | null, cacheKey: string | undefined | null) {
  if (cacheKey) {
    const stub = env.SESSIONS.get(env.SESSIONS.idFromName(`cache:${owner ?? ''}:${cacheKey}`));
    return { stub, call: { mode: 'cache', owner } satisfies TurnCall };
  }
  const stub = env.SESSIONS.get(env.SESSIONS.idFromName(`pool:${Math.floor(Math.random() * EPHEMERAL_POOL)}`));
  return { stub, call: { mode: 'ephemeral', owner } satisfies TurnCall };
}

/** Parse an NDJSON byte stream into events; returning early cancels the stream (and so the turn). */
async function* ndjson(stream: ReadableStream<Uint8Array>): AsyncGenerator<StreamEvent> {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let buffered = '';
  let finished = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const text = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (text) yield JSON.parse(text) as StreamEvent;
      }
    }
    finished = true;
  } finally {
    if (!finished) await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}

/**
 * Watches a turn for the request's metrics (workers/observability.ts: the `metrics` context variable): told
 * when the object has accepted the turn, then given every event as the route reads it, with the time (ms).
 */
export interface TurnObserver {
  /** `session`: the object's id when the turn runs in a session or cache object; null for an ephemeral one */
  turnAccepted(session: string | null, at: number): void;
  turnEvent(event: TurnEvent, at: number): void;
}

/**
 * Start a turn. Errors the object reports before running (busy, unknown session, invalid or too long prompt)
 * are thrown as ApiErrors, so the route answers with their status; afterwards the turn's events follow.
 * Routes pass `c.get('metrics')` as the observer, so every turn is measured.
 */
export async function openTurn(
  stub: DurableObjectStub<import('../durable-objects/session/session-do.js').SessionDO>,
  req: TurnRequest,
  call: TurnCall,
  observer?: TurnObserver,
): Promise<AsyncGenerator<TurnEvent>> {
  const events = ndjson(await stub.turn(req, call));
  const first = await events.next();
  if (first.done) throw ApiError.internal('the session closed the turn before it started');
  if (first.value.type === 'error') {
    await events.return(undefined);
    throw ApiError.from(first.value.error);
  }
  watch(observer, (o) => o.turnAccepted(call.mode === 'ephemeral' ? null : stub.id.toString(), Date.now()));
  return (async function* () {
    try {
      for await (const e of events) {
        if (e.type === 'accepted') continue;
        watch(observer, (o) => o.turnEvent(e, Date.now()));
        yield e;
      }
    } finally {
      await events.return(undefined);
    }
  })();
}

/** Measuring must never break a turn. */
function watch(observer: TurnObserver | undefined, fn: (o: TurnObserver) => void): void {
  if (observer === undefined) return;
  try {
    fn(observer);
  } catch (err) {
    console.error('turn observer failed:', err);
  }
}
