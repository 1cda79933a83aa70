// MetricsDO: one object (METRICS_OBJECT, "global") aggregating every isolate's request records into the counters and
// histograms GET /metrics exposes. The aggregate lives in memory and is written to SQLite as one JSON row on
// every record (the runtime coalesces the writes of a burst), so eviction or a restart loses nothing.
// Workers send records after their responses (ctx.waitUntil): this object is never on a request's path.

import { DurableObject } from 'cloudflare:workers';
import type { Env } from '../env.js';
import { applyRecord, exposition, loadState, type MetricsState, type RequestRecord } from './metrics.js';

export class MetricsDO extends DurableObject<Env> {
  private readonly state: MetricsState;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    const sql = ctx.storage.sql;
    sql.exec(`CREATE TABLE IF NOT EXISTS metrics (key TEXT PRIMARY KEY, value TEXT NOT NULL)`);
    const row = sql.exec<{ value: string }>(`SELECT value FROM metrics WHERE key = 'state'`).toArray()[0];
    this.state = loadState(row?.value);
  }

  /** Adds one request's numbers. */
  async record(r: RequestRecord): Promise<void> {
    applyRecord(this.state, r);
    this.persist();
  }

  /** The Prometheus text exposition of everything recorded so far. */
  async exposition(): Promise<string> {
    return exposition(this.state, Date.now());
  }

  private persist(): void {
    this.ctx.storage.sql.exec(
      `INSERT OR REPLACE INTO metrics (key, value) VALUES ('state', ?)`,
      JSON.stringify(this.state),
    );
  }
}
