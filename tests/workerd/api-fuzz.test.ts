// Inside workerd: property-based fuzzing (fast-check) of request bodies and path ids across every route.
// Whatever a client sends, the answer is never a 5xx (nor a hang); every error is the OpenAI error object with a
// message; a 2xx is JSON, or an SSE stream (drained) exactly when the body asks for "stream": true, ending with
// [DONE] / the final response event / an error frame, never a server_error frame. Bodies that a session route's
// schema rejects, and junk ids, never change what is stored: the recorded sessions' transcripts, turn logs and
// state, a prompt_cache_key entry's rows and a stored response stay exactly as they were.
//
// Arbitraries: any JSON value; valid bodies of each route with fields replaced (wrong type, out of range, huge
// strings, nesting up to 100000 deep, 1e309 and other numbers only JSON text can carry), deleted or added;
// random JSON schemas as tool parameters and output formats; non-JSON text and bytes under any content-type;
// junk, lookalike and foreign ids in paths.
//
// Deterministic: each property has a fixed seed (in its name); a failure prints the seed, the counterexample and
// the request. Bodies that happen to be valid ask for at most 2 tokens, so they run a tiny turn.

import { runInDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import type { z } from 'zod';
import {
  ChatCompletionRequestSchema,
  CompletionRequestSchema,
  CreateSessionRequestSchema,
  DetokenizeRequestSchema,
  ForkSessionRequestSchema,
  SessionMessageRequestSchema,
  TokenizeRequestSchema,
} from '../../workers/api/schemas.js';
import { ResponseCreateRequestSchema } from '../../workers/api/responses-schemas.js';
import type { Env } from '../../durable-objects/env.js';
import app from '../../workers/index.js';
import {
  BASE,
  call,
  createSession,
  post,
  readSession,
  seedModel,
  sendMessage,
  sseFrames,
  type ChatReply,
} from './api-helpers.js';

beforeAll(seedModel);

const SEED = 20_240_611;
/** A property's run: its seed (printed by fast-check on failure) and number of runs; stops at the first failure. */
function params<T>(seed: number, numRuns: number): fc.Parameters<T> {
  return { seed, numRuns, endOnFailure: true };
}

// ---------------------------------------------------------------------------------------------------------------
// The property every response must have

type Json = unknown;

interface Sent {
  method: string;
  path: string;
  contentType?: string | null;
  body?: string | Uint8Array | null;
}

/** What a counterexample prints: the request, shortened. */
function describeSent(s: Sent): string {
  const body =
    s.body == null
      ? ''
      : typeof s.body === 'string'
        ? s.body.length > 400
          ? `${s.body.slice(0, 400)}... (${s.body.length} chars)`
          : s.body
        : `<${s.body.byteLength} bytes>`;
  return `${s.method} ${s.path.length > 200 ? `${s.path.slice(0, 200)}...` : s.path} [${s.contentType ?? 'no content-type'}] ${body}`;
}

/** The waitUntil work of the fuzzed requests (their log line and metrics record), drained after each one. */
const pending: Promise<unknown>[] = [];
const executionCtx = {
  waitUntil: (p: Promise<unknown>) => void pending.push(p),
  passThroughOnException: () => undefined,
  props: {},
} as unknown as ExecutionContext;

/**
 * The fuzzed requests go to the Worker's Hono app directly (same app, same bindings: real SessionDOs, SQLite,
 * R2) rather than through `call`: in this harness every request through `exports.default.fetch` costs more than
 * the one before (about +0.4 ms per request made in the file, measured: 14 ms -> 350 ms after 800 requests), so
 * the thousands of requests here would take many minutes. The setup and the final checks use `call`/`post`.
 */
async function send(s: Sent): Promise<Response> {
  const headers: Record<string, string> = {};
  if (s.contentType != null) headers['content-type'] = s.contentType;
  const init: RequestInit = { method: s.method, headers };
  if (s.body != null) init.body = typeof s.body === 'string' ? s.body : new Uint8Array(s.body);
  return app.fetch(new Request(BASE + s.path, init), env as unknown as Env, executionCtx);
}

/** A request that has not answered (completely) by then fails the property: a hang is a bug too. */
const ANSWER_MS = 30_000;

interface Checked {
  status: number;
  json: Json;
}

const STREAMING_ROUTE = /^\/v1\/(chat\/completions|completions|responses|sessions\/[^/]+\/messages)$/;

/** `s` goes to a route that streams and its body (as the server reads it) has "stream": true. */
function asksForStream(s: Sent): boolean {
  if (s.method !== 'POST' || s.body == null || !STREAMING_ROUTE.test(new URL(BASE + s.path).pathname)) return false;
  const value = serverValue(decodeBody(s.body));
  return typeof value === 'object' && value !== null && (value as { stream?: unknown }).stream === true;
}

/** Sends `s` and checks the response: never 5xx; errors in the OpenAI shape; 2xx JSON or a drained SSE stream. */
async function sendAndCheck(s: Sent): Promise<Checked> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_ok, no) => {
    timer = setTimeout(
      () => no(new Error(`no complete answer within ${ANSWER_MS} ms\n  request: ${describeSent(s)}`)),
      ANSWER_MS,
    );
  });
  const { res, text } = await Promise.race([
    (async () => {
      const res = await send(s);
      return { res, text: await res.text() }; // drains an event stream too
    })(),
    timeout,
  ]).finally(() => clearTimeout(timer));
  const type = res.headers.get('content-type') ?? '';
  await Promise.allSettled(pending.splice(0));
  const fail = (why: string): never => {
    throw new Error(
      `${why}\n  request: ${describeSent(s)}\n  response: HTTP ${res.status} [${type}] ${text.slice(0, 600)}`,
    );
  };
  if (res.status >= 500) fail(`a ${res.status}`);
  if (res.status >= 400) {
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      return fail('an error response that is not JSON');
    }
    const error = (body as { error?: Record<string, unknown> } | null)?.error;
    if (typeof error !== 'object' || error === null) fail('an error response without an "error" object');
    const e = error as Record<string, unknown>;
    if (Object.keys(e).sort().join() !== 'code,message,param,type')
      fail('error keys are not {message, type, param, code}');
    if (typeof e.message !== 'string' || e.message === '') fail('error.message is not a non-empty string');
    if (typeof e.type !== 'string' || e.type === '') fail('error.type is not a non-empty string');
    if (e.param !== null && typeof e.param !== 'string') fail('error.param is neither a string nor null');
    if (e.code !== null && typeof e.code !== 'string') fail('error.code is neither a string nor null');
    if (e.type === 'server_error') fail('error.type server_error');
    return { status: res.status, json: body };
  }
  if (type.startsWith('text/event-stream')) {
    let frames: unknown[] = [];
    try {
      frames = sseFrames(text);
    } catch {
      fail('an SSE frame that is not JSON');
    }
    if (!asksForStream(s)) fail('an event stream for a request without "stream": true');
    if (frames.length === 0) fail('an empty event stream');
    for (const f of frames) {
      if (typeof f !== 'object' || f === null) continue;
      const o = f as { error?: { type?: unknown; code?: unknown }; type?: unknown; code?: unknown };
      if (o.error?.type === 'server_error' || o.error?.code === 'internal_error' || o.code === 'internal_error')
        fail('a server error in the event stream');
    }
    // the stream ends: [DONE] (Chat Completions, Completions, sessions), the response's last event, or an error
    const last = frames.at(-1) as { type?: unknown; error?: unknown } | string;
    const ended =
      last === '[DONE]' ||
      (typeof last === 'object' &&
        last !== null &&
        (last.error !== undefined ||
          ['response.completed', 'response.incomplete', 'error'].includes(String(last.type))));
    if (!ended) fail('an event stream that does not end with [DONE], a final response event or an error');
    return { status: res.status, json: frames };
  }
  if (asksForStream(s)) fail('no event stream for "stream": true');
  if (!type.includes('application/json')) fail('a 2xx that is neither JSON nor an event stream');
  try {
    return { status: res.status, json: JSON.parse(text) };
  } catch {
    return fail('a 2xx whose body is not JSON');
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Bodies: JSON text with placeholders for what JSON.stringify cannot write: numbers (1e309, -0, 1e-400, ...)
// and values nested deeper than its recursion allows (written as text; JSON.parse reads them)

/** `depth` levels of `open` ... `close` around `inner` */
const nest = (depth: number, open: string, inner: string, close: string): string =>
  open.repeat(depth) + inner + close.repeat(depth);

const NUMBER_TEXTS = [
  '1e309',
  '-1e309',
  '1e-400',
  '-0',
  '1e400',
  '-1e-400',
  '2.0',
  '0.0000001e7',
  '1.5e300',
  '-2.5e-7',
];
const DEEP_TEXTS = [
  nest(10_000, '[', '', ']'),
  nest(100_000, '[', '0', ']'),
  nest(20_000, '{"a":', '{}', '}'),
  // JSON schemas (tool parameters, response formats) nested 1000 and 5000 deep
  nest(1_000, '{"type":"object","properties":{"a":', '{"type":"string"}', '},"required":["a"]}'),
  nest(5_000, '{"type":"object","properties":{"a":', '{"type":"string"}', '}}'),
  nest(5_000, '{"type":"array","items":', '{"type":"integer"}', '}'),
  nest(5_000, '{"anyOf":[', '{"type":"null"}', ']}'),
  nest(10_000, '{"not":', '{}', '}'),
];
const RAW_TEXTS = [...NUMBER_TEXTS, ...DEEP_TEXTS];
const rawMark = (i: number): string => `@@raw${i}@@`;
const MARKED = /"@@raw(\d+)@@"/g;

/** JSON text of a body, marks replaced by their raw text. */
function bodyText(value: Json): string {
  const text = JSON.stringify(value) ?? 'null';
  return text.replace(MARKED, (_m, i: string) => RAW_TEXTS[Number(i)]!);
}

/** What the server reads from `text` (its JSON.parse), or `undefined` when the text is not JSON. */
function serverValue(text: string): Json {
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text) as Json;
  } catch {
    return undefined;
  }
}

