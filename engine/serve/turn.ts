// One turn of a session: tokenize, resume from the newest snapshot whose tokens prefix the prompt, process
// only the new tokens, generate, and commit transcript + snapshot atomically. A turn that fails or whose
// client goes away commits nothing: the session stays exactly as it was before the turn.

import { renderChat, templateEmitsBos, HYMBA_INSTRUCT_CHAT_TEMPLATE, type ChatMessage } from '../text/chat-template.js';
import { generate, type GenerateResult, type GeneratedToken } from '../generate/generate.js';
import { logSoftmax, topLogprobs } from '../generate/sampling.js';
import type { ModelFront } from '../run/loaded-model.js';
import type { Cursor, StatePipeline } from '../run/pipeline.js';
import type { HymbaTokenizer } from '../text/tokenizer.js';
import { alt, type Grammar } from '../constrain/grammar.js';
import { anyJsonObjectGrammar, jsonSchemaGrammar, SchemaError } from '../constrain/json-schema.js';
import { GrammarConstraint, VocabIndex } from '../constrain/token-mask.js';
import {
  HYMBA_TOOL_CALL_FORMAT,
  ToolCallParser,
  toolCallGrammar,
  type ParsedToolCall,
  type ToolCallFormat,
} from '../text/tool-calls.js';
import { randomHex } from './ids.js';
import type { ApiErrorBody, TokenLogprob, ToolSpec, TurnEvent, TurnPrompt, TurnRequest } from './protocol.js';
import type { SessionStore } from '../../durable-objects/session/store.js';

/** A request the turn cannot serve, with the HTTP status and OpenAI error it maps to. */
export class TurnError extends Error {
  constructor(readonly body: ApiErrorBody) {
    super(body.message);
    this.name = 'TurnError';
  }
}

export const invalid = (message: string, param: string | null = null): TurnError =>
  new TurnError({ status: 400, type: 'invalid_request_error', code: null, param, message });

/** Snapshots kept per session after each commit (newest first). */
export const KEEP_SNAPSHOTS = 4;

/** Text as ids, with BOS unless the text already starts with it (a template that emits it). */
function encodeText(tok: HymbaTokenizer, text: string): number[] {
  return tok.encode(text, { addBos: tok.addBosToken && !templateEmitsBos(text, tok.bosToken) });
}

/**
 * Messages rendered with the model's chat template (or the Hymba Instruct default), as ids. Without a
 * generation prompt and with the turn's tools this is the canonical state's token list after a turn
 * (renderedWithReply); session handoff uploads are checked against it.
 */
export function encodeConversation(
  tok: HymbaTokenizer,
  messages: ChatMessage[],
  tools: readonly ToolSpec[],
  addGenerationPrompt: boolean,
): number[] {
  const text = renderChat(tok.chatTemplate ?? HYMBA_INSTRUCT_CHAT_TEMPLATE, messages, {
    addGenerationPrompt,
    bosToken: tok.bosToken,
    eosToken: tok.eosToken,
    // the function objects ({name, description, parameters}), as the template's `<tool> {json} </tool>` lines
    ...(tools.length > 0 ? { tools: tools.map((t) => ({ ...t })) } : {}),
  });
  return encodeText(tok, text);
}

/** The tools the prompt offers: none with tool_choice "none". */
export function offeredTools(req: Pick<TurnRequest, 'tools' | 'toolChoice'>): ToolSpec[] {
  return req.toolChoice === 'none' ? [] : (req.tools ?? []);
}

/** The prompt as token ids, meta tokens excluded. */
export function promptIds(engine: ModelFront, prompt: TurnPrompt, tools: readonly ToolSpec[] = []): number[] {
  const V = engine.model.dims.V;
  if (prompt.kind === 'ids') {
    if (prompt.ids.length === 0) throw invalid('the prompt is empty', 'prompt');
    const bad = prompt.ids.find((id) => !Number.isInteger(id) || id < 0 || id >= V);
    if (bad !== undefined) throw invalid(`token id ${bad} is outside the vocabulary [0, ${V})`, 'prompt');
    return prompt.ids;
  }
  const tok = engine.tokenizer;
  if (!tok) throw invalid('this model has no tokenizer: send the prompt as token ids', 'prompt');
  let ids: number[];
  if (prompt.kind === 'text') ids = encodeText(tok, prompt.text);
  else {
    try {
      ids = encodeConversation(tok, prompt.messages, tools, true);
    } catch (e) {
      throw invalid(e instanceof Error ? e.message : String(e), 'messages');
    }
  }
  if (ids.length === 0) throw invalid('the prompt is empty', 'prompt');
  return ids;
}

