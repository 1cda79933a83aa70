// Metrics, independent of where they run: what a Worker reports per request (RequestRecord), the aggregate
// the MetricsDO keeps for every isolate (MetricsAggregate, a plain JSON-able state), and its Prometheus text
// exposition (format 0.0.4). No Workers APIs here, so the Node tests can check the arithmetic.

/** The name of the one MetricsDO. */
export const METRICS_OBJECT = 'global';

/** Latency buckets in seconds (time to first token, inter-token gaps, request durations): 5 ms .. 60 s. */
export const LATENCY_BUCKETS_S: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** Snapshot size buckets in bytes: 1 KiB .. 1 GiB, by factors of 4. */
export const SNAPSHOT_BUCKETS_BYTES: readonly number[] = Array.from({ length: 11 }, (_, k) => 1024 * 4 ** k);

/** A session object counts as active while its last turn is at most this old. */
export const ACTIVE_SESSION_WINDOW_MS = 5 * 60_000;

/** Observations in buckets: `counts[i]` is how many fell in (bounds[i-1], bounds[i]]; the last is +Inf. */
export interface HistogramData {
  counts: number[];
  sum: number;
  count: number;
}

export function emptyHistogram(bounds: readonly number[]): HistogramData {
  return { counts: new Array<number>(bounds.length + 1).fill(0), sum: 0, count: 0 };
}

export function observe(h: HistogramData, bounds: readonly number[], value: number): void {
  if (!Number.isFinite(value)) return;
  let i = 0;
  while (i < bounds.length && value > bounds[i]!) i++;
  h.counts[i] = (h.counts[i] ?? 0) + 1;
  h.sum += value;
  h.count += 1;
}

/** Adds `from` into `into` (same bounds). */
export function mergeHistogram(into: HistogramData, from: HistogramData): void {
  for (let i = 0; i < into.counts.length; i++) into.counts[i] = (into.counts[i] ?? 0) + (from.counts[i] ?? 0);
  into.sum += from.sum;
  into.count += from.count;
}

/** One turn a request ran, as its Worker measured it. */
export interface TurnRecord {
  /** the session object's id (session API, prompt_cache_key); null for an ephemeral pool turn */
  session: string | null;
  promptTokens: number;
  completionTokens: number;
  cachedTokens: number;
  /** the `done` event's; null when the turn did not finish (error, disconnect) */
  finishReason: string | null;
  /** bytes of state the turn stored (0: none) */
  snapshotBytes: number;
  /** request start to the first token or tool call; null when there was none */
  ttftS: number | null;
  /** gaps between consecutive tokens, over LATENCY_BUCKETS_S */
  interToken: HistogramData;
}

/** What one request reports to the MetricsDO, once its response body is complete. */
export interface RequestRecord {
  /** the matched route pattern (`/v1/sessions/:id/messages`), or `unmatched` */
  route: string;
  method: string;
  status: number;
  /** request start to the end of the response body */
  durationS: number;
  /** error types: the HTTP error's (status >= 400) and any sent inside an event stream */
  errors: string[];
  turns: TurnRecord[];
  /** when the request ended (ms since the epoch): the session's last-seen time */
  at: number;
}

/** The aggregate over every request, as JSON (persisted by the MetricsDO as one row). */
export interface MetricsState {
  version: 1;
  /** JSON [route, method, status] -> count */
  requests: Record<string, number>;
  /** JSON [route, type] -> count */
  errors: Record<string, number>;
  /** finish_reason -> count */
  turns: Record<string, number>;
  promptTokens: number;
  completionTokens: number;
  cachedTokens: number;
  snapshotBytesTotal: number;
  ttft: HistogramData;
  interToken: HistogramData;
  snapshotBytes: HistogramData;
  /** route -> request durations */
  duration: Record<string, HistogramData>;
  /** session object id -> last turn (ms since the epoch) */
  sessions: Record<string, number>;
}

export function emptyState(): MetricsState {
  return {
    version: 1,
    requests: {},
    errors: {},
    turns: {},
    promptTokens: 0,
    completionTokens: 0,
    cachedTokens: 0,
    snapshotBytesTotal: 0,
    ttft: emptyHistogram(LATENCY_BUCKETS_S),
    interToken: emptyHistogram(LATENCY_BUCKETS_S),
    snapshotBytes: emptyHistogram(SNAPSHOT_BUCKETS_BYTES),
    duration: {},
    sessions: {},
  };
}

/** A persisted state, or a fresh one when it is missing or of another version. */
export function loadState(json: string | null | undefined): MetricsState {
  if (!json) return emptyState();
  try {
    const s = JSON.parse(json) as MetricsState;
    return s && s.version === 1 ? { ...emptyState(), ...s } : emptyState();
  } catch {
    return emptyState();
  }
}

const inc = (m: Record<string, number>, key: string, by = 1): void => {
  m[key] = (m[key] ?? 0) + by;
};
const count = (n: unknown): number => (typeof n === 'number' && Number.isFinite(n) && n > 0 ? n : 0);

/** Adds one request's record to the aggregate. */
export function applyRecord(s: MetricsState, r: RequestRecord): void {
  inc(s.requests, JSON.stringify([r.route, r.method, String(r.status)]));
  for (const type of r.errors) inc(s.errors, JSON.stringify([r.route, type]));
  observe((s.duration[r.route] ??= emptyHistogram(LATENCY_BUCKETS_S)), LATENCY_BUCKETS_S, r.durationS);
  for (const t of r.turns) {
    s.promptTokens += count(t.promptTokens);
    s.completionTokens += count(t.completionTokens);
    s.cachedTokens += count(t.cachedTokens);
    if (t.finishReason !== null) inc(s.turns, t.finishReason);
    if (count(t.snapshotBytes) > 0) {
      observe(s.snapshotBytes, SNAPSHOT_BUCKETS_BYTES, t.snapshotBytes);
      s.snapshotBytesTotal += t.snapshotBytes;
    }
    if (t.ttftS !== null) observe(s.ttft, LATENCY_BUCKETS_S, t.ttftS);
    if (t.interToken.counts.length === s.interToken.counts.length) mergeHistogram(s.interToken, t.interToken);
    if (t.session !== null) s.sessions[t.session] = Math.max(s.sessions[t.session] ?? 0, r.at);
  }
}