/** The route's schema accepts `value` as the server would read it (parseValue: objects only). */
function accepts(schema: z.ZodType | null, value: Json): boolean {
  if (schema === null) return false;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  try {
    return schema.safeParse(value).success;
  } catch {
    return false; // the schema itself threw (the server answers whatever it answers: checked there)
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Arbitraries: values

const text = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 12 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 8 }) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      '',
      ' ',
      '\u0000',
      '<s>',
      '</s>',
      '<unk>',
      '[INST]',
      '{{ messages }}',
      '{% endfor %}',
      '\ud800',
      '🙂',
      '\r\n',
    ),
  },
);
const hex = (n: number) => fc.stringMatching(new RegExp(`^[0-9a-f]{${n}}$`));
/** strings of 10 KB to 1.1 MB (over the 1 MiB body limit) */
const hugeString = fc
  .tuple(fc.constantFrom(10_000, 60_000, 1_100_000), fc.constantFrom('a', 'é', '🙂', ' ', '"', '\\', '\u0000', 'ab '))
  .map(([n, ch]) => ch.repeat(Math.ceil(n / ch.length)));
/** nesting as values (up to 200 deep) and as text (up to 100000 deep) */
const deepValue = fc.oneof(
  fc
    .tuple(fc.constantFrom(10, 200), fc.constantFrom('array', 'object', 'schema', 'items'))
    .map(([depth, shape]): Json => {
      let v: Json = shape === 'array' ? [] : shape === 'object' ? {} : { type: 'string' };
      for (let i = 0; i < depth; i++) {
        if (shape === 'array') v = [v];
        else if (shape === 'object') v = { a: v };
        else if (shape === 'schema') v = { type: 'object', properties: { a: v }, required: ['a'] };
        else v = { type: 'array', items: v };
      }
      return v;
    }),
  fc.integer({ min: NUMBER_TEXTS.length, max: RAW_TEXTS.length - 1 }).map(rawMark),
);
const oddNumber = fc.integer({ min: 0, max: NUMBER_TEXTS.length - 1 }).map(rawMark);
const oddScalar = fc.constantFrom<Json>(
  null,
  true,
  false,
  0,
  -1,
  1.5,
  -0.5,
  2 ** 31,
  2 ** 53,
  -(2 ** 53),
  1e300,
  Number.MAX_VALUE,
  Number.MIN_VALUE,
  '',
  '0',
  '1',
  'null',
  'NaN',
  'Infinity',
  [],
  {},
  [null],
  [[]],
  { '': null },
  JSON.parse('{"__proto__": {"polluted": true}}') as Json,
  { constructor: { prototype: { polluted: true } } },
);
const jsonValue = fc.jsonValue({ maxDepth: 3 });
/** a value of the wrong type, out of range or otherwise odd */
const weird: fc.Arbitrary<Json> = fc.oneof(
  { weight: 5, arbitrary: jsonValue },
  { weight: 5, arbitrary: oddScalar },
  { weight: 2, arbitrary: oddNumber },
  { weight: 1, arbitrary: hugeString },
  { weight: 1, arbitrary: deepValue },
  { weight: 2, arbitrary: fc.integer() },
  { weight: 2, arbitrary: fc.double() },
  { weight: 2, arbitrary: text },
);
/** an unknown field name (and a few that matter in JavaScript) */
const fieldName = fc.oneof(
  fc.string({ maxLength: 10 }),
  fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', ''),
);