/** What /tokenize asks for: text (BOS as the tokenizer adds it, unless addSpecial is false) or a chat. */
export type TokenizeInput =
  | { kind: 'text'; text: string; addSpecial: boolean }
  | { kind: 'chat'; messages: ChatMessage[]; addGenerationPrompt: boolean };

/** The ids a prompt becomes, exactly as a turn would tokenize it. */
export function tokenizeInput(engine: ModelFront, input: TokenizeInput): number[] {
  const tok = engine.tokenizer;
  if (!tok) throw invalid('this model has no tokenizer', 'prompt');
  if (input.kind === 'text')
    return input.addSpecial ? encodeText(tok, input.text) : tok.encode(input.text, { addBos: false });
  try {
    return encodeConversation(tok, input.messages, [], input.addGenerationPrompt);
  } catch (e) {
    throw invalid(e instanceof Error ? e.message : String(e), 'messages');
  }
}

/** Text of token ids (special tokens included, as vLLM's /detokenize). */
export function detokenizeIds(engine: ModelFront, ids: number[]): string {
  const tok = engine.tokenizer;
  if (!tok) throw invalid('this model has no tokenizer', 'tokens');
  const V = engine.model.dims.V;
  const bad = ids.find((id) => !Number.isInteger(id) || id < 0 || id >= V);
  if (bad !== undefined) throw invalid(`token id ${bad} is outside the vocabulary [0, ${V})`, 'tokens');
  return tok.decode(ids);
}

const isPrefix = (prefix: number[], ids: number[]): boolean =>
  prefix.length <= ids.length && prefix.every((id, i) => ids[i] === id);

/** A cursor at the meta-token prefix. */
async function openFresh(pipeline: StatePipeline): Promise<Cursor> {
  const r = await pipeline.open(null);
  if (!r.ok) throw new Error(`the meta-token prefix state is unavailable: ${r.reason}`);
  return r.cursor;
}

/**
 * The newest usable snapshot whose tokens are a proper prefix of `ids` (at least one new token is needed for
 * logits). Snapshots of another model, or that a stage cannot restore (checksum, missing rows), are deleted.
 */
async function restore(
  engine: ModelFront,
  pipeline: StatePipeline,
  store: SessionStore | null,
  ids: number[],
): Promise<{ cursor: Cursor; cached: number }> {
  for (const s of store?.snapshots() ?? []) {
    if (s.fingerprint !== engine.fingerprint) {
      store!.deleteSnapshot(s.id);
      continue;
    }
    if (s.tokens.length >= ids.length || !isPrefix(s.tokens, ids)) continue;
    const r = await pipeline.open(s.id);
    if (r.ok && r.cursor.position === engine.model.dims.M + s.tokens.length)
      return { cursor: r.cursor, cached: s.tokens.length };
    if (r.ok) await pipeline.close(r.cursor);
    else console.warn(`snapshot ${s.id} is unusable, recomputing: ${r.reason}`);
    store!.deleteSnapshot(s.id); // the transcript is the truth: this state will be recomputed
  }
  return { cursor: await openFresh(pipeline), cached: 0 };
}

export interface TurnOptions {
  /** messages to append to the transcript before the assistant reply (session API: the user message) */
  newMessages: ChatMessage[];
  /** keep the transcript (session API); otherwise only snapshots are stored */
  record: boolean;
  signal?: AbortSignal;
  /** the Responses API id of this turn, committed with it */
  responseId?: string;
}

function describe(engine: ModelFront, id: number, logprob: number): TokenLogprob {
  const text = engine.tokenizer?.decode([id]) ?? '';
  return { id, text, logprob };
}

