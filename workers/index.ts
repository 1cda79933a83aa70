// The Worker: a Hono app over the session Durable Objects. Routes live in routes/, wire formats in api/.

import { Hono } from 'hono';
import { cors } from 'hono/cors';
import type { AppEnv } from './app-env.js';
import { notFound, onError } from './api/errors.js';
import { ownerOf, rateLimit } from './auth.js';
import { limitBody } from './limits.js';
import { observeRequests } from './observability.js';
import { settingsOf } from '../durable-objects/settings.js';
import { completions } from './routes/completions.js';
import { handoff } from './routes/handoff.js';
import { metrics } from './routes/metrics.js';
import { models } from './routes/models.js';
import { modelFiles } from './routes/model-files.js';
import { openapi } from './routes/openapi.js';
import { responses } from './routes/responses.js';
import { sessions } from './routes/sessions.js';
import { tokenize } from './routes/tokenize.js';

export { SessionDO } from '../durable-objects/session/session-do.js';
export { StageDO } from '../durable-objects/stage/stage-do.js';
export { RateLimitDO } from '../durable-objects/rate-limit-do.js';
export { MetricsDO } from '../durable-objects/metrics/metrics-do.js';

const app = new Hono<AppEnv>();

/** Every response carries x-request-id: the client's own (when it is a sane token) or a fresh one, for logs. */
app.use(async function requestId(c, next) {
  const given = c.req.header('x-request-id');
  const id = given && /^[\w.:-]{1,128}$/.test(given) ? given : crypto.randomUUID();
  c.set('requestId', id);
  await next();
  c.res.headers.set('x-request-id', id);
});
/** Metrics and the request's log line (workers/observability.ts), sent once the response body is complete. */
app.use(observeRequests);
/** CORS for browser clients: CORS_ORIGINS is "*" or a comma-separated list of origins; unset, none. */
app.use(async function corsFromEnv(c, next) {
  const allowed = settingsOf(c.env).corsOrigins;
  if (allowed.length === 0) return next();
  return cors({
    origin: allowed.includes('*') ? '*' : allowed,
    allowHeaders: ['authorization', 'content-type', 'x-request-id'],
    exposeHeaders: ['x-request-id', 'retry-after', 'x-hymba-fingerprint', 'x-hymba-turn', 'x-hymba-position'],
    maxAge: 600,
  })(c, next);
});
/** Who is calling (API keys, when configured) and whether their rate budget allows it. */
const PUBLIC = new Set(['/health', '/openapi.json']);
app.use(async function authenticate(c, next) {
  if (PUBLIC.has(c.req.path) || (c.req.path === '/metrics' && settingsOf(c.env).metricsPublic)) {
    c.set('owner', null);
    return next();
  }
  const owner = await ownerOf(c.env, c.req.header('authorization'));
  await rateLimit(c.env, owner);
  c.set('owner', owner);
  await next();
});
/** Session handoff (before the body limit: an uploaded state has its own, MAX_SNAPSHOT_BYTES). */
app.route('/', handoff);
/** Request bodies over MAX_BODY_BYTES: 413 (workers/limits.ts). */
app.use(limitBody);
app.route('/', models);
app.route('/', modelFiles);
app.route('/', completions);
app.route('/', sessions);
app.route('/', responses);
app.route('/', tokenize);
app.route('/', openapi);
app.route('/', metrics);
app.onError(onError);
app.notFound(notFound);

export default app;