// ---------------------------------------------------------------------------------------------------------------
// Arbitraries: valid bodies of each route (small: at most 2 tokens generated)

const temperature = fc.double({ min: 0, max: 2, noNaN: true });
const topP = fc.double({ min: 0.01, max: 1, noNaN: true });
const stop = fc.oneof(text, fc.array(text, { maxLength: 4 }));
const contentParts = fc.array(fc.record({ type: fc.constant('text'), text }), { maxLength: 2 });
const content = fc.oneof({ weight: 3, arbitrary: text }, { weight: 1, arbitrary: contentParts });
const chatMessage = fc.oneof(
  fc.record({ role: fc.constantFrom('system', 'developer', 'user'), content }),
  fc.record({ role: fc.constant('assistant'), content }),
  fc.record({
    role: fc.constant('assistant'),
    content: fc.constant(null),
    tool_calls: fc.array(
      fc.record({
        id: text,
        type: fc.constant('function'),
        function: fc.record({
          name: fc.constantFrom('lookup', 'x'),
          arguments: fc.constantFrom('{}', '{"q":"a"}', ''),
        }),
      }),
      { minLength: 1, maxLength: 2 },
    ),
  }),
  fc.record({ role: fc.constant('tool'), content, tool_call_id: text }),
);
const messages = fc.array(chatMessage, { minLength: 1, maxLength: 3 });
const toolParameters = fc.constantFrom<Json>(
  { type: 'object', properties: { q: { type: 'string' } }, required: ['q'] },
  { type: 'object', properties: { n: { type: 'integer', minimum: 0, maximum: 9 }, b: { type: 'boolean' } } },
  { type: 'object', properties: { e: { enum: ['a', 'b'] }, l: { type: 'array', items: { type: 'number' } } } },
  {},
);
const tools = fc.array(
  fc.record(
    {
      type: fc.constant('function'),
      function: fc.record(
        {
          name: fc.constantFrom('lookup', 'get_x'),
          description: text,
          parameters: toolParameters,
          strict: fc.boolean(),
        },
        { requiredKeys: ['name'] },
      ),
    },
    { requiredKeys: ['type', 'function'] },
  ),
  { minLength: 1, maxLength: 2 },
);
const responseFormat = fc.oneof(
  fc.constant({ type: 'text' }),
  fc.constant({ type: 'json_object' }),
  toolParameters.map((schema) => ({ type: 'json_schema', json_schema: { name: 'out', schema } })),
);
const cacheKey = fc.string({ maxLength: 8 }).map((s) => `fuzz-${s}`);

/** The sampling and streaming fields Chat Completions and Completions share (schemas.ts SAMPLING_FIELDS). */
const samplingFields = {
  temperature,
  top_p: topP,
  top_k: fc.integer({ min: -1, max: 50 }),
  seed: fc.integer(),
  stop,
  n: fc.constant(1),
  stream: fc.boolean(),
  stream_options: fc.record({ include_usage: fc.boolean() }),
};

const chatBody = fc.record(
  {
    model: fc.constant('hymba'),
    messages,
    max_tokens: fc.constantFrom(1, 2),
    max_completion_tokens: fc.constantFrom(1, 2),
    ...samplingFields,
    logprobs: fc.boolean(),
    top_logprobs: fc.integer({ min: 0, max: 3 }),
    tools,
    tool_choice: fc.constantFrom<Json>('auto', 'none', 'required', { type: 'function', function: { name: 'lookup' } }),
    parallel_tool_calls: fc.boolean(),
    response_format: responseFormat,
    prompt_cache_key: cacheKey,
    user: text,
    return_token_ids: fc.boolean(),
  },
  { requiredKeys: ['messages', 'max_tokens'] },
);

const tokenId = fc.oneof(
  { weight: 5, arbitrary: fc.integer({ min: 0, max: 31_999 }) },
  fc.integer({ min: 0, max: 40_000 }),
);
const completionBody = fc.record(
  {
    model: fc.constant('hymba'),
    prompt: fc.oneof(
      text,
      fc.array(tokenId, { minLength: 1, maxLength: 8 }),
      fc.tuple(text),
      fc.tuple(fc.array(tokenId, { minLength: 1, maxLength: 8 })),
    ),
    max_tokens: fc.constantFrom(0, 1, 2),
    ...samplingFields,
    echo: fc.boolean(),
    logprobs: fc.integer({ min: 0, max: 5 }),
    return_token_ids: fc.boolean(),
    prompt_cache_key: cacheKey,
    user: text,
  },
  { requiredKeys: ['prompt', 'max_tokens'] },
);

const createSessionBody = fc.record(
  { system: text, metadata: fc.dictionary(text, jsonValue, { maxKeys: 3 }) },
  { requiredKeys: [] },
);

const messageBody = fc.record(
  {
    content,
    max_tokens: fc.constantFrom(1, 2),
    temperature,
    seed: fc.integer(),
    stop,
    stream: fc.boolean(),
    stream_options: fc.record({ include_usage: fc.boolean() }),
    return_token_ids: fc.boolean(),
  },
  { requiredKeys: ['content', 'max_tokens'] },
);

const forkBody = fc.record({ turn: fc.integer({ min: -1, max: 3 }) });

const tokenizeBody = fc.oneof(
  fc.record(
    { model: fc.constant('hymba'), prompt: text, add_special_tokens: fc.boolean() },
    { requiredKeys: ['prompt'] },
  ),
  fc.record(
    { model: fc.constant('hymba'), messages, add_generation_prompt: fc.boolean() },
    { requiredKeys: ['messages'] },
  ),
);

const detokenizeBody = fc.record(
  { model: fc.constant('hymba'), tokens: fc.array(tokenId, { maxLength: 10 }) },
  { requiredKeys: ['tokens'] },
);

