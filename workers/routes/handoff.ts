// Session handoff: a session's state leaves the edge (a browser running the same engine continues the
// conversation locally) and comes back. docs/serving.md, "Handoff".
//   GET  /v1/sessions/:id/snapshot        the newest state as one whole-model snapshot (application/octet-stream),
//                                         x-hymba-fingerprint / x-hymba-turn / x-hymba-position headers
//   GET  /v1/sessions/:id/snapshot/meta   { id, object, fingerprint, turn, position, tokens, messages, bytes }
//   POST /v1/sessions/:id/snapshot        multipart/form-data: meta (JSON {base_turn, messages, tokens}) and
//                                         state (the snapshot) -> 201 { id, object, turn, tokens, snapshot_bytes }
//
// Registered before the MAX_BODY_BYTES middleware (workers/index.ts): an uploaded state is limited by
// MAX_SNAPSHOT_BYTES instead (default 64 MiB), its meta part by MAX_BODY_BYTES.

import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { z } from 'zod';
import type { AppEnv } from '../app-env.js';
import { ApiError, unwrap } from '../api/errors.js';
import { parseValue } from '../api/schemas.js';
import { sessionStub } from '../do-client.js';
import type { Env } from '../../durable-objects/env.js';
import { settingsOf } from '../../durable-objects/settings.js';
import { limitsOf } from '../limits.js';
import type { ChatMessage } from '../../engine/text/chat-template.js';
import type { HandoffMeta, HandoffResult } from '../../durable-objects/session/session-do.js';

export const handoff = new Hono<AppEnv>();

/** MAX_SNAPSHOT_BYTES (durable-objects/settings.ts). */
export const maxSnapshotBytes = (env: Env): number => settingsOf(env).maxSnapshotBytes;

/** A tool call as the session stores it (GET /v1/sessions/:id and the snapshot meta show the same). */
const StoredToolCallSchema = z.object({
  name: z.string().min(1),
  arguments: z.union([z.record(z.string(), z.unknown()), z.string()]),
});

const HandoffMessageSchema = z.discriminatedUnion('role', [
  z.object({ role: z.literal('user'), content: z.string() }),
  z.object({ role: z.literal('tool'), content: z.string() }),
  z.object({
    role: z.literal('assistant'),
    content: z.string(),
    tool_calls: z.array(StoredToolCallSchema).min(1).optional(),
  }),
]);

/** The `meta` part of a send-back. */
export const HandoffMetaSchema = z.object({
  /** the session's last turn when the state was downloaded */
  base_turn: z.number().int().min(0),
  /** the messages since base_turn, as they happened: user (or tool) messages, each turn ending with the reply */
  messages: z.array(HandoffMessageSchema).min(1, { error: 'send at least one turn: a user message and the reply' }),
  /** every token id the uploaded state covers (meta tokens excluded) */
  tokens: z.array(z.number().int().min(0)).max(1 << 22),
});

async function exported(env: Env, id: string, owner: string | null, withState: boolean) {
  const r = await sessionStub(env, id).exportHandoff(owner, withState);
  return unwrap<{ meta: HandoffMeta; state: ReadableStream<Uint8Array> | null }>(r);
}

handoff.get('/v1/sessions/:id/snapshot', async function downloadSnapshot(c) {
  const { meta, state } = await exported(c.env, c.req.param('id'), c.get('owner'), true);
  if (!state) throw ApiError.internal('the session sent no state');
  return c.body(state, 200, {
    'content-type': 'application/octet-stream',
    'cache-control': 'no-store',
    'x-hymba-fingerprint': meta.fingerprint,
    'x-hymba-turn': String(meta.turn),
    'x-hymba-position': String(meta.position),
  });
});

handoff.get('/v1/sessions/:id/snapshot/meta', async function snapshotMeta(c) {
  const id = c.req.param('id');
  const { meta } = await exported(c.env, id, c.get('owner'), false);
  return c.json({ id, object: 'session.snapshot', ...meta });
});

handoff.post(
  '/v1/sessions/:id/snapshot',
  async function limitUpload(c, next) {
    const max = maxSnapshotBytes(c.env) + limitsOf(c.env).maxBodyBytes; // the state plus its meta
    return bodyLimit({
      maxSize: max,
      onError: () => {
        throw ApiError.tooLarge(`The request body is larger than the limit of ${max} bytes.`);
      },
    })(c, next);
  },
  async function uploadSnapshot(c) {
    const id = c.req.param('id');
    const stub = sessionStub(c.env, id);
    const { meta, state } = await readUpload(c.req.raw, c.env);
    const upload = { baseTurn: meta.base_turn, messages: meta.messages.map(toChatMessage), tokens: meta.tokens };
    const r = await stub.importHandoff(c.get('owner'), upload, state.stream(), maxSnapshotBytes(c.env));
    const done = unwrap<HandoffResult>(r);
    return c.json(
      { id, object: 'session.snapshot', turn: done.turn, tokens: done.tokens, snapshot_bytes: done.snapshotBytes },
      201,
    );
  },
);

type HandoffMessage = z.output<typeof HandoffMessageSchema>;

function toChatMessage(m: HandoffMessage): ChatMessage {
  if (m.role === 'assistant' && m.tool_calls)
    return { role: 'assistant', content: m.content, tool_calls: m.tool_calls };
  return { role: m.role, content: m.content };
}

/** The two parts of a send-back, validated: 400 for a malformed body or meta, 413 for a state over the limit. */
async function readUpload(req: Request, env: Env): Promise<{ meta: z.output<typeof HandoffMetaSchema>; state: Blob }> {
  const type = req.headers.get('content-type') ?? '';
  if (!/^multipart\/form-data\s*;/i.test(type))
    throw ApiError.invalidRequest(
      'Send the state back as multipart/form-data with a "meta" part (JSON) and a "state" part (the snapshot).',
      null,
      'invalid_multipart',
    );
  let form: FormData;
  try {
    form = await req.formData();
  } catch (e) {
    if (e instanceof ApiError) throw e; // the body limit
    throw ApiError.invalidRequest('The multipart/form-data body could not be parsed.', null, 'invalid_multipart');
  }
  const metaPart = form.get('meta');
  const state = form.get('state');
  if (metaPart === null) throw ApiError.invalidRequest('The "meta" part is missing.', 'meta', 'invalid_multipart');
  if (state === null) throw ApiError.invalidRequest('The "state" part is missing.', 'state', 'invalid_multipart');
  if (typeof state === 'string')
    throw ApiError.invalidRequest(
      'The "state" part must be a file (binary), not a text field.',
      'state',
      'invalid_multipart',
    );
  const max = maxSnapshotBytes(env);
  if (state.size > max)
    throw ApiError.tooLarge(`The state is ${state.size} bytes; this server takes at most ${max}.`, 'state');
  const text = typeof metaPart === 'string' ? metaPart : await metaPart.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw ApiError.invalidRequest('The "meta" part is not valid JSON.', 'meta', 'invalid_json');
  }
  try {
    return { meta: parseValue(HandoffMetaSchema, json), state };
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
    throw new ApiError(e.kind, `meta: ${e.message}`, {
      param: e.param ? `meta.${e.param}` : 'meta',
      code: e.code,
    });
  }
}
