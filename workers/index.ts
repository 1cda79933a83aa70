// The Worker: a Hono app over the session Durable Objects. Routes live in routes/, wire formats in api/.

import { Hono } from 'hono';
import type { AppEnv } from './app-env.js';
import { notFound, onError } from './api/errors.js';
import { completions } from './routes/completions.js';
import { models } from './routes/models.js';
import { sessions } from './routes/sessions.js';

export { SessionDO } from '../durable-objects/session-do.js';
export { StageDO } from '../durable-objects/stage-do.js';

const app = new Hono<AppEnv>();

app.use(async function anonymous(c, next) {
  c.set('owner', null); // API keys come with the security work; until then every caller is the same owner
  await next();
});
app.route('/', models);
app.route('/', completions);
app.route('/', sessions);
app.onError(onError);
app.notFound(notFound);

export default app;