function tokenLogprob(engine: ModelFront, t: GeneratedToken): TokenLogprob | undefined {
  if (t.logprob === undefined) return undefined;
  const out = describe(engine, t.id, t.logprob);
  if (t.topLogprobs) out.top = t.topLogprobs.map((a) => describe(engine, a.id, a.logprob));
  return out;
}

/** Length of the common prefix of two id lists. */
function commonPrefix(a: number[], b: number[]): number {
  let k = 0;
  while (k < a.length && k < b.length && a[k] === b[k]) k++;
  return k;
}

/**
 * The state to store after a chat turn: the conversation as the template renders it with the reply (the
 * exact ids the next prompt starts with), not the sampled ids, which may tokenize differently. Continues
 * the live state when it is a prefix; otherwise re-runs the reply from the state before the last prompt token.
 */
async function canonicalState(
  pipeline: StatePipeline,
  live: { cursor: Cursor; tokens: number[] },
  beforeLast: { cursor: Cursor; tokens: number[] },
  canonical: number[],
): Promise<{ cursor: Cursor; tokens: number[] }> {
  const k = commonPrefix(canonical, live.tokens);
  let base = live;
  if (k < live.tokens.length) {
    if (commonPrefix(canonical, beforeLast.tokens) < beforeLast.tokens.length) return live;
    base = beforeLast;
  }
  if (canonical.length > base.tokens.length)
    await pipeline.forward(base.cursor, canonical.slice(base.tokens.length), 'none');
  return { cursor: base.cursor, tokens: canonical };
}

/** The ids of the conversation with the reply appended, as the next turn's prompt will begin. */
function renderedWithReply(engine: ModelFront, req: TurnRequest, reply: ChatMessage): number[] | null {
  if (req.prompt.kind !== 'chat' || !engine.tokenizer) return null;
  return encodeConversation(engine.tokenizer, [...req.prompt.messages, reply], offeredTools(req), false);
}

/** The assistant message a reply is stored and re-rendered as: its content and its parsed tool calls. */
function replyMessage(content: string, calls: ParsedToolCall[]): ChatMessage {
  const m: ChatMessage = { role: 'assistant', content };
  if (calls.length > 0) m.tool_calls = calls.map((c) => ({ name: c.name, arguments: c.arguments }));
  return m;
}

/** The model's tool-call format: the manifest's, else Hymba's. */
function toolCallFormat(engine: ModelFront): ToolCallFormat {
  return engine.manifest.generation.toolCall ?? HYMBA_TOOL_CALL_FORMAT;
}

/**
 * The grammar the output must follow, or null for free text: forced tool calls (tool_choice "required" or a
 * named function), JSON (response_format), or, with tools on "auto", free text in which a call block, once
 * opened, must be a valid call.
 */
export function outputGrammar(engine: ModelFront, req: TurnRequest): Grammar | null {
  const tools = offeredTools(req);
  const format = toolCallFormat(engine);
  const choice = req.toolChoice ?? 'auto';
  const parallel = req.parallelToolCalls !== false;
  const rf = req.responseFormat;
  let json: Grammar | null = null;
  try {
    if (rf?.kind === 'json_object') json = anyJsonObjectGrammar();
    if (rf?.kind === 'json_schema') json = jsonSchemaGrammar(rf.schema);
  } catch (e) {
    if (e instanceof SchemaError)
      throw invalid(`invalid JSON schema${e.path ? ` at ${e.path}` : ''}: ${e.message}`, 'response_format');
    throw e;
  }
  try {
    if (tools.length === 0) return json;
    if (choice === 'required') return toolCallGrammar(tools, { parallel, lazy: false, format });
    if (typeof choice === 'object')
      return toolCallGrammar(
        tools.filter((t) => t.name === choice.name),
        { parallel: false, lazy: false, format },
      );
    if (json) return alt(json, toolCallGrammar(tools, { parallel, lazy: false, format }));
    return toolCallGrammar(tools, { parallel, lazy: true, format });
  } catch (e) {
    if (e instanceof SchemaError)
      throw invalid(`invalid JSON schema${e.path ? ` at ${e.path}` : ''}: ${e.message}`, 'tools');
    throw e;
  }
}

/** Unguessable tool-call ids, as OpenAI's `call_...`. */
function toolCallId(): string {
  return 'call_' + randomHex(12);
}

