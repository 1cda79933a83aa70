// Helpers of the API tests inside workerd: requests through the Worker's own fetch handler (real routes,
// real SessionDOs with SQLite, the model from R2), SSE parsing, and session reads.

import { env, exports } from 'cloudflare:workers';
import OpenAI from 'openai';
import { expect, inject } from 'vitest';
import type { ApiExpectations } from './scenario.js';
import { testStages } from './test-objects.js';

export const BASE = 'http://localhost';

/** Put the converted tiny model into this test file's MODEL_STORE (storage is isolated per file). */
export async function seedModel(): Promise<void> {
  for (const [name, bytes] of Object.entries(inject('tinyModelFiles')))
    await env.MODEL_STORE.put(env.MODEL_PREFIX + name, bytes);
}

export const expected = (): ApiExpectations => inject('apiExpectations');

/** A request through the Worker's fetch handler. */
export function call(path: string, init?: RequestInit): Promise<Response> {
  return exports.default.fetch(new Request(BASE + path, init));
}

export function post(path: string, body: unknown): Promise<Response> {
  return call(path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

/** The openai SDK, pointed at the Worker's fetch handler; no retries, so a 409 or 5xx shows as it is. */
export function openaiClient(): OpenAI {
  return new OpenAI({
    apiKey: 'test',
    baseURL: `${BASE}/v1`,
    maxRetries: 0,
    fetch: (url, init) => exports.default.fetch(new Request(url, init)),
  });
}

export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** Asserts an OpenAI error response and returns its error object. */
export async function expectError(res: Response, status: number, code?: string | null): Promise<ErrorBody['error']> {
  const body = (await res.json()) as ErrorBody;
  expect({ status: res.status, body }).toMatchObject({ status });
  expect(Object.keys(body.error).sort()).toEqual(['code', 'message', 'param', 'type']);
  expect(typeof body.error.message).toBe('string');
  expect(body.error.message.length).toBeGreaterThan(0);
  expect(typeof body.error.type).toBe('string');
  if (code !== undefined) expect(body.error.code).toBe(code);
  return body.error;
}

// ---- SSE ----

/** Splits SSE text into the JSON payloads of its `data:` frames; `[DONE]` is returned as the string. */
export function sseFrames(text: string): unknown[] {
  const out: unknown[] = [];
  for (const frame of text.split('\n\n')) {
    const data = frame
      .split('\n')
      .filter((l) => l.startsWith('data: '))
      .map((l) => l.slice('data: '.length))
      .join('\n');
    if (data === '') continue;
    out.push(data === '[DONE]' ? data : JSON.parse(data));
  }
  return out;
}

/** Reads SSE frames one at a time from a response body. */
export class SseReader {
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  private readonly decoder = new TextDecoder();
  private buffered = '';

  constructor(body: ReadableStream<Uint8Array>) {
    this.reader = body.getReader();
  }

  /** The next `data:` payload (keep-alive comments skipped), or null at the end of the stream. */
  async next(): Promise<unknown> {
    for (;;) {
      const end = this.buffered.indexOf('\n\n');
      if (end >= 0) {
        const frame = this.buffered.slice(0, end + 2);
        this.buffered = this.buffered.slice(end + 2);
        const [payload] = sseFrames(frame);
        if (payload !== undefined) return payload;
        continue;
      }
      const { value, done } = await this.reader.read();
      if (done) return null;
      this.buffered += this.decoder.decode(value, { stream: true });
    }
  }

  async rest(): Promise<unknown[]> {
    const out: unknown[] = [];
    for (let p = await this.next(); p !== null; p = await this.next()) out.push(p);
    return out;
  }

  cancel(): Promise<void> {
    return this.reader.cancel();
  }
}

// ---- sessions ----

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
}

/** A non-streaming reply of the session API or Chat Completions (with return_token_ids). */
export interface ChatReply {
  id: string;
  object: string;
  choices: { message: { role: string; content: string }; finish_reason: string; token_ids?: number[] }[];
  usage: Usage;
  prompt_token_ids?: number[];
}

export interface SessionView {
  id: string;
  messages: { role: string; content: string; turn: number }[];
  turns: { turn: number; promptTokens: number; completionTokens: number; cachedTokens: number }[];
  state: { tokens: number; snapshots: number; snapshot_bytes: number };
}

export async function createSession(system?: string): Promise<string> {
  const res = await post('/v1/sessions', system === undefined ? {} : { system });
  expect(res.status).toBe(201);
  const body = (await res.json()) as { id: string; object: string };
  expect(body.object).toBe('session');
  return body.id;
}

export async function readSession(id: string): Promise<SessionView> {
  const res = await call(`/v1/sessions/${id}`);
  expect(res.status).toBe(200);
  return (await res.json()) as SessionView;
}

/** POST a user message (greedy, return_token_ids) and return the reply; fails on a non-200. */
export async function sendMessage(
  id: string,
  content: string,
  extra: Record<string, unknown> = {},
): Promise<ChatReply> {
  const res = await postMessage(id, content, extra);
  if (res.status !== 200) throw new Error(`message to ${id}: HTTP ${res.status} ${await res.text()}`);
  return (await res.json()) as ChatReply;
}

export function postMessage(id: string, content: string, extra: Record<string, unknown> = {}): Promise<Response> {
  return post(`/v1/sessions/${id}/messages`, { content, temperature: 0, return_token_ids: true, ...extra });
}

export const sleep = (ms: number): Promise<void> => new Promise((ok) => setTimeout(ok, ms));

/** Stage k's object in the one pipeline replica the tests run (STAGE_REPLICAS = 1). */
export const stageStub = (k: number) => testStages().getByName(`${inject('tinyFingerprint')}/r0/s${k}`);
