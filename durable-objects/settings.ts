// Settings: every environment variable the Worker and its Durable Objects read (wrangler.toml [vars] and
// secrets), parsed in one place with one rule per kind. Set but malformed counts as unset: the default.
//
//   variable               kind          default        meaning
//   MODEL_PREFIX           text          (required)     key prefix of the model in MODEL_STORE, ending with "/"
//   MODEL_ID               text          hymba          the model id clients name
//   API_KEYS               text          unset          secret: `name:sha256hex(key)` entries, comma-separated
//                                                       (workers/auth.ts); unset: no authentication
//   RATE_LIMIT_PER_MINUTE  positive int  unset          requests per minute per API key; unset: unlimited
//   CORS_ORIGINS           list          empty          origins browsers may call from: "*" or a list; empty:
//                                                       no CORS headers
//   METRICS_PUBLIC         bool          false          GET /metrics needs no API key
//   LOG_LEVEL              enum          info           least level of the JSON log lines: info, warn, error, off
//   MAX_MESSAGES           positive int  512            messages in a Chat Completions request (else 400)
//   MAX_COMPLETION_TOKENS  positive int  4096           tokens a request may ask to generate (else 400)
//   DEFAULT_MAX_TOKENS     positive int  256            max tokens when a request names none (at most
//                                                       MAX_COMPLETION_TOKENS)
//   MAX_BODY_BYTES         positive int  1048576        largest request body (else 413)
//   MAX_SNAPSHOT_BYTES     positive int  67108864       largest state a client may send back (session handoff)
//   MAX_PROMPT_TOKENS      positive int  unset          prompt tokens a turn may process; unset: the context
//   STAGE_REPLICAS         positive int  1              pipeline replicas per model
//   STAGE_MAX_BATCH        positive int  16             decode steps batched into one stage run (1: off)
//   STAGE_BATCH_WAIT_MS    whole number  0              how long a decode step waits at a stage for company
//   STAGE_HOT_STATE_MB     whole number  32             MiB of snapshots a stage keeps in memory
//
// Kinds: positive int: decimal digits, > 0; whole number: the same, >= 0; bool: "true" (any case) or not;
// list: comma-separated, blanks dropped; enum: one of the names (any case); text: blank is unset.
// Surrounding spaces never matter.

import type { Env } from './env.js';

export type LogLevel = 'info' | 'warn' | 'error' | 'off';

export interface Settings {
  modelPrefix: string;
  modelId: string;
  /** the raw API_KEYS entries; null: the server is open */
  apiKeys: string | null;
  /** null: unlimited */
  rateLimitPerMinute: number | null;
  corsOrigins: string[];
  metricsPublic: boolean;
  logLevel: LogLevel;
  maxMessages: number;
  maxCompletionTokens: number;
  /** already clamped to maxCompletionTokens */
  defaultMaxTokens: number;
  maxBodyBytes: number;
  maxSnapshotBytes: number;
  /** null: the model's context is the only limit */
  maxPromptTokens: number | null;
  stageReplicas: number;
  stageMaxBatch: number;
  stageBatchWaitMs: number;
  stageHotStateMb: number;
}

type Var = string | undefined;

const text = (v: Var): string | null => (typeof v === 'string' && v.trim() !== '' ? v.trim() : null);

/** An integer of at least `min` written in decimal digits, else null. */
function int(v: Var, min: number): number | null {
  const s = text(v);
  if (s === null || !/^\d+$/.test(s)) return null;
  const n = Number(s);
  return Number.isSafeInteger(n) && n >= min ? n : null;
}

const positive = (v: Var, fallback: number): number => int(v, 1) ?? fallback;
const whole = (v: Var, fallback: number): number => int(v, 0) ?? fallback;
const bool = (v: Var): boolean => text(v)?.toLowerCase() === 'true';
const list = (v: Var): string[] =>
  (v ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

function oneOf<T extends string>(v: Var, names: readonly T[], fallback: T): T {
  const s = text(v)?.toLowerCase();
  return names.find((n) => n === s) ?? fallback;
}

export const DEFAULTS = {
  modelId: 'hymba',
  maxMessages: 512,
  maxCompletionTokens: 4096,
  defaultMaxTokens: 256,
  maxBodyBytes: 1024 * 1024,
  maxSnapshotBytes: 64 * 1024 * 1024,
  stageReplicas: 1,
  stageMaxBatch: 16,
  stageBatchWaitMs: 0,
  stageHotStateMb: 32,
} as const;

function parse(env: Env): Settings {
  const maxCompletionTokens = positive(env.MAX_COMPLETION_TOKENS, DEFAULTS.maxCompletionTokens);
  return {
    modelPrefix: env.MODEL_PREFIX,
    modelId: text(env.MODEL_ID) ?? DEFAULTS.modelId,
    apiKeys: text(env.API_KEYS),
    rateLimitPerMinute: int(env.RATE_LIMIT_PER_MINUTE, 1),
    corsOrigins: list(env.CORS_ORIGINS),
    metricsPublic: bool(env.METRICS_PUBLIC),
    logLevel: oneOf(env.LOG_LEVEL, ['info', 'warn', 'error', 'off'], 'info'),
    maxMessages: positive(env.MAX_MESSAGES, DEFAULTS.maxMessages),
    maxCompletionTokens,
    defaultMaxTokens: Math.min(positive(env.DEFAULT_MAX_TOKENS, DEFAULTS.defaultMaxTokens), maxCompletionTokens),
    maxBodyBytes: positive(env.MAX_BODY_BYTES, DEFAULTS.maxBodyBytes),
    maxSnapshotBytes: positive(env.MAX_SNAPSHOT_BYTES, DEFAULTS.maxSnapshotBytes),
    maxPromptTokens: int(env.MAX_PROMPT_TOKENS, 1),
    stageReplicas: positive(env.STAGE_REPLICAS, DEFAULTS.stageReplicas),
    stageMaxBatch: positive(env.STAGE_MAX_BATCH, DEFAULTS.stageMaxBatch),
    stageBatchWaitMs: whole(env.STAGE_BATCH_WAIT_MS, DEFAULTS.stageBatchWaitMs),
    stageHotStateMb: whole(env.STAGE_HOT_STATE_MB, DEFAULTS.stageHotStateMb),
  };
}

const parsed = new WeakMap<object, Settings>();

/** The settings of `env`, parsed on first use (an env object's variables do not change). */
export function settingsOf(env: Env): Settings {
  let s = parsed.get(env);
  if (!s) {
    s = parse(env);
    parsed.set(env, s);
  }
  return s;
}
