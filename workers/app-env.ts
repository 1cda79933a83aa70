// The Hono environment of every route: bindings, and what middleware puts in the context.

import type { Env } from '../durable-objects/env.js';
import type { RequestMetrics } from './observability.js';

export interface AppEnv {
  Bindings: Env;
  Variables: {
    /** the API key's name (API_KEYS); null while the server runs without keys */
    owner: string | null;
    /** the x-request-id of the response (the client's own when sane), for logs */
    requestId: string;
    /** this request's numbers: pass it to openTurn as the observer; sent to the MetricsDO at the end */
    metrics: RequestMetrics;
  };
}
