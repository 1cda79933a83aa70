// The Hono environment of every route: bindings, and what middleware puts in the context.

import type { Env } from './env.js';

export interface AppEnv {
  Bindings: Env;
  Variables: {
    /** the API key's name (API_KEYS); null while the server runs without keys */
    owner: string | null;
  };
}