export interface PreparedTurn {
  ids: number[];
  /** positions left in the context after the prompt */
  room: number;
}

/** Tokenize and check the prompt; throws the TurnError the client should get. */
export function prepareTurn(engine: ModelFront, req: TurnRequest): PreparedTurn {
  const { dims } = engine.model;
  const ids = promptIds(engine, req.prompt, offeredTools(req));
  const param = req.prompt.kind === 'chat' ? 'messages' : 'prompt';
  if (req.maxPromptTokens !== undefined && ids.length > req.maxPromptTokens)
    throw new TurnError({
      status: 422,
      type: 'invalid_request_error',
      code: 'prompt_too_long',
      param,
      message: `The prompt is ${ids.length} tokens; this server accepts at most ${req.maxPromptTokens}.`,
    });
  const room = dims.maxPositions - dims.M - ids.length;
  if (room < 1)
    throw new TurnError({
      status: 422,
      type: 'invalid_request_error',
      code: 'context_length_exceeded',
      param,
      // OpenAI's wording, which clients match on
      message:
        `This model's maximum context length is ${dims.maxPositions - dims.M} tokens. ` +
        `However, your prompt resulted in ${ids.length} tokens. Please reduce the length of the prompt.`,
    });
  return { ids, room };
}

/**
 * Log-probs of prompt tokens 1..n-1 from the logits rows of tokens 0..n-2 ([n-1, V]); the first token has
 * none (null), as the OpenAI Completions API reports with `echo`.
 */
function scorePrompt(engine: ModelFront, ids: number[], logits: Float32Array, top: number): (TokenLogprob | null)[] {
  const V = engine.model.dims.V;
  const out: (TokenLogprob | null)[] = [null];
  for (let i = 0; i + 1 < ids.length; i++) {
    const lp = logSoftmax(logits.subarray(i * V, (i + 1) * V));
    const entry = describe(engine, ids[i + 1]!, lp[ids[i + 1]!]!);
    if (top > 0) entry.top = topLogprobs(lp, top).map((a) => describe(engine, a.id, a.logprob));
    out.push(entry);
  }
  return out;
}

/**
 * Run one turn, yielding its events; commits to `store` (when given) only if it completes. The commit is two
 * steps: the pipeline stores the new state under a fresh snapshot id, then the session's transaction makes
 * that id current; older snapshots are dropped only after that. A failure before the transaction leaves the
 * previous snapshot current everywhere (the stray new one is dropped by the next commit).
 */
