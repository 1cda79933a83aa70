// GET /metrics: the Prometheus text exposition of every isolate's requests, aggregated by the MetricsDO.
// Needs an API key like the model routes when API_KEYS is set, unless METRICS_PUBLIC is "true".

import { Hono } from 'hono';
import type { AppEnv } from '../app-env.js';
import { EXPOSITION_CONTENT_TYPE, METRICS_OBJECT } from '../../durable-objects/metrics/metrics.js';

export const metrics = new Hono<AppEnv>();

metrics.get('/metrics', async function prometheusMetrics(c) {
  const text = await c.env.METRICS.getByName(METRICS_OBJECT).exposition();
  return c.body(text, 200, { 'content-type': EXPOSITION_CONTENT_TYPE, 'cache-control': 'no-store' });
});
