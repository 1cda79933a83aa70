// API keys (hashes in API_KEYS, bearer tokens compared in constant time), ownership of sessions (another
// key gets 404, never the data) and per-key rate limits (429 + Retry-After). The app runs with its real
// bindings plus these settings, as a deployment with the secrets set would.

import { env } from 'cloudflare:workers';
import { beforeAll, describe, expect, it } from 'vitest';
import app from '../../workers/index.js';
import { parseApiKeys, sha256, timingSafeEqual } from '../../workers/auth.js';
import { BASE, expectError, seedModel } from './api-helpers.js';

beforeAll(seedModel);

const hex = (b: Uint8Array): string => [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
const KEYS = { alice: 'sk-alice-0123456789', bob: 'sk-bob-9876543210', carol: 'sk-carol-5555', dave: 'sk-dave-7777' };

async function keyedEnv(extra: Record<string, string> = {}) {
  const entries = await Promise.all(Object.entries(KEYS).map(async ([n, k]) => `${n}:${hex(await sha256(k))}`));
  return { ...env, API_KEYS: entries.join(','), ...extra };
}

function request(e: object, path: string, key: string | null, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  if (key) headers.set('authorization', `Bearer ${key}`);
  if (init.body) headers.set('content-type', 'application/json');
  return Promise.resolve(app.fetch(new Request(BASE + path, { ...init, headers }), e));
}

describe('API keys', () => {
  it('parses name:sha256 entries and compares hashes exactly', async () => {
    const [k] = parseApiKeys(`x:${hex(await sha256('secret'))}`);
    expect(k!.name).toBe('x');
    expect(timingSafeEqual(k!.hash, await sha256('secret'))).toBe(true);
    expect(timingSafeEqual(k!.hash, await sha256('secreT'))).toBe(false);
    expect(() => parseApiKeys('x:1234')).toThrow(/64 hex/);
  });

  it('without a valid bearer key: 401 invalid_api_key; health and the OpenAPI document stay public', async () => {
    const e = await keyedEnv();
    await expectError(await request(e, '/v1/models', null), 401, 'invalid_api_key');
    await expectError(await request(e, '/v1/models', 'sk-wrong'), 401, 'invalid_api_key');
    expect((await request(e, '/v1/models', KEYS.alice)).status).toBe(200);
    expect((await request(e, '/openapi.json', null)).status).toBe(200);
    expect((await request(e, '/health', null)).status).not.toBe(401);
  });

  it("another key cannot read, continue, fork or delete a session: 404, and the owner's session is intact", async () => {
    const e = await keyedEnv();
    const created = await request(e, '/v1/sessions', KEYS.alice, {
      method: 'POST',
      body: JSON.stringify({ system: 'Hi.' }),
    });
    expect(created.status).toBe(201);
    const { id } = (await created.json()) as { id: string };
    await expectError(await request(e, `/v1/sessions/${id}`, KEYS.bob), 404);
    const msg = JSON.stringify({ content: 'hello', max_tokens: 2, temperature: 0 });
    await expectError(await request(e, `/v1/sessions/${id}/messages`, KEYS.bob, { method: 'POST', body: msg }), 404);
    await expectError(
      await request(e, `/v1/sessions/${id}/fork`, KEYS.bob, { method: 'POST', body: '{"turn":0}' }),
      404,
    );
    await expectError(await request(e, `/v1/sessions/${id}`, KEYS.bob, { method: 'DELETE' }), 404);
    const mine = await request(e, `/v1/sessions/${id}`, KEYS.alice);
    expect(mine.status).toBe(200);
    expect(((await mine.json()) as { messages: unknown[] }).messages).toHaveLength(1);
    expect((await request(e, `/v1/sessions/${id}/messages`, KEYS.alice, { method: 'POST', body: msg })).status).toBe(
      200,
    );
  });
});

describe('rate limits', () => {
  it('429 with Retry-After once a key has used its per-minute budget; other keys are unaffected', async () => {
    const e = await keyedEnv({ RATE_LIMIT_PER_MINUTE: '3' });
    for (let i = 0; i < 3; i++) expect((await request(e, '/v1/models', KEYS.carol)).status).toBe(200);
    const limited = await request(e, '/v1/models', KEYS.carol);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    await expectError(limited, 429, 'rate_limit_exceeded');
    expect((await request(e, '/v1/models', KEYS.dave)).status).toBe(200);
  });
});
