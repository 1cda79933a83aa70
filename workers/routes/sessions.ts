// The session API: a conversation whose transcript and model state live in one Durable Object.
//   POST   /v1/sessions                  create            -> { id, object: "session", created }
//   POST   /v1/sessions/:id/messages     one user turn     -> chat.completion (or its SSE stream)
//   GET    /v1/sessions/:id              transcript, turns and state statistics
//   POST   /v1/sessions/:id/fork         { turn }          -> a new session with the transcript up to `turn`
//   DELETE /v1/sessions/:id

import { Hono } from 'hono';
import type { AppEnv } from '../app-env.js';
import { collectChatCompletion, streamChatCompletion } from '../api/chat-format.js';
import { unwrap } from '../api/errors.js';
import {
  CreateSessionRequestSchema,
  ForkSessionRequestSchema,
  parseBody,
  SessionMessageRequestSchema,
} from '../api/schemas.js';
import { sseResponse } from '../api/sse.js';
import { sessionMessageToTurn } from '../api/to-turn.js';
import { openTurn, sessionStub } from '../do-client.js';
import { checkMaxTokens, limitsOf } from '../limits.js';
import { modelId } from './models.js';
import type { ForkData, SessionInfo } from '../../durable-objects/session/session-do.js';

export const sessions = new Hono<AppEnv>();

sessions.post('/v1/sessions', async function createSession(c) {
  const body = await parseBody(CreateSessionRequestSchema, c.req.raw);
  const id = c.env.SESSIONS.newUniqueId();
  const messages = body.system ? [{ role: 'system' as const, content: body.system }] : [];
  await c.env.SESSIONS.get(id).create(c.get('owner'), messages);
  return c.json(
    { id: id.toString(), object: 'session', created: Math.floor(Date.now() / 1000), model: modelId(c.env) },
    201,
  );
});

sessions.post('/v1/sessions/:id/messages', async function postMessage(c) {
  const body = await parseBody(SessionMessageRequestSchema, c.req.raw);
  const limits = limitsOf(c.env);
  checkMaxTokens(limits, { max_tokens: body.max_tokens });
  const stub = sessionStub(c.env, c.req.param('id'));
  const events = await openTurn(
    stub,
    sessionMessageToTurn(body, limits.defaultMaxTokens),
    { mode: 'session', owner: c.get('owner') },
    c.get('metrics'),
  );
  const opts = {
    model: modelId(c.env),
    returnTokenIds: body.return_token_ids === true,
    includeUsage: body.stream_options?.include_usage === true,
  };
  if (body.stream) return sseResponse(streamChatCompletion(events, opts));
  return c.json(await collectChatCompletion(events, opts));
});

sessions.get('/v1/sessions/:id', async function readSession(c) {
  const id = c.req.param('id');
  const info = unwrap<SessionInfo>(await sessionStub(c.env, id).info(c.get('owner')));
  return c.json({
    id,
    object: 'session',
    created: Math.floor(info.created / 1000),
    messages: info.messages,
    turns: info.turns,
    state: { tokens: info.stateTokens, snapshots: info.snapshots, snapshot_bytes: info.snapshotBytes },
  });
});

sessions.post('/v1/sessions/:id/fork', async function forkSession(c) {
  const body = await parseBody(ForkSessionRequestSchema, c.req.raw);
  const owner = c.get('owner');
  const stub = sessionStub(c.env, c.req.param('id'));
  const data = unwrap<ForkData>(await stub.exportFork(owner, body.turn));
  const id = c.env.SESSIONS.newUniqueId();
  await c.env.SESSIONS.get(id).importFork(owner, data);
  return c.json({ id: id.toString(), object: 'session', forked_from: c.req.param('id'), turn: body.turn }, 201);
});

sessions.delete('/v1/sessions/:id', async function deleteSession(c) {
  const id = c.req.param('id');
  unwrap<{ deleted: true }>(await sessionStub(c.env, id).destroy(c.get('owner')));
  return c.json({ id, object: 'session.deleted', deleted: true });
});