const responseText = fc.array(fc.record({ type: fc.constantFrom('input_text', 'output_text'), text }), {
  maxLength: 2,
});
const responseItem = fc.oneof(
  fc.record({
    role: fc.constantFrom('user', 'system', 'developer', 'assistant'),
    content: fc.oneof(text, responseText),
  }),
  fc.record({
    type: fc.constant('message'),
    role: fc.constantFrom('user', 'assistant'),
    content: fc.oneof(text, responseText),
  }),
  fc.record({
    type: fc.constant('function_call'),
    call_id: text,
    name: fc.constant('lookup'),
    arguments: fc.constant('{}'),
  }),
  fc.record({ type: fc.constant('function_call_output'), call_id: text, output: text }),
);
/** previous_response_id values: set in the setup (a stored response) and junk */
let previousIds: fc.Arbitrary<string> = fc.constant('resp_unknown');
const responsesBody = fc.constant(null).chain(() =>
  fc.record(
    {
      model: fc.constant('hymba'),
      input: fc.oneof(text, fc.array(responseItem, { minLength: 1, maxLength: 3 })),
      instructions: text,
      previous_response_id: previousIds,
      store: fc.boolean(),
      stream: fc.boolean(),
      max_output_tokens: fc.constantFrom(1, 2),
      temperature,
      top_p: topP,
      tools: fc.array(
        fc.record(
          { type: fc.constant('function'), name: fc.constantFrom('lookup', 'get_x'), parameters: toolParameters },
          { requiredKeys: ['type', 'name'] },
        ),
        { minLength: 1, maxLength: 2 },
      ),
      tool_choice: fc.constantFrom<Json>('auto', 'none', 'required', { type: 'function', name: 'lookup' }),
      text: fc.record({ format: fc.constantFrom<Json>({ type: 'text' }, { type: 'json_object' }) }),
      metadata: fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 }), { maxKeys: 2 }),
      seed: fc.integer(),
    },
    { requiredKeys: ['input', 'max_output_tokens'] },
  ),
);

// ---------------------------------------------------------------------------------------------------------------
// Mutations of a valid body: replace a value anywhere (wrong type, out of range, huge, deep, 1e309), delete a
// field, add an unknown field

type Mutation =
  | { kind: 'replace'; at: number; value: Json }
  | { kind: 'delete'; at: number }
  | { kind: 'add'; at: number; key: string; value: Json };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('replace' as const), at: fc.nat(), value: weird }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('delete' as const), at: fc.nat() }) },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('add' as const), at: fc.nat(), key: fieldName, value: weird }),
  },
);

type Path = (string | number)[];

/** Every path in `v` (the root included), parents before children; not into huge or deep values. */
function pathsOf(v: Json, at: Path = [], out: Path[] = [], depth = 0): Path[] {
  out.push(at);
  if (depth > 6 || typeof v !== 'object' || v === null) return out;
  if (Array.isArray(v)) v.forEach((x, i) => pathsOf(x, [...at, i], out, depth + 1));
  else for (const [k, x] of Object.entries(v)) pathsOf(x, [...at, k], out, depth + 1);
  return out;
}

function getAt(v: Json, path: Path): Json {
  let cur = v;
  for (const k of path) cur = (cur as Record<string | number, Json>)[k];
  return cur;
}

function applyMutation(body: Json, m: Mutation): Json {
  const paths = pathsOf(body);
  const path = paths[m.at % paths.length]!;
  if (m.kind === 'add') {
    const target = getAt(body, path);
    if (typeof target !== 'object' || target === null) return body;
    if (Array.isArray(target)) target.push(m.value);
    else Object.defineProperty(target, m.key, { value: m.value, enumerable: true, writable: true, configurable: true });
    return body;
  }
  if (path.length === 0) return m.kind === 'replace' ? m.value : {};
  const parent = getAt(body, path.slice(0, -1)) as Record<string | number, Json>;
  const key = path.at(-1)!;
  if (m.kind === 'replace') parent[key] = m.value;
  else if (Array.isArray(parent)) parent.splice(key as number, 1);
  else delete parent[key];
  return body;
}

const TOKEN_FIELDS = ['max_tokens', 'max_completion_tokens', 'max_output_tokens'] as const;

/**
 * A body that survives as valid must run a tiny turn: token limits that are valid and over 2 become 2, and a
 * generating route's body without any gets max_tokens 2 (the default is 256). Limits over the server's maximum
 * (4096) stay: they are 400s.
 */
function limitTokens(route: Route, value: Json): Json {
  if (!route.generates || typeof value !== 'object' || value === null || Array.isArray(value)) return value;
  const o = value as Record<string, Json>;
  for (const f of TOKEN_FIELDS) {
    const v = o[f];
    if (typeof v === 'number' && Number.isInteger(v) && v > 2 && v <= 4096) o[f] = 2;
  }
  if (TOKEN_FIELDS.every((f) => o[f] == null)) o[route.tokenField] = 2;
  return o;
}

// ---------------------------------------------------------------------------------------------------------------
// Routes

interface Route {
  name: string;
  /** the path, for routes with an id: of the session (or response) `id` */
  path: (id: string) => string;
  /** the schema of the body (null: not checked here) */
  schema: z.ZodType | null;
  /** runs a turn when the body is valid */
  generates: boolean;
  tokenField: (typeof TOKEN_FIELDS)[number];
  valid: fc.Arbitrary<Json>;
  /** takes a session id */
  session?: boolean;
}

const ROUTES: Route[] = [
  {
    name: 'POST /v1/chat/completions',
    path: () => '/v1/chat/completions',
    schema: ChatCompletionRequestSchema,
    generates: true,
    tokenField: 'max_tokens',
    valid: chatBody,
  },
  {
    name: 'POST /v1/completions',
    path: () => '/v1/completions',
    schema: CompletionRequestSchema,
    generates: true,
    tokenField: 'max_tokens',
    valid: completionBody,
  },
  {
    name: 'POST /v1/sessions',
    path: () => '/v1/sessions',
    schema: CreateSessionRequestSchema,
    generates: false,
    tokenField: 'max_tokens',
    valid: createSessionBody,
  },
  {
    name: 'POST /v1/sessions/:id/messages',
    path: (id) => `/v1/sessions/${id}/messages`,
    schema: SessionMessageRequestSchema,
    generates: true,
    tokenField: 'max_tokens',
    valid: messageBody,
    session: true,
  },
  {
    name: 'POST /v1/sessions/:id/fork',
    path: (id) => `/v1/sessions/${id}/fork`,
    schema: ForkSessionRequestSchema,
    generates: false,
    tokenField: 'max_tokens',
    valid: forkBody,
    session: true,
  },
  {
    name: 'POST /tokenize',
    path: () => '/tokenize',
    schema: TokenizeRequestSchema,
    generates: false,
    tokenField: 'max_tokens',
    valid: tokenizeBody,
  },
  {
    name: 'POST /detokenize',
    path: () => '/detokenize',
    schema: DetokenizeRequestSchema,
    generates: false,
    tokenField: 'max_tokens',
    valid: detokenizeBody,
  },
  {
    name: 'POST /v1/responses',
    path: () => '/v1/responses',
    schema: ResponseCreateRequestSchema,
    generates: true,
    tokenField: 'max_output_tokens',
    valid: responsesBody,
  },
];
const route = (name: string): Route => ROUTES.find((r) => r.name === name)!;

