// The Worker's bindings and variables, as declared in wrangler.toml (secrets: API_KEYS).

import type { SessionDO } from './session/session-do.js';
import type { StageDO } from './stage/stage-do.js';
import type { RateLimitDO } from './rate-limit-do.js';
import type { MetricsDO } from './metrics/metrics-do.js';

export interface Env {
  /** one SQLite-backed object per conversation */
  SESSIONS: DurableObjectNamespace<SessionDO>;
  /** pipeline stages: one object per (model, replica, stage) */
  STAGES: DurableObjectNamespace<StageDO>;
  /** per-API-key token buckets */
  RATE_LIMITS: DurableObjectNamespace<RateLimitDO>;
  /** the one object aggregating every isolate's request metrics (GET /metrics) */
  METRICS: DurableObjectNamespace<MetricsDO>;
  /** converted model files under MODEL_PREFIX */
  MODEL_STORE: R2Bucket;

  // The variables, as given: read them through settingsOf (./settings.ts: one table of kinds, defaults and
  // meanings), never directly.
  MODEL_PREFIX: string;
  MODEL_ID?: string;
  API_KEYS?: string;
  RATE_LIMIT_PER_MINUTE?: string;
  CORS_ORIGINS?: string;
  METRICS_PUBLIC?: string;
  LOG_LEVEL?: string;
  MAX_MESSAGES?: string;
  MAX_COMPLETION_TOKENS?: string;
  DEFAULT_MAX_TOKENS?: string;
  MAX_BODY_BYTES?: string;
  MAX_SNAPSHOT_BYTES?: string;
  MAX_PROMPT_TOKENS?: string;
  STAGE_REPLICAS?: string;
  STAGE_MAX_BATCH?: string;
  STAGE_BATCH_WAIT_MS?: string;
  STAGE_HOT_STATE_MB?: string;
}

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Cloudflare {
    // what `import { env } from 'cloudflare:workers'` is typed as
    // eslint-disable-next-line @typescript-eslint/no-empty-object-type
    interface Env extends HymbaEnv {}
    // what `import { exports } from 'cloudflare:workers'` is typed as
    interface GlobalProps {
      mainModule: typeof import('../workers/index.js');
      durableNamespaces: 'SessionDO' | 'StageDO' | 'RateLimitDO' | 'MetricsDO';
    }
  }
}
type HymbaEnv = Env;