export async function* runTurn(
  engine: ModelFront,
  pipeline: StatePipeline,
  store: SessionStore | null,
  req: TurnRequest,
  opts: TurnOptions,
  prepared: PreparedTurn = prepareTurn(engine, req),
): AsyncGenerator<TurnEvent> {
  const { ids, room } = prepared;
  // echo with log-probs scores every prompt token, so it starts from the meta prefix, not a snapshot
  const echo = req.echo === true && req.logprobs !== undefined;
  const { cursor, cached } = echo
    ? { cursor: await openFresh(pipeline), cached: 0 }
    : await restore(engine, pipeline, store, ids);
  const open: Cursor[] = [cursor];
  try {
    // prefill all but the last prompt token here, keeping that state for the commit (see canonicalState)
    let promptLogprobs: (TokenLogprob | null)[] | undefined = echo ? [null] : undefined;
    if (ids.length - cached > 1) {
      const run = await pipeline.forward(cursor, ids.slice(cached, -1), echo ? 'all' : 'none');
      if (echo) promptLogprobs = scorePrompt(engine, ids, run.logits, req.logprobs!);
    }
    let beforeLast: { cursor: Cursor; tokens: number[] } | null = null;
    if (store) {
      beforeLast = { cursor: await pipeline.fork(cursor), tokens: ids.slice(0, -1) };
      open.push(beforeLast.cursor);
    }
    const tok = engine.tokenizer;
    const grammar = outputGrammar(engine, req);
    if (grammar && !tok) throw invalid('constrained output needs a model with a tokenizer', 'response_format');
    const tools = offeredTools(req);
    const parser =
      tools.length > 0 ? new ToolCallParser(new Set(tools.map((t) => t.name)), toolCallFormat(engine)) : null;
    const gen = generate(
      { feed: async (fed) => (await pipeline.forward(cursor, fed, 'last')).logits },
      ids.slice(-1),
      {
        maxTokens: Math.min(req.maxTokens, room),
        temperature: req.temperature,
        ...(req.topP !== undefined ? { topP: req.topP } : {}),
        ...(req.topK !== undefined ? { topK: req.topK } : {}),
        ...(req.seed !== undefined ? { seed: req.seed } : {}),
        stopTokenIds: engine.manifest.generation.eosTokenIds,
        stopStrings: tok ? req.stop : [],
        ...(req.logprobs !== undefined ? { logprobs: req.logprobs } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
        ...(grammar && tok ? { constraint: new GrammarConstraint(VocabIndex.of(tok), grammar) } : {}),
      },
      tok ? () => tok.incrementalDecoder({ skipSpecial: true }) : undefined,
    );
    const start: TurnEvent = { type: 'start', promptTokens: ids.length, cachedTokens: cached };
    if (req.returnTokenIds) start.promptIds = ids;
    if (promptLogprobs) start.promptLogprobs = promptLogprobs;
    let started = false;
    let text = '';
    const calls: ParsedToolCall[] = [];
    const toolCallEvents = function* (parsed: ParsedToolCall[]): Generator<TurnEvent> {
      for (const c of parsed) {
        yield { type: 'tool_call', index: calls.length, id: toolCallId(), name: c.name, arguments: c.arguments };
        calls.push(c);
      }
    };
    let completion = 0;
    let r = await gen.next();
    for (; !r.done; r = await gen.next()) {
      if (!started) yield start;
      started = true;
      completion++;
      const parsed = parser ? parser.push(r.value.text) : { content: r.value.text, calls: [] };
      text += parsed.content;
      const lp = tokenLogprob(engine, r.value);
      yield { type: 'token', id: r.value.id, text: parsed.content, ...(lp ? { logprob: lp } : {}) };
      yield* toolCallEvents(parsed.calls);
    }
    const result: GenerateResult = r.value;
    if (result.finishReason === 'abort') return; // the client went away: nothing is committed
    if (!started) yield start;
    let tail = result.tail;
    if (parser) {
      const a = parser.push(tail);
      const b = parser.flush({ dropUnterminated: grammar !== null });
      tail = a.content + b.content;
      yield* toolCallEvents([...a.calls, ...b.calls]);
    }
    text += tail;
    const finishReason = calls.length > 0 ? 'tool_calls' : result.finishReason;
    const reply = replyMessage(text, calls);
    let snapshotBytes = 0;
    if (store && beforeLast) {
      let kept = { cursor, tokens: [...ids.slice(0, -1), ...result.fedIds] };
      const canonical = renderedWithReply(engine, req, reply);
      if (canonical) kept = await canonicalState(pipeline, kept, beforeLast, canonical);
      const snapshotId = store.allocateSnapshotId();
      const bytes = await pipeline.persist(kept.cursor, snapshotId); // 1. every stage stores its slice
      snapshotBytes = bytes;
      const { keep } = store.commitTurn({
        // 2. the session makes it current, atomically with the transcript
        messages: opts.record ? [...opts.newMessages, reply] : [],
        promptTokens: ids.length,
        completionTokens: completion,
        cachedTokens: cached,
        finishReason,
        snapshot: { id: snapshotId, fingerprint: engine.fingerprint, tokens: kept.tokens, bytes },
        keepSnapshots: KEEP_SNAPSHOTS,
        ...(opts.responseId !== undefined ? { responseId: opts.responseId } : {}),
      });
      // 3. only now may older snapshots go; a failure here leaves garbage the next commit removes
      await pipeline.retain(keep).catch((e: unknown) => console.warn('dropping old snapshots failed:', e));
    }
    yield {
      type: 'done',
      finishReason,
      promptTokens: ids.length,
      completionTokens: completion,
      cachedTokens: cached,
      tail,
      snapshotBytes,
    };
  } finally {
    await Promise.all(open.map((c) => pipeline.close(c).catch(() => undefined)));
  }
}
