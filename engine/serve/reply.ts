// The reply: generation from the prefilled state, as TurnEvents. Output under a grammar when the request
// constrains it (JSON, tool calls); tool calls parsed out of the text as they complete, so `token` events
// carry only message content; stop strings held back until they can no longer match.

import { generate, type GenerateOptions, type GenerateResult } from '../generate/generate.js';
import type { Grammar } from '../constrain/grammar.js';
import { GrammarConstraint, VocabIndex } from '../constrain/token-mask.js';
import type { ModelFront } from '../run/loaded-model.js';
import type { Cursor, StatePipeline } from '../run/pipeline.js';
import type { ChatMessage } from '../text/chat-template.js';
import { ToolCallParser, type ParsedToolCall } from '../text/tool-calls.js';
import { errors } from './errors.js';
import { randomHex } from './ids.js';
import { tokenLogprob } from './logprobs.js';
import { offeredTools, outputGrammar, toolCallFormat } from './prepare.js';
import type { FinishReason, TurnEvent, TurnRequest } from './protocol.js';

/** A finished reply. */
export interface Reply {
  /** the assistant message it is stored and re-rendered as */
  message: ChatMessage;
  finishReason: FinishReason;
  completionTokens: number;
  /** text released at the end (stop-string holdback, the detokenizer's remainder) */
  tail: string;
  /** the ids the cursor has processed in generation: the last prompt token, then every reply token but the last */
  fedIds: number[];
}

/** Unguessable tool-call ids, as OpenAI's `call_...`. */
function toolCallId(): string {
  return 'call_' + randomHex(12);
}

/** The assistant message a reply is stored and re-rendered as: its content and its parsed tool calls. */
function replyMessage(content: string, calls: ParsedToolCall[]): ChatMessage {
  const m: ChatMessage = { role: 'assistant', content };
  if (calls.length > 0) m.tool_calls = calls.map((c) => ({ name: c.name, arguments: c.arguments }));
  return m;
}

/** The sampling, stop and constraint settings of the request, for at most `room` tokens. */
function generateOptions(
  engine: ModelFront,
  req: TurnRequest,
  room: number,
  grammar: Grammar | null,
  signal: AbortSignal | undefined,
): GenerateOptions {
  const tok = engine.tokenizer;
  return {
    maxTokens: Math.min(req.maxTokens, room),
    temperature: req.temperature,
    ...(req.topP !== undefined ? { topP: req.topP } : {}),
    ...(req.topK !== undefined ? { topK: req.topK } : {}),
    ...(req.seed !== undefined ? { seed: req.seed } : {}),
    stopTokenIds: engine.manifest.generation.eosTokenIds,
    stopStrings: tok ? req.stop : [],
    ...(req.logprobs !== undefined ? { logprobs: req.logprobs } : {}),
    ...(signal ? { signal } : {}),
    ...(grammar && tok ? { constraint: new GrammarConstraint(VocabIndex.of(tok), grammar) } : {}),
  };
}

/**
 * Generate the reply on `cursor`, which holds every prompt id but the last (`last`: [that id]).
 * Yields `start` before the first token (at the end when there is none), then `token` and `tool_call` events;
 * returns the reply, or null when the client went away (`signal`).
 */
export async function* generateReply(
  engine: ModelFront,
  pipeline: StatePipeline,
  cursor: Cursor,
  last: number[],
  room: number,
  req: TurnRequest,
  start: TurnEvent,
  signal?: AbortSignal,
): AsyncGenerator<TurnEvent, Reply | null> {
  const tok = engine.tokenizer;
  const grammar = outputGrammar(engine, req);
  if (grammar && !tok) throw errors.invalid('constrained output needs a model with a tokenizer', 'response_format');
  const tools = offeredTools(req);
  const parser =
    tools.length > 0 ? new ToolCallParser(new Set(tools.map((t) => t.name)), toolCallFormat(engine)) : null;
  const gen = generate(
    { feed: async (fed) => (await pipeline.forward(cursor, fed, 'last')).logits },
    last,
    generateOptions(engine, req, room, grammar, signal),
    tok ? () => tok.incrementalDecoder({ skipSpecial: true }) : undefined,
  );
  let started = false;
  let text = '';
  const calls: ParsedToolCall[] = [];
  const toolCallEvents = function* (parsed: ParsedToolCall[]): Generator<TurnEvent> {
    for (const c of parsed) {
      yield { type: 'tool_call', index: calls.length, id: toolCallId(), name: c.name, arguments: c.arguments };
      calls.push(c);
    }
  };
  let completionTokens = 0;
  let r = await gen.next();
  for (; !r.done; r = await gen.next()) {
    if (!started) yield start;
    started = true;
    completionTokens++;
    const parsed = parser ? parser.push(r.value.text) : { content: r.value.text, calls: [] };
    text += parsed.content;
    const lp = tokenLogprob(engine, r.value);
    yield { type: 'token', id: r.value.id, text: parsed.content, ...(lp ? { logprob: lp } : {}) };
    yield* toolCallEvents(parsed.calls);
  }
  const result: GenerateResult = r.value;
  if (result.finishReason === 'abort') return null; // the client went away: nothing is committed
  if (!started) yield start;
  let tail = result.tail;
  if (parser) {
    // the held-back text may complete a call; under a grammar a call cut by max_tokens is not content
    const a = parser.push(tail);
    const b = parser.flush({ dropUnterminated: grammar !== null });
    tail = a.content + b.content;
    yield* toolCallEvents([...a.calls, ...b.calls]);
  }
  text += tail;
  return {
    message: replyMessage(text, calls),
    finishReason: calls.length > 0 ? 'tool_calls' : result.finishReason,
    completionTokens,
    tail,
    fedIds: result.fedIds,
  };
}