/** Forgets sessions idle for longer than the window; returns how many are left (the active ones). */
export function pruneSessions(s: MetricsState, now: number): number {
  let active = 0;
  for (const [id, at] of Object.entries(s.sessions)) {
    if (now - at > ACTIVE_SESSION_WINDOW_MS) delete s.sessions[id];
    else active++;
  }
  return active;
}

// ---- Prometheus text exposition (version 0.0.4) ----

export const EXPOSITION_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

const escapeLabel = (v: string): string => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
const escapeHelp = (v: string): string => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');

function formatValue(v: number): string {
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  if (Number.isNaN(v)) return 'NaN';
  return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(15)));
}

function labels(pairs: readonly (readonly [string, string])[]): string {
  if (pairs.length === 0) return '';
  return `{${pairs.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',')}}`;
}

class Exposition {
  private readonly lines: string[] = [];

  header(name: string, type: 'counter' | 'gauge' | 'histogram', help: string): this {
    this.lines.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
    return this;
  }

  sample(name: string, pairs: readonly (readonly [string, string])[], value: number): this {
    this.lines.push(`${name}${labels(pairs)} ${formatValue(value)}`);
    return this;
  }

  histogram(name: string, pairs: readonly (readonly [string, string])[], bounds: readonly number[], h: HistogramData) {
    let cumulative = 0;
    bounds.forEach((le, i) => {
      cumulative += h.counts[i] ?? 0;
      this.sample(`${name}_bucket`, [...pairs, ['le', formatValue(le)]], cumulative);
    });
    this.sample(`${name}_bucket`, [...pairs, ['le', '+Inf']], h.count);
    this.sample(`${name}_sum`, pairs, h.sum);
    this.sample(`${name}_count`, pairs, h.count);
    return this;
  }

  text(): string {
    return this.lines.join('\n') + '\n';
  }
}

const sortedEntries = (m: Record<string, number>): [string, number][] =>
  Object.entries(m).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));

/** The aggregate as Prometheus text; `now` decides which sessions are active. */
export function exposition(s: MetricsState, now: number): string {
  const out = new Exposition();
  out.header('hymba_requests_total', 'counter', 'HTTP requests by matched route pattern, method and status.');
  for (const [key, n] of sortedEntries(s.requests)) {
    const [route, method, status] = JSON.parse(key) as [string, string, string];
    out.sample(
      'hymba_requests_total',
      [
        ['route', route],
        ['method', method],
        ['status', status],
      ],
      n,
    );
  }
  out.header(
    'hymba_errors_total',
    'counter',
    'Error responses (status >= 400) and errors sent inside event streams, by route and error type.',
  );
  for (const [key, n] of sortedEntries(s.errors)) {
    const [route, type] = JSON.parse(key) as [string, string];
    out.sample(
      'hymba_errors_total',
      [
        ['route', route],
        ['type', type],
      ],
      n,
    );
  }
  out.header('hymba_prompt_tokens_total', 'counter', 'Prompt tokens of every turn (cached ones included).');
  out.sample('hymba_prompt_tokens_total', [], s.promptTokens);
  out.header('hymba_completion_tokens_total', 'counter', 'Generated tokens.');
  out.sample('hymba_completion_tokens_total', [], s.completionTokens);
  out.header(
    'hymba_cached_tokens_total',
    'counter',
    'Prompt tokens served from stored state instead of being processed.',
  );
  out.sample('hymba_cached_tokens_total', [], s.cachedTokens);
  out.header('hymba_turns_total', 'counter', 'Finished turns by finish reason.');
  for (const [reason, n] of sortedEntries(s.turns)) out.sample('hymba_turns_total', [['finish_reason', reason]], n);
  out.header(
    'hymba_time_to_first_token_seconds',
    'histogram',
    'Request start to the first generated token or tool call.',
  );
  out.histogram('hymba_time_to_first_token_seconds', [], LATENCY_BUCKETS_S, s.ttft);
  out.header(
    'hymba_inter_token_latency_seconds',
    'histogram',
    'Gaps between consecutive generated tokens, as the Worker read them.',
  );
  out.histogram('hymba_inter_token_latency_seconds', [], LATENCY_BUCKETS_S, s.interToken);
  out.header('hymba_request_duration_seconds', 'histogram', 'Request start to the end of the response body, by route.');
  for (const route of Object.keys(s.duration).sort()) {
    out.histogram('hymba_request_duration_seconds', [['route', route]], LATENCY_BUCKETS_S, s.duration[route]!);
  }
  out.header(
    'hymba_active_sessions',
    'gauge',
    'Session objects that ran a turn in the last 5 minutes (ephemeral turns excluded).',
  );
  out.sample('hymba_active_sessions', [], pruneSessions(s, now));
  out.header('hymba_snapshot_bytes', 'histogram', 'Bytes of model state stored per turn (turns that stored some).');
  out.histogram('hymba_snapshot_bytes', [], SNAPSHOT_BUCKETS_BYTES, s.snapshotBytes);
  out.header('hymba_snapshot_bytes_total', 'counter', 'Bytes of model state stored by all turns.');
  out.sample('hymba_snapshot_bytes_total', [], s.snapshotBytesTotal);
  return out.text();
}