/**
 * A mutated valid body as JSON text (and the value the server reads from it), with its token limits kept tiny;
 * `finish` may set fields last.
 */
function mutatedBody(r: Route, finish: (body: Json) => Json = (b) => b): fc.Arbitrary<{ text: string; value: Json }> {
  return fc.tuple(r.valid, fc.array(mutation, { minLength: 1, maxLength: 3 })).map(([valid, ms]) => {
    let body = structuredClone(valid);
    for (const m of ms) body = applyMutation(body, m);
    body = finish(limitTokens(r, body));
    const t = bodyText(body);
    return { text: t, value: serverValue(t) };
  });
}

/** Arbitrary JSON (any value, or an object of unknown fields) as body text. */
const arbitraryJson = fc
  .oneof(jsonValue, fc.object({ maxDepth: 3, values: [weird] }), fc.dictionary(fieldName, weird, { maxKeys: 4 }))
  .map((v) => bodyText(v));

/** Not JSON: text, almost-JSON, random bytes; with or without a content-type. */
const BOM = '\ufeff';
const notJson: fc.Arbitrary<string | Uint8Array> = fc.oneof(
  fc.string(),
  fc.string({ unit: 'binary' }),
  fc.uint8Array({ maxLength: 64 }),
  fc.constantFrom(
    '{',
    '}',
    '{"content": "x",}',
    "{'content': 'x'}",
    '{"content": "x"} trailing',
    '{"content": NaN}',
    '{"content": Infinity}',
    '{"turn": 0x1}',
    '{"turn": 01}',
    '{"turn": .5}',
    '{"turn": 1e}',
    '[]',
    '[{}]',
    'null',
    'true',
    '0',
    '"{}"',
    '\u0000',
    `${BOM}{"turn": -1}`,
    '{"a":1}{"b":2}',
    '/* comment */ {}',
    'content=x&max_tokens=1',
    '--x\r\nContent-Disposition: form-data; name="content"\r\n\r\nx\r\n--x--',
  ),
);
const contentType = fc.constantFrom<string | null>(
  'application/json',
  'application/json; charset=utf-8',
  'text/plain',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x',
  'application/octet-stream',
  'application/json; charset=latin1',
  'garbage',
  null,
);

/** How the server reads a body: as UTF-8 text (BOM dropped, invalid bytes replaced), then JSON. */
function decodeBody(body: string | Uint8Array): string {
  return typeof body === 'string' ? body.replace(/^\ufeff/, '') : new TextDecoder().decode(body);
}

// ---------------------------------------------------------------------------------------------------------------
// What is stored before the fuzzing, and the check that it stays so

interface Recorded {
  sessions: { id: string; json: Json }[];
  cacheKey: string;
  cacheMessages: { role: string; content: string }[];
  cacheRows: Json;
  /** a stored response and its JSON */
  response: { id: string; json: Json };
}

let rec: Recorded;
/** a session that valid fuzzed messages may change */
let scratch = '';
/** ids that are not sessions of this key: other objects' ids, fresh unique ids */
let foreignIds: string[] = [];

const sessionJson = async (id: string): Promise<Json> => {
  const res = await call(`/v1/sessions/${id}`);
  expect(res.status).toBe(200);
  return res.json();
};

const cacheStub = (key: string) => env.SESSIONS.get(env.SESSIONS.idFromName(`cache::${key}`));

/** The cache entry's rows, read inside its object (nothing sent through the API, so nothing changes). */
const cacheRows = (key: string): Promise<Json> =>
  runInDurableObject(cacheStub(key), (_instance, state) => {
    const sql = state.storage.sql;
    return {
      meta: sql.exec('SELECT key, value FROM meta ORDER BY key').toArray(),
      messages: sql.exec('SELECT * FROM messages ORDER BY seq').toArray(),
      turns: sql.exec('SELECT * FROM turns ORDER BY turn').toArray(),
      snapshots: sql
        .exec('SELECT id, turn, fingerprint, hex(tokens) AS tokens, n_tokens, bytes FROM snapshots ORDER BY id')
        .toArray(),
    };
  });

async function expectStoredUnchanged(): Promise<void> {
  for (const s of rec.sessions) expect(await sessionJson(s.id), `session ${s.id}`).toEqual(s.json);
  expect(await cacheRows(rec.cacheKey), 'prompt_cache_key entry').toEqual(rec.cacheRows);
  const res = await call(`/v1/responses/${rec.response.id}`);
  expect(res.status).toBe(200);
  expect(await res.json(), 'stored response').toEqual(rec.response.json);
}

/** Every `every` runs of a property, the stored data is checked. */
function checkingEvery(every: number): () => Promise<void> {
  let n = 0;
  return async () => {
    if (++n % every === 0) await expectStoredUnchanged();
  };
}

beforeAll(async () => {
  // a session with one real turn, and a fork of it
  const id = await createSession('You are a terse assistant.');
  await sendMessage(id, 'Hello! Who are you?', { max_tokens: 3 });
  const forkRes = await post(`/v1/sessions/${id}/fork`, { turn: 1 });
  expect(forkRes.status).toBe(201);
  const forkId = ((await forkRes.json()) as { id: string }).id;

  // a prompt_cache_key entry with one chat completion
  const key = `fuzz-cache-${crypto.randomUUID()}`;
  const cacheMessages = [
    { role: 'system', content: 'You are a terse assistant.' },
    { role: 'user', content: 'What is two plus two?' },
  ];
  const cacheRes = await post('/v1/chat/completions', {
    messages: cacheMessages,
    max_tokens: 3,
    temperature: 0,
    prompt_cache_key: key,
  });
  expect(cacheRes.status).toBe(200);
  const reply = (await cacheRes.json()) as ChatReply;
  cacheMessages.push({ role: 'assistant', content: reply.choices[0]!.message.content });

  // one stored response
  const r = await post('/v1/responses', { input: 'Hello!', max_output_tokens: 2, temperature: 0 });
  expect(r.status).toBe(200);
  const rid = ((await r.json()) as { id: string }).id;
  const read = await call(`/v1/responses/${rid}`);
  expect(read.status).toBe(200);
  const response = { id: rid, json: (await read.json()) as Json };

  rec = {
    sessions: [
      { id, json: await sessionJson(id) },
      { id: forkId, json: await sessionJson(forkId) },
    ],
    cacheKey: key,
    cacheMessages,
    cacheRows: await cacheRows(key),
    response,
  };
  const view = await readSession(id);
  expect(view.turns).toHaveLength(1);
  expect(view.state.snapshots).toBe(1);

  scratch = await createSession();
  const ns = env.SESSIONS;
  foreignIds = [
    ns.newUniqueId().toString(),
    ns.newUniqueId().toString(),
    ...Array.from({ length: 8 }, (_, i) => ns.idFromName(`pool:${i}`).toString()),
    ns.idFromName('cache::other-key').toString(),
    ns.idFromName(id).toString(),
  ];
  const recorded = rec.sessions.map((s) => s.id);
  previousIds = fc.oneof(
    fc.constantFrom(...(response ? [response.id] : ['resp_x'])),
    responseIdArb(recorded),
    fc.string({ maxLength: 10 }),
  );
}, 300_000);

