// A turn over RPC: the turn (engine/serve/turn.ts) run under the session's lock and streamed to the Worker as
// NDJSON events. The first event says whether the turn may run (`accepted`) or why not (`error`: busy,
// unknown session, bad prompt), so the Worker can pick the HTTP status before it streams.

import { errorInfo, errors, ServeError } from '../../engine/serve/errors.js';
import { prepareTurn } from '../../engine/serve/prepare.js';
import type { TurnEvent, TurnRequest } from '../../engine/serve/protocol.js';
import { runTurn } from '../../engine/serve/turn.js';
import type { ChatMessage } from '../../engine/text/chat-template.js';
import { settingsOf } from '../settings.js';
import { frontFor } from './front.js';
import type { Session } from './session.js';
import type { SessionStore } from './store.js';

/** How a turn reaches this object, which decides what it stores. */
export type TurnMode =
  /** the session API: the transcript is kept here; the request carries only the new user message */
  | 'session'
  /** prompt_cache_key: the client sends the whole history; snapshots are kept, no transcript */
  | 'cache'
  /** no key: compute only, nothing stored */
  | 'ephemeral';

export interface TurnCall {
  mode: TurnMode;
  owner: string | null;
  /** session mode: the Responses API id of this turn, committed with it */
  responseId?: string;
  /**
   * session mode: run only if the session's last turn is still this one (checked under the turn lock), else
   * 409 `turn_superseded`: a continuation of a response that another continuation has already followed
   */
  afterTurn?: number;
}

/** The NDJSON events a turn stream carries: TurnEvents, preceded by `accepted` once the turn may run. */
export type StreamEvent = TurnEvent | { type: 'accepted' };

/**
 * Let other events in between a turn's steps: requests to this object (a concurrent turn's 409, reads)
 * and to the other objects of the isolate. The model's compute never yields on its own: ONNX
 * Runtime's WASM runs synchronously behind already-resolved promises, so without this a turn holds the
 * isolate until it ends.
 */
const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 0));

const encoder = new TextEncoder();
const line = (e: StreamEvent): Uint8Array => encoder.encode(JSON.stringify(e) + '\n');

function errorEvent(e: unknown): StreamEvent {
  if (!(e instanceof ServeError)) console.error('turn failed:', e); // the client gets a generic message, never internals
  return { type: 'error', error: errorInfo(e) };
}

/**
 * Run one turn and stream its events. Cancelling the stream or leaving it unread for `idleAbortMs` aborts
 * the turn, and an aborted or failed turn commits nothing. The session is free again once the turn has
 * committed (with its `done` event).
 */
export async function turnStream(
  s: Session,
  req: TurnRequest,
  call: TurnCall,
  idleAbortMs: number,
): Promise<ReadableStream<Uint8Array>> {
  const abort = new AbortController();
  let events: AsyncGenerator<TurnEvent> | null = null;
  let first: StreamEvent;
  try {
    events = await startTurn(s, req, call, abort.signal);
    first = { type: 'accepted' };
  } catch (e) {
    first = errorEvent(e);
  }
  const holdsLock = call.mode !== 'ephemeral';
  const unlock = (): void => {
    if (holdsLock) s.busy = false;
  };
  return ndjson(first, events, { abort, idleAbortMs, unlock });
}

