// One turn of a session: tokenize (prepare.ts), resume from the newest snapshot whose tokens prefix the
// prompt and process only the new tokens (prefill.ts), generate (reply.ts), and commit transcript + snapshot
// atomically (commit.ts). A turn that fails or whose client goes away commits nothing: the session stays
// exactly as it was before the turn. Platform-free: a SessionDO and the browser playground both run it.

import type { ModelFront } from '../run/loaded-model.js';
import type { Cursor, StatePipeline } from '../run/pipeline.js';
import type { ChatMessage } from '../text/chat-template.js';
import { commit } from './commit.js';
import { prefill, resume } from './prefill.js';
import { prepareTurn, type PreparedTurn } from './prepare.js';
import type { TurnEvent, TurnRequest } from './protocol.js';
import { generateReply } from './reply.js';
import type { TurnStore } from './turn-store.js';

export interface TurnOptions {
  /** messages to append to the transcript before the assistant reply (session API: the user message) */
  newMessages: ChatMessage[];
  /** keep the transcript (session API); otherwise only snapshots are stored */
  record: boolean;
  signal?: AbortSignal;
  /** the Responses API id of this turn, committed with it */
  responseId?: string;
}

/**
 * Run one turn, yielding its events; commits to `store` (when given) only if it completes. `prepared`: the
 * prompt already tokenized and checked, so that its errors surface before the stream starts.
 */
export async function* runTurn(
  engine: ModelFront,
  pipeline: StatePipeline,
  store: TurnStore | null,
  req: TurnRequest,
  opts: TurnOptions,
  prepared: PreparedTurn = prepareTurn(engine, req),
): AsyncGenerator<TurnEvent> {
  const { ids, room } = prepared;
  // echo with log-probs scores every prompt token, so it starts from the meta prefix, not a snapshot
  const echo = req.echo === true && req.logprobs !== undefined;
  const at = await resume(engine, pipeline, store, ids, echo);
  const open: Cursor[] = [at.cursor];
  try {
    // all but the last prompt token; the state before it is kept for the commit (canonical state)
    const promptLogprobs = await prefill(engine, pipeline, at, ids, echo ? req.logprobs : undefined);
    const beforeLast = store ? await pipeline.fork(at.cursor) : null;
    if (beforeLast) open.push(beforeLast);

    const start: TurnEvent = { type: 'start', promptTokens: ids.length, cachedTokens: at.cached };
    if (req.returnTokenIds) start.promptIds = ids;
    if (promptLogprobs) start.promptLogprobs = promptLogprobs;
    const reply = yield* generateReply(engine, pipeline, at.cursor, ids.slice(-1), room, req, start, opts.signal);
    if (!reply) return; // the client went away: nothing is committed

    let snapshotBytes = 0;
    if (store && beforeLast)
      snapshotBytes = await commit(engine, pipeline, store, {
        req,
        ids,
        cached: at.cached,
        reply,
        live: at.cursor,
        beforeLast,
        messages: opts.record ? [...opts.newMessages, reply.message] : [],
        ...(opts.responseId !== undefined ? { responseId: opts.responseId } : {}),
      });
    yield {
      type: 'done',
      finishReason: reply.finishReason,
      promptTokens: ids.length,
      completionTokens: reply.completionTokens,
      cachedTokens: at.cached,
      tail: reply.tail,
      snapshotBytes,
    };
  } finally {
    await Promise.all(open.map((c) => pipeline.close(c).catch(() => undefined)));
  }
}
