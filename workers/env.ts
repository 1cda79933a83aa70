// The Worker's bindings, as declared in wrangler.toml.

import type { SessionDO } from '../durable-objects/session-do.js';

export interface Env {
  /** one SQLite-backed object per conversation */
  SESSIONS: DurableObjectNamespace<SessionDO>;
  /** converted model files under MODEL_PREFIX */
  MODEL_STORE: R2Bucket;
  /** key prefix of the model in MODEL_STORE, ending with "/" */
  MODEL_PREFIX: string;
  /** the model id clients name (default "hymba") */
  MODEL_ID?: string;
  /** max_tokens when a request gives none (default 256) */
  DEFAULT_MAX_TOKENS?: string;
}

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Cloudflare {
    // what `import { env } from 'cloudflare:workers'` is typed as
    // eslint-disable-next-line @typescript-eslint/no-empty-object-type
    interface Env extends HymbaEnv {}
    // what `import { exports } from 'cloudflare:workers'` is typed as
    interface GlobalProps {
      mainModule: typeof import('./index.js');
      durableNamespaces: 'SessionDO';
    }
  }
}
type HymbaEnv = Env;