// ---------------------------------------------------------------------------------------------------------------
// Path ids

/** Junk where a session id goes: random text, 64-hex lookalikes, near misses of real ids, encoded junk. */
function junkSessionId(recorded: string[]): fc.Arbitrary<string> {
  const nearMiss = fc.tuple(fc.constantFrom(...recorded), fc.nat(63), fc.nat(14)).map(([id, i, d]) => {
    const digits = '0123456789abcdef'.replace(id[i]!, '');
    return id.slice(0, i) + digits[d % digits.length]! + id.slice(i + 1);
  });
  return fc.oneof(
    fc.string({ maxLength: 70 }).map(encodeURIComponent),
    fc.string({ unit: 'binary', maxLength: 20 }).map(encodeURIComponent),
    hex(64),
    hex(63),
    hex(65),
    hex(64).map((h) => h.toUpperCase()),
    nearMiss,
    fc.constantFrom(...foreignIds),
    fc.constantFrom(...recorded).map((id) => `${id}x`),
    fc.constantFrom(...recorded).map((id) => id.slice(1)),
    fc.constantFrom(...recorded).map((id) => `${id}%00`),
    fc.constantFrom(...recorded).map((id) => `%20${id}`),
    fc.constantFrom(
      '%',
      '%zz',
      '%00',
      '%ff',
      '%C0%AF',
      '%E2%82',
      '%2F',
      '%5C',
      '.',
      '%2e',
      'null',
      'undefined',
      '0',
      '-1',
      'a'.repeat(2048),
    ),
  );
}

/** Junk where a response id goes, including well-formed ids naming real sessions. */
function responseIdArb(recorded: string[]): fc.Arbitrary<string> {
  return fc.oneof(
    fc.string({ maxLength: 40 }).map(encodeURIComponent),
    fc.tuple(hex(64), hex(16)).map(([s, r]) => `resp_${s}_${r}`),
    fc.tuple(fc.constantFrom(...recorded, ...foreignIds), hex(16)).map(([s, r]) => `resp_${s}_${r}`),
    fc.constantFrom(...recorded).map((s) => `resp_${s}`),
    fc.constantFrom('resp_', 'resp__', '%', '%zz', `resp_${'0'.repeat(64)}_${'0'.repeat(16)}`),
  );
}

/** After URL normalisation (`.`, `%2e`), the request does not name a recorded session exactly. */
function namesNoRecorded(path: string): boolean {
  const segments = new URL(BASE + path).pathname.split('/');
  return !rec.sessions.some((s) => segments.includes(s.id));
}

// ---------------------------------------------------------------------------------------------------------------
// The properties

/** The id a property sends a session route's body to: a recorded session (invalid bodies) or the scratch one. */
const recordedId = () => fc.constantFrom(...rec.sessions.map((s) => s.id));

describe('arbitrary JSON bodies', () => {
  ROUTES.forEach((r, i) => {
    const seed = SEED + i;
    it(`${r.name} (seed ${seed})`, async () => {
      const every = checkingEvery(40);
      await fc.assert(
        fc.asyncProperty(
          arbitraryJson,
          r.session ? recordedId() : fc.constant(''),
          contentType,
          async (t, id, type) => {
            // a body that happens to be valid for a session route is not sent to a recorded session
            fc.pre(!accepts(r.schema, serverValue(t)));
            await sendAndCheck({ method: 'POST', path: r.path(id), contentType: type, body: t });
            await every();
          },
        ),
        params(seed, 100),
      );
    });
  });
});

describe('valid bodies (odd but valid text, tools, logprobs, streams), with unknown fields added', () => {
  ROUTES.filter((r) => r.generates).forEach((r, i) => {
    const seed = SEED + 600 + i;
    it(`${r.name} (seed ${seed})`, async () => {
      const extra = fc.dictionary(fieldName, jsonValue, { maxKeys: 2 });
      const body = fc.tuple(r.valid, extra).map(([valid, more]) => {
        const b = structuredClone(valid) as Record<string, Json>;
        for (const [k, v] of Object.entries(more))
          if (!(k in b))
            Object.defineProperty(b, k, { value: v, enumerable: true, writable: true, configurable: true });
        const t = bodyText(limitTokens(r, b));
        return { text: t, value: serverValue(t) };
      });
      await fc.assert(
        fc.asyncProperty(body, async ({ text: t, value }) => {
          const { status } = await sendAndCheck({
            method: 'POST',
            path: r.path(scratch),
            contentType: 'application/json',
            body: t,
          });
          // what the schema accepts, Chat Completions serves
          if (r.name === 'POST /v1/chat/completions' && accepts(r.schema, value)) expect(status).toBe(200);
        }),
        params(seed, 12),
      );
    });
  });
});

describe('valid bodies with fields of the wrong type, out of range, missing, unknown, huge, deep or 1e309', () => {
  ROUTES.forEach((r, i) => {
    const seed = SEED + 100 + i;
    const n = r.generates ? 40 : 150;
    it(`${r.name} (seed ${seed}, ${n} runs)`, async () => {
      const every = checkingEvery(25);
      await fc.assert(
        fc.asyncProperty(mutatedBody(r), async ({ text: t }) => {
          // valid messages and forks may change their session: the scratch one
          await sendAndCheck({ method: 'POST', path: r.path(scratch), contentType: 'application/json', body: t });
          await every();
        }),
        params(seed, n),
      );
    });
  });
});

