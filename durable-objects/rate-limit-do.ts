// RateLimitDO: one object per API key holding a token bucket in memory (capacity = the per-minute limit,
// refilled continuously). Eviction refills it: a limit that forgets is safe for a rate limiter.

import { DurableObject } from 'cloudflare:workers';
import type { Env } from './env.js';

export type TakeResult = { ok: true; left: number } | { ok: false; retryAfterS: number };

export class RateLimitDO extends DurableObject<Env> {
  private tokens: number | null = null;
  private at = 0;

  async take(perMinute: number): Promise<TakeResult> {
    const now = Date.now();
    const rate = perMinute / 60_000; // tokens per ms
    this.tokens = this.tokens === null ? perMinute : Math.min(perMinute, this.tokens + (now - this.at) * rate);
    this.at = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return { ok: true, left: Math.floor(this.tokens) };
    }
    return { ok: false, retryAfterS: Math.max(1, Math.ceil((1 - this.tokens) / rate / 1000)) };
  }
}
