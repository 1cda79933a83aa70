// The Worker's bindings, as declared in wrangler.toml.

import type { SessionDO } from './session/session-do.js';
import type { StageDO } from './stage/stage-do.js';
import type { RateLimitDO } from './rate-limit-do.js';
import type { MetricsDO } from './metrics/metrics-do.js';

export interface Env {
  /** one SQLite-backed object per conversation */
  SESSIONS: DurableObjectNamespace<SessionDO>;
  /** pipeline stages: one object per (model, replica, stage) */
  STAGES: DurableObjectNamespace<StageDO>;
  /** pipeline replicas per model (default 1) */
  STAGE_REPLICAS?: string;
  /** most decode steps batched into one run at a stage (default 16; 1 turns batching off) */
  STAGE_MAX_BATCH?: string;
  /** how long a decode step waits at a stage for others to batch with (default 0 ms) */
  STAGE_BATCH_WAIT_MS?: string;
  /** bytes of snapshots a stage keeps in memory, in MiB (default 32) */
  STAGE_HOT_STATE_MB?: string;
  /** converted model files under MODEL_PREFIX */
  MODEL_STORE: R2Bucket;
  /** key prefix of the model in MODEL_STORE, ending with "/" */
  MODEL_PREFIX: string;
  /** per-API-key token buckets */
  RATE_LIMITS: DurableObjectNamespace<RateLimitDO>;
  /** secret: `name:sha256hex(key)` entries, comma-separated; unset: no authentication (development) */
  API_KEYS?: string;
  /** requests per minute per key (unset: unlimited) */
  RATE_LIMIT_PER_MINUTE?: string;
  /** origins browsers may call from: "*" or a comma-separated list (unset: no CORS headers) */
  CORS_ORIGINS?: string;
  /** the model id clients name (default "hymba") */
  MODEL_ID?: string;
  /** max_tokens when a request gives none (default 256; clamped to MAX_COMPLETION_TOKENS) */
  DEFAULT_MAX_TOKENS?: string;
  /** the one object aggregating every isolate's request metrics (GET /metrics) */
  METRICS: DurableObjectNamespace<MetricsDO>;
  /** "true": GET /metrics needs no API key (default: it needs one when API_KEYS is set) */
  METRICS_PUBLIC?: string;
  /** most messages in a Chat Completions request (default 512) */
  MAX_MESSAGES?: string;
  /** most tokens a request may ask to generate: max_tokens / max_completion_tokens (default 4096) */
  MAX_COMPLETION_TOKENS?: string;
  /** most prompt tokens a turn may process, below the model's context (unset: the context) */
  MAX_PROMPT_TOKENS?: string;
  /** largest request body in bytes (default 1048576) */
  MAX_BODY_BYTES?: string;
  /** largest state a client may send back (POST /v1/sessions/:id/snapshot), in bytes (default 64 MiB) */
  MAX_SNAPSHOT_BYTES?: string;
  /** least level of the JSON log lines written: info (default), warn, error or off */
  LOG_LEVEL?: string;
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
