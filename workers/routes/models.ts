// GET /v1/models and GET /health. The model loads lazily in the Durable Objects; /health says 503 until the
// object that serves unkeyed requests has it loaded (and starts that load), then 200.

import { Hono } from 'hono';
import type { AppEnv } from '../app-env.js';
import type { Env } from '../../durable-objects/env.js';
import { settingsOf } from '../../durable-objects/settings.js';

export const models = new Hono<AppEnv>();

export const modelId = (env: Env): string => settingsOf(env).modelId;

models.get('/v1/models', function listModels(c) {
  return c.json({
    object: 'list',
    data: [{ id: modelId(c.env), object: 'model', created: 0, owned_by: 'hymba-edge' }],
  });
});

models.get('/health', async function health(c) {
  const stub = c.env.SESSIONS.get(c.env.SESSIONS.idFromName('pool:0'));
  const status = await stub.status();
  if (status.ready) return c.json({ status: 'ok', model: modelId(c.env), fingerprint: status.fingerprint });
  c.header('Retry-After', '2');
  return c.json({ status: status.error ? 'error' : 'loading', ...(status.error ? { error: status.error } : {}) }, 503);
});
