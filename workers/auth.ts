// API keys and per-key rate limits. Keys come from the API_KEYS secret as `name:sha256hex` entries (only
// hashes are stored anywhere); a request's bearer key is hashed and compared in constant time with every
// entry. The key's name is the owner of what the request creates: sessions, cache entries. Without
// API_KEYS the server is open (local development) and every caller is the same anonymous owner.

import { ApiError } from './api/errors.js';
import type { Env } from '../durable-objects/env.js';
import { settingsOf } from '../durable-objects/settings.js';

export interface ApiKeyEntry {
  name: string;
  hash: Uint8Array;
}

const hex = (s: string): Uint8Array => Uint8Array.from(s.match(/../g) ?? [], (b) => parseInt(b, 16));

/** Parse `name:sha256hex,name2:sha256hex`; a malformed entry is a configuration error. */
export function parseApiKeys(spec: string): ApiKeyEntry[] {
  return spec
    .split(',')
    .map((e) => e.trim())
    .filter(Boolean)
    .map((e) => {
      const m = /^([\w.-]{1,64}):([0-9a-f]{64})$/i.exec(e);
      if (!m) throw new Error('API_KEYS: each entry must be name:<64 hex digits of sha-256(key)>');
      return { name: m[1]!, hash: hex(m[2]!.toLowerCase()) };
    });
}

export async function sha256(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text)));
}

/** Equal-length comparison whose time does not depend on where the bytes differ. */
export function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/** The owner of a request: null without API_KEYS; the matching key's name; else 401. */
export async function ownerOf(env: Env, authorization: string | undefined): Promise<string | null> {
  const spec = settingsOf(env).apiKeys;
  if (spec === null) return null;
  const keys = parseApiKeys(spec);
  const m = /^Bearer\s+(\S+)$/i.exec(authorization ?? '');
  if (!m) throw ApiError.unauthorized();
  const hash = await sha256(m[1]!);
  let owner: string | null = null;
  for (const k of keys) if (timingSafeEqual(hash, k.hash) && owner === null) owner = k.name; // visit every entry
  if (owner === null) throw ApiError.unauthorized('Incorrect API key provided.');
  return owner;
}

/** Take one request from the owner's budget (RATE_LIMIT_PER_MINUTE; unset: unlimited); 429 when empty. */
export async function rateLimit(env: Env, owner: string | null): Promise<void> {
  const perMinute = settingsOf(env).rateLimitPerMinute;
  if (perMinute === null) return;
  const stub = env.RATE_LIMITS.getByName(`key:${owner ?? ''}`);
  const r = await stub.take(perMinute);
  if (!r.ok) throw ApiError.rateLimited(r.retryAfterS);
}
