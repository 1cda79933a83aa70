// The Worker: Hono routes. Only a health check for now; the serving routes come later.

import { Hono } from 'hono';
import type { Env } from './env.js';

export { SessionDO } from '../durable-objects/session-do.js';

const app = new Hono<{ Bindings: Env }>();

app.get('/health', (c) => c.json({ status: 'ok' }));

export default app;