/** The stream of `first`, then the turn's events; `unlock` runs once the turn has ended, however it ends. */
function ndjson(
  first: StreamEvent,
  turnEvents: AsyncGenerator<TurnEvent> | null,
  opts: { abort: AbortController; idleAbortMs: number; unlock: () => void },
): ReadableStream<Uint8Array> {
  let events = turnEvents;
  let idle: ReturnType<typeof setTimeout> | undefined;
  const release = (): void => {
    clearTimeout(idle);
    if (events) opts.unlock();
    events = null;
  };
  /** Abort the turn: nothing is committed (a pull in progress finishes its step first). */
  const abortTurn = async (): Promise<void> => {
    opts.abort.abort();
    try {
      await events?.return(undefined);
    } finally {
      release();
    }
  };
  // A stream returned over RPC and cancelled by the caller does not reach this side's `cancel` in workerd
  // (cloudflare/workerd#7298), and the Worker of a client that disconnected is torn down without a word:
  // a turn nobody pulls from for idleAbortMs has lost its reader.
  const waitForPull = (): void => {
    clearTimeout(idle);
    if (events) idle = setTimeout(() => void abortTurn(), opts.idleAbortMs);
  };
  let sentFirst = false;
  return new ReadableStream<Uint8Array>({
    pull: async (controller) => {
      clearTimeout(idle);
      if (!sentFirst) {
        sentFirst = true;
        controller.enqueue(line(first));
        if (!events) controller.close();
        else waitForPull();
        return;
      }
      await yieldToEventLoop();
      const turn = events;
      if (!turn) return controller.close(); // aborted
      try {
        const r = await turn.next();
        if (r.done) {
          release();
          return controller.close();
        }
        if (r.value.type === 'done') {
          // committed: the session is free before the reader hears so (a client's next turn must not find
          // it busy); closing this turn's cursors afterwards touches nothing a next turn uses
          release();
          controller.enqueue(line(r.value));
          controller.close();
          await turn.return(undefined).catch((e: unknown) => console.warn('closing a finished turn failed:', e));
          return;
        }
        controller.enqueue(line(r.value));
        waitForPull();
      } catch (e) {
        release();
        controller.enqueue(line(errorEvent(e)));
        controller.close();
      }
    },
    cancel: abortTurn,
  });
}

/** Check the call and take the session's lock (not for ephemeral turns); the turn's events, not yet pulled. */
async function startTurn(
  s: Session,
  given: TurnRequest,
  call: TurnCall,
  signal: AbortSignal,
): Promise<AsyncGenerator<TurnEvent>> {
  const { maxPromptTokens } = settingsOf(s.env);
  const req = maxPromptTokens === null ? given : { ...given, maxPromptTokens };
  if (call.mode === 'ephemeral') {
    // nothing stored: turns of unrelated requests may share this object concurrently
    const front = await frontFor(s.env);
    const prepared = prepareTurn(front, req);
    const pipeline = s.pipeline(front, `ephemeral:${crypto.randomUUID()}`);
    return runTurn(front, pipeline, null, req, { newMessages: [], signal, record: false }, prepared);
  }
  // ownership before anything else: another key's request learns nothing, not even that a turn runs
  if (call.mode === 'session') s.ownedSession(call.owner);
  if (s.busy) throw errors.busy();
  let store: SessionStore | null = null;
  let newMessages: ChatMessage[] = [];
  let request = req;
  if (call.mode === 'session') {
    if (req.prompt.kind !== 'chat') throw errors.invalid('a session turn takes a chat message', 'content');
    store = s.store;
    if (call.afterTurn !== undefined && store.lastTurn() !== call.afterTurn) throw errors.superseded();
    newMessages = req.prompt.messages;
    const history: ChatMessage[] = store.messages().map(({ turn: _turn, ...m }) => m);
    request = { ...req, prompt: { ...req.prompt, messages: [...history, ...newMessages] } };
  } else if (call.mode === 'cache') {
    store = s.store;
    const meta = store.meta();
    if (!meta) store.create({ owner: call.owner, kind: 'cache' });
    else if (meta.owner !== call.owner) throw errors.notFound('cache entry');
  }
  s.busy = true;
  try {
    const front = await frontFor(s.env);
    const prepared = prepareTurn(front, request); // prompt errors surface before the stream starts
    const opts = {
      newMessages,
      signal,
      record: call.mode === 'session',
      ...(call.mode === 'session' && call.responseId !== undefined ? { responseId: call.responseId } : {}),
    };
    return runTurn(front, s.pipeline(front), store, request, opts, prepared);
  } catch (e) {
    s.busy = false;
    throw e;
  }
}
