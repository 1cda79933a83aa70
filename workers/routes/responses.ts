// The Responses API over the session machinery:
//   POST   /v1/responses        a response (JSON or typed SSE), continuing `previous_response_id` from its state
//   GET    /v1/responses/:id    the stored response
//   DELETE /v1/responses/:id    it can no longer be read or continued
//
// A chain of responses is one SessionDO session (owned by the API key); each response is one turn of it, and
// the turn's snapshot is the model state after it. A response id is `resp_<session id>_<16 random hex>`, so
// the session is found from the id. Continuing the session's newest response appends a turn (atomically: the
// turn names the turn it follows, and loses to a concurrent continuation that got there first); continuing
// an older one forks the session at that turn, copying the snapshot, so two continuations of one response
// never see each other. `store: false` runs a turn that stores nothing, over the whole message list.

import { Hono } from 'hono';
import type { AppEnv } from '../app-env.js';
import type { ChatMessage } from '../../engine/text/chat-template.js';
import type { TurnEvent, TurnRequest } from '../../engine/serve/protocol.js';
import type {
  ForkData,
  ResponseLocation,
  SessionDO,
  StoredResponse,
  TurnCall,
} from '../../durable-objects/session/session-do.js';
import type { StoredMessage } from '../../durable-objects/session/store.js';
import { ApiError, unwrap } from '../api/errors.js';
import { unixSeconds } from '../../engine/serve/ids.js';
import {
  collectResponse,
  responseFromTurn,
  responseSuffix,
  streamResponse,
  type ResponseHead,
  type ResponseObject,
} from '../api/responses-format.js';
import { ResponseCreateRequestSchema, type ResponseCreateRequest } from '../api/responses-schemas.js';
import { responseToTurn, withHistory } from '../api/responses-to-turn.js';
import { parseBody } from '../api/schemas.js';
import { sseResponse } from '../api/sse.js';
import { openTurn, routeTurn, type TurnObserver } from '../do-client.js';
import type { Env } from '../../durable-objects/env.js';
import { checkMaxTokens, checkMessageCount, limitsOf } from '../limits.js';
import { checkModel } from './completions.js';
import { modelId } from './models.js';

export const responses = new Hono<AppEnv>();

type SessionStub = DurableObjectStub<SessionDO>;

const RESPONSE_ID = /^resp_([0-9a-f]{64})_[0-9a-f]{16}$/;

/** The session a response id names, or null for an id that cannot be one of ours (never a 500). */
function sessionOf(env: Env, id: string): SessionStub | null {
  const m = RESPONSE_ID.exec(id);
  if (!m) return null;
  try {
    return env.SESSIONS.get(env.SESSIONS.idFromString(m[1]!));
  } catch {
    return null;
  }
}

const newResponseId = (session: DurableObjectId): string => `resp_${session.toString()}_${responseSuffix()}`;

const shown = (id: string): string => (id.length > 100 ? `${id.slice(0, 97)}...` : id);

const responseNotFound = (id: string): ApiError =>
  ApiError.notFound(`No response found with id '${shown(id)}'.`, 'response_id');

const previousNotFound = (id: string): ApiError =>
  ApiError.notFound(
    `Previous response with id '${shown(id)}' not found.`,
    'previous_response_id',
    'previous_response_not_found',
  );

/** Where a stored response lives; 404 previous_response_not_found when unknown, deleted or another key's. */
async function locate(
  env: Env,
  owner: string | null,
  id: string,
): Promise<{ stub: SessionStub; at: ResponseLocation }> {
  const stub = sessionOf(env, id);
  if (!stub) throw previousNotFound(id);
  const at = (await stub.locateResponse(owner, id)) as ResponseLocation | { error: unknown };
  if ('error' in at) throw previousNotFound(id);
  return { stub, at };
}

/** A turn that has started: its events, the response id, and the session that stores it (none: not stored). */
interface Started {
  id: string;
  events: AsyncGenerator<TurnEvent>;
  stub: SessionStub | null;
}

interface Run {
  env: Env;
  owner: string | null;
  body: ResponseCreateRequest;
  turn: TurnRequest;
  observer: TurnObserver;
}

/** One turn of session `stub` answering a new response (after `afterTurn`, when given). */
async function startIn(run: Run, stub: SessionStub, afterTurn?: number): Promise<Started> {
  const id = newResponseId(stub.id);
  const call: TurnCall = { mode: 'session', owner: run.owner, responseId: id };
  if (afterTurn !== undefined) call.afterTurn = afterTurn;
  return { id, stub, events: await openTurn(stub, run.turn, call, run.observer) };
}

/** A new session (from `setup`) and its first turn; a session whose turn could not start is removed. */
async function startInNew(run: Run, setup: (stub: SessionStub) => Promise<void>): Promise<Started> {
  const stub = run.env.SESSIONS.get(run.env.SESSIONS.newUniqueId());
  await setup(stub);
  try {
    return await startIn(run, stub);
  } catch (e) {
    await stub.destroy(run.owner).catch(() => undefined);
    throw e;
  }
}