describe('bodies the schema rejects, sent to the recorded sessions and cache entry, change nothing', () => {
  const targets: { name: string; run: (t: string, id: string) => Sent }[] = [
    {
      name: 'POST /v1/sessions/:id/messages',
      run: (t, id) => ({
        method: 'POST',
        path: `/v1/sessions/${id}/messages`,
        contentType: 'application/json',
        body: t,
      }),
    },
    {
      name: 'POST /v1/sessions/:id/fork',
      run: (t, id) => ({ method: 'POST', path: `/v1/sessions/${id}/fork`, contentType: 'application/json', body: t }),
    },
  ];
  targets.forEach((target, i) => {
    const seed = SEED + 200 + i;
    it(`${target.name} (seed ${seed})`, async () => {
      const r = route(target.name);
      const every = checkingEvery(25);
      await fc.assert(
        fc.asyncProperty(mutatedBody(r), recordedId(), async ({ text: t, value }, id) => {
          fc.pre(!accepts(r.schema, value));
          const { status } = await sendAndCheck(target.run(t, id));
          expect(status).toBeGreaterThanOrEqual(400);
          await every();
        }),
        params(seed, 200),
      );
      await expectStoredUnchanged();
    });
  });

  (['POST /v1/chat/completions', 'POST /v1/completions'] as const).forEach((name, i) => {
    const seed = SEED + 210 + i;
    it(`${name} with the recorded prompt_cache_key (seed ${seed})`, async () => {
      const r = route(name);
      const every = checkingEvery(25);
      const withKey = mutatedBody(r, (b) => {
        if (typeof b === 'object' && b !== null && !Array.isArray(b))
          (b as Record<string, Json>).prompt_cache_key = rec.cacheKey;
        return b;
      });
      await fc.assert(
        fc.asyncProperty(withKey, async ({ text: t, value }) => {
          fc.pre(!accepts(r.schema, value));
          const { status } = await sendAndCheck({
            method: 'POST',
            path: r.path(''),
            contentType: 'application/json',
            body: t,
          });
          expect(status).toBeGreaterThanOrEqual(400);
          await every();
        }),
        params(seed, 150),
      );
      await expectStoredUnchanged();
    });
  });

  it(`valid forks of the recorded sessions leave them as they were (seed ${SEED + 220})`, async () => {
    await fc.assert(
      fc.asyncProperty(
        recordedId(),
        fc.oneof(fc.integer({ min: 0, max: 3 }), fc.constantFrom(2 ** 31, 2 ** 53 - 1)),
        async (id, turn) => {
          await sendAndCheck({
            method: 'POST',
            path: `/v1/sessions/${id}/fork`,
            contentType: 'application/json',
            body: JSON.stringify({ turn }),
          });
        },
      ),
      params(SEED + 220, 12),
    );
    await expectStoredUnchanged();
  });
});

describe('bodies that are not JSON, with any content-type, and empty bodies', () => {
  ROUTES.forEach((r, i) => {
    const seed = SEED + 300 + i;
    it(`${r.name} (seed ${seed})`, async () => {
      const every = checkingEvery(40);
      const body = fc.oneof(
        { weight: 6, arbitrary: notJson },
        { weight: 1, arbitrary: fc.constantFrom('', '   ', '\n') },
      );
      await fc.assert(
        fc.asyncProperty(body, contentType, r.session ? recordedId() : fc.constant(''), async (b, type, id) => {
          // whatever the server would accept (the empty body of POST /v1/sessions, "{}" by chance) goes elsewhere
          const value = serverValue(decodeBody(b));
          fc.pre(!(r.session && accepts(r.schema, value)));
          if (r.generates && accepts(r.schema, value)) return; // never a tiny turn: not sent
          await sendAndCheck({ method: 'POST', path: r.path(id), contentType: type, body: b });
          await every();
        }),
        params(seed, 80),
      );
    });
  });
});

/** JSON schemas: small random ones (every keyword the grammar knows and some it refuses), and deep ones. */
const SCHEMA_KEYWORDS = [
  'type',
  'properties',
  'required',
  'additionalProperties',
  'items',
  'prefixItems',
  'minItems',
  'maxItems',
  'minLength',
  'maxLength',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
  'enum',
  'const',
  'anyOf',
  'oneOf',
  'allOf',
  'not',
  '$ref',
  '$defs',
  'definitions',
  'pattern',
  'format',
  'uniqueItems',
  'multipleOf',
  'patternProperties',
  'propertyNames',
  'if',
  'then',
  'else',
  'title',
  'description',
  'default',
] as const;
const typeName = fc.constantFrom<Json>('object', 'array', 'string', 'integer', 'number', 'boolean', 'null', 'nope');
const schemaValue = fc.letrec<{ schema: Json }>((tie) => ({
  schema: fc.oneof(
    { depthSize: 'small', maxDepth: 4 },
    { weight: 1, arbitrary: fc.boolean() },
    {
      weight: 6,
      arbitrary: fc.dictionary(
        fc.constantFrom(...SCHEMA_KEYWORDS),
        fc.oneof(
          tie('schema'),
          typeName,
          fc.array(typeName, { maxLength: 3 }),
          fc.array(tie('schema'), { maxLength: 3 }),
          fc.dictionary(fc.constantFrom('a', 'b', ''), tie('schema'), { maxKeys: 3 }),
          fc.constantFrom<Json>(
            '#',
            '#/$defs/a',
            '#/definitions/a',
            '#/properties/a',
            'http://x/y',
            ['a'],
            0,
            -1,
            3,
            1.5,
            1e300,
          ),
          fc.array(fc.oneof(fc.string({ maxLength: 3 }), fc.integer(), fc.constant(null)), { maxLength: 3 }),
          weird,
        ),
        { maxKeys: 4 },
      ),
    },
  ),
})).schema;
const deepSchemaText = fc.integer({ min: NUMBER_TEXTS.length, max: RAW_TEXTS.length - 1 }).map(rawMark);
const anySchema = fc.oneof({ weight: 5, arbitrary: schemaValue }, { weight: 1, arbitrary: deepSchemaText });

describe('JSON schemas as tool parameters and output formats (compiled into a decoding grammar)', () => {
  const seedChat = SEED + 500;
  it(`POST /v1/chat/completions: tools[].function.parameters, response_format.json_schema.schema (seed ${seedChat})`, async () => {
    const body = fc.tuple(
      messages,
      anySchema,
      fc.constantFrom('tools', 'tools-required', 'tools-named', 'format'),
      fc.boolean(),
    );
    await fc.assert(
      fc.asyncProperty(body, async ([msgs, schema, where, stream]) => {
        const b: Record<string, Json> = { messages: msgs, max_tokens: 2, temperature: 0, stream };
        if (where === 'format') b.response_format = { type: 'json_schema', json_schema: { name: 'out', schema } };
        else {
          b.tools = [{ type: 'function', function: { name: 'f', parameters: schema } }];
          if (where === 'tools-required') b.tool_choice = 'required';
          if (where === 'tools-named') b.tool_choice = { type: 'function', function: { name: 'f' } };
        }
        await sendAndCheck({
          method: 'POST',
          path: '/v1/chat/completions',
          contentType: 'application/json',
          body: bodyText(b),
        });
      }),
      params(seedChat, 50),
    );
  });

  const seedResponses = SEED + 501;
  it(`POST /v1/responses: tools[].parameters, text.format.schema (seed ${seedResponses})`, async () => {
    const body = fc.tuple(text, anySchema, fc.constantFrom('tools', 'tools-required', 'format'), fc.boolean());
    await fc.assert(
      fc.asyncProperty(body, async ([input, schema, where, stream]) => {
        const b: Record<string, Json> = { input, max_output_tokens: 2, temperature: 0, store: false, stream };
        if (where === 'format') b.text = { format: { type: 'json_schema', name: 'out', schema } };
        else {
          b.tools = [{ type: 'function', name: 'f', parameters: schema }];
          if (where === 'tools-required') b.tool_choice = 'required';
        }
        await sendAndCheck({
          method: 'POST',
          path: '/v1/responses',
          contentType: 'application/json',
          body: bodyText(b),
        });
      }),
      params(seedResponses, 40),
    );
  });
});