/** The chain's messages up to a turn, with its system message replaced by `system` when given. */
function chainMessages(messages: StoredMessage[], system: string | null): StoredMessage[] {
  if (system === null) return messages;
  return [{ turn: 0, role: 'system', content: system }, ...messages.filter((m) => m.turn > 0)];
}

/**
 * A stored response. Without previous_response_id: a new session. Continuing the session's newest response
 * with the same instructions (or none): a turn of that session. Otherwise, or when a concurrent continuation
 * got there first: a fork at the previous response's turn (with the new instructions as its system message:
 * the state cannot be reused then and is recomputed).
 */
async function startStored(run: Run): Promise<Started> {
  const { env, owner, body } = run;
  const instructions = body.instructions ?? null;
  const previous = body.previous_response_id;
  if (previous == null) {
    const system: ChatMessage[] = instructions !== null ? [{ role: 'system', content: instructions }] : [];
    return startInNew(run, (stub) => stub.create(owner, system));
  }
  const { stub, at } = await locate(env, owner, previous);
  const replace = instructions !== null && instructions !== at.system ? instructions : null;
  if (replace === null && at.turn === at.lastTurn) {
    try {
      return await startIn(run, stub, at.turn);
    } catch (e) {
      // 409: another continuation of this response is running or has committed: this one forks
      if (!(e instanceof ApiError && (e.kind === 'busy' || e.kind === 'conflict'))) throw e;
    }
  }
  const data = unwrap<ForkData>(await stub.exportFork(owner, at.turn));
  const fork: ForkData =
    replace === null ? data : { ...data, messages: chainMessages(data.messages, replace), snapshot: null };
  return startInNew(run, (s) => s.importFork(owner, fork));
}

/** `store: false`: a turn that stores nothing, over the chain's messages (recomputed) and the new input. */
async function startEphemeral(run: Run): Promise<Started> {
  const { env, owner, body } = run;
  const instructions = body.instructions ?? null;
  let history: StoredMessage[] = instructions !== null ? [{ turn: 0, role: 'system', content: instructions }] : [];
  if (body.previous_response_id != null) {
    const { stub, at } = await locate(env, owner, body.previous_response_id);
    const data = unwrap<ForkData>(await stub.exportFork(owner, at.turn));
    history = chainMessages(data.messages, instructions);
  }
  const messages = history.map(({ turn: _turn, ...m }): ChatMessage => m);
  const { stub, call } = routeTurn(env, owner, null);
  const events = await openTurn(stub, withHistory(run.turn, messages), call, run.observer);
  return { id: newResponseId(env.SESSIONS.newUniqueId()), stub: null, events };
}

responses.post('/v1/responses', async function createResponse(c) {
  const body = await parseBody(ResponseCreateRequestSchema, c.req.raw);
  const model = modelId(c.env);
  checkModel(body.model, model);
  const limits = limitsOf(c.env);
  if (Array.isArray(body.input)) checkMessageCount(limits, body.input.length, 'input');
  checkMaxTokens(limits, { max_output_tokens: body.max_output_tokens });
  const owner = c.get('owner');
  const run: Run = {
    env: c.env,
    owner,
    body,
    turn: responseToTurn(body, limits.defaultMaxTokens),
    observer: c.get('metrics'),
  };
  const createdAt = unixSeconds();
  const started = body.store === false ? await startEphemeral(run) : await startStored(run);
  const head: ResponseHead = { id: started.id, createdAt, model, body };
  const { stub } = started;
  // the turn has committed by now: a failed save is only logged (GET then rebuilds the response from the turn)
  const save = stub
    ? (r: ResponseObject): Promise<void> =>
        stub.saveResponse(owner, started.id, JSON.stringify(r)).catch((e: unknown) => {
          console.error(`saving response ${started.id} failed:`, e);
        })
    : undefined;
  if (body.stream) return sseResponse(streamResponse(started.events, head, save ? { onComplete: save } : {}));
  const response = await collectResponse(started.events, head);
  await save?.(response);
  return c.json(response);
});

responses.get('/v1/responses/:id', async function readResponse(c) {
  const id = c.req.param('id');
  const stub = sessionOf(c.env, id);
  if (!stub) throw responseNotFound(id);
  const r = (await stub.readResponse(c.get('owner'), id)) as StoredResponse | { error: unknown };
  if ('error' in r) throw responseNotFound(id);
  if (r.body !== null) return c.body(r.body, 200, { 'content-type': 'application/json' });
  const head: ResponseHead = { id, createdAt: unixSeconds(r.created), model: modelId(c.env), body: {} };
  return c.json(responseFromTurn(head, r.turn, r.output));
});

responses.delete('/v1/responses/:id', async function deleteResponse(c) {
  const id = c.req.param('id');
  const stub = sessionOf(c.env, id);
  if (!stub) throw responseNotFound(id);
  const r = (await stub.deleteResponse(c.get('owner'), id)) as { deleted: true } | { error: unknown };
  if ('error' in r) throw responseNotFound(id);
  return c.json({ id, object: 'response', deleted: true });
});