describe('bodies nested deeper than MAX_BODY_DEPTH (the stack of the schema compiler, template and RPC)', () => {
  const user = '{"messages":[{"role":"user","content":"hi"}],"max_tokens":1';
  const nest = (n: number, open: string, inner: string, close: string): string =>
    open.repeat(n) + inner + close.repeat(n);
  const cases: [string, string, string, string | null][] = [
    // these answered 500 (RangeError: Maximum call stack size exceeded) before the depth limit
    [
      'a tool schema 600 properties deep',
      '/v1/chat/completions',
      `${user},"tools":[{"type":"function","function":{"name":"f","parameters":${nest(600, '{"type":"object","properties":{"a":', '{"type":"string"}', '}}')}}}]}`,
      'tools',
    ],
    [
      'a response_format schema 1500 anyOf deep',
      '/v1/chat/completions',
      `${user},"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":${nest(1500, '{"anyOf":[', '{"type":"null"}', ']}')}}}}`,
      'response_format',
    ],
    [
      '3000 levels of objects inside a schema (the turn request over RPC)',
      '/v1/chat/completions',
      `${user},"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"x":${nest(3000, '{"a":', '1', '}')}}}}}`,
      'response_format',
    ],
    [
      '5000 levels of arrays in tool parameters (the chat template, then RPC)',
      '/v1/chat/completions',
      `${user},"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","x":${nest(5000, '[', '', ']')}}}}]}`,
      'tools',
    ],
    [
      'a text.format schema 5000 properties deep',
      '/v1/responses',
      `{"input":"hi","max_output_tokens":1,"text":{"format":{"type":"json_schema","name":"x","schema":${nest(5000, '{"type":"object","properties":{"a":', '{"type":"string"}', '}}')}}}}`,
      'text',
    ],
    [
      '100000 levels of arrays in session metadata',
      '/v1/sessions',
      `{"metadata":{"a":${nest(100_000, '[', '', ']')}}}`,
      'metadata',
    ],
    ['65 levels of arrays as a fork turn', '/v1/sessions/0/fork', `{"turn":${nest(64, '[', '0', ']')}}`, 'turn'],
  ];
  for (const [name, path, body, param] of cases) {
    it(`${name}: 400 naming ${param}`, async () => {
      const { status, json } = await sendAndCheck({ method: 'POST', path, contentType: 'application/json', body });
      expect(status).toBe(400);
      expect((json as { error: { param: string | null; message: string } }).error).toMatchObject({ param });
    });
  }

  it('a tool schema 25 levels deep is still served', async () => {
    const schema = nest(25, '{"type":"object","properties":{"a":', '{"type":"string"}', '},"required":["a"]}');
    const body = `${user},"tool_choice":"required","tools":[{"type":"function","function":{"name":"f","parameters":${schema}}}]}`;
    const { status } = await sendAndCheck({
      method: 'POST',
      path: '/v1/chat/completions',
      contentType: 'application/json',
      body,
    });
    expect(status).toBe(200);
  });
});

describe('junk ids in paths', () => {
  it(`GET and DELETE /v1/sessions/:id, POST .../messages and .../fork with valid bodies (seed ${SEED + 400})`, async () => {
    const recorded = rec.sessions.map((s) => s.id);
    const op = fc.constantFrom('GET', 'DELETE', 'messages', 'fork');
    await fc.assert(
      fc.asyncProperty(junkSessionId(recorded), op, messageBody, async (id, which, msg) => {
        const s: Sent =
          which === 'GET' || which === 'DELETE'
            ? { method: which, path: `/v1/sessions/${id}` }
            : which === 'messages'
              ? {
                  method: 'POST',
                  path: `/v1/sessions/${id}/messages`,
                  contentType: 'application/json',
                  body: bodyText(msg),
                }
              : {
                  method: 'POST',
                  path: `/v1/sessions/${id}/fork`,
                  contentType: 'application/json',
                  body: '{"turn": 0}',
                };
        fc.pre(namesNoRecorded(s.path));
        const { status } = await sendAndCheck(s);
        // a junk id names no session of this client; other objects (pools, unknown ids) are not sessions
        expect(status, describeSent(s)).toBeGreaterThanOrEqual(400);
      }),
      params(SEED + 400, 250),
    );
    await expectStoredUnchanged();
  });

  it(`GET and DELETE /v1/responses/:id (seed ${SEED + 401})`, async () => {
    const recorded = rec.sessions.map((s) => s.id);
    await fc.assert(
      fc.asyncProperty(responseIdArb(recorded), fc.constantFrom('GET', 'DELETE'), async (id, method) => {
        fc.pre(id !== rec.response.id);
        const { status } = await sendAndCheck({ method, path: `/v1/responses/${id}` });
        expect(status).toBeGreaterThanOrEqual(400);
      }),
      params(SEED + 401, 150),
    );
    await expectStoredUnchanged();
  });
});

describe('after the fuzzing', () => {
  it('the recorded sessions and responses are exactly as they were, and the cache entry still serves its prompt', async () => {
    await expectStoredUnchanged();
    const res = await post('/v1/chat/completions', {
      messages: [...rec.cacheMessages, { role: 'user', content: 'And three plus three?' }],
      max_tokens: 1,
      temperature: 0,
      prompt_cache_key: rec.cacheKey,
    });
    expect(res.status).toBe(200);
    const reply = (await res.json()) as ChatReply;
    expect(reply.usage.prompt_tokens_details.cached_tokens).toBeGreaterThan(0);
    // the sessions still take turns
    for (const s of rec.sessions) await sendMessage(s.id, 'Still there?', { max_tokens: 1 });
  });
});
