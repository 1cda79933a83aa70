// TurnEvents -> the Chat Completions wire format: one `chat.completion` object, or an SSE stream of
// `chat.completion.chunk`s (README.md, "HTTP API"). The stream state (id, created, whether the role was sent) lives in
// the formatter made for one request.

import type { FinishReason, TokenLogprob, TurnEvent } from '../../engine/serve/protocol.js';
import { ApiError } from './errors.js';
import { randomId, unixSeconds } from '../../engine/serve/ids.js';
import type { ChatCompletionRequest } from './schemas.js';
import { eventStream, type EventStreamOptions, type SseStep } from './sse.js';
import { collectTurn, finiteLogprob, usageOf, type Usage } from './turn-events.js';

// ---- wire types ----

export interface ChatTopLogprob {
  token: string;
  logprob: number;
  bytes: number[] | null;
}

export interface ChatTokenLogprob extends ChatTopLogprob {
  top_logprobs: ChatTopLogprob[];
}

export interface ChatLogprobs {
  content: ChatTokenLogprob[];
  refusal: null;
}

export interface ChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: {
    index: number;
    message: { role: 'assistant'; content: string | null; refusal: null; tool_calls?: ChatToolCall[] };
    logprobs: ChatLogprobs | null;
    finish_reason: FinishReason;
    /** with return_token_ids */
    token_ids?: number[];
  }[];
  usage: Usage;
  /** with return_token_ids */
  prompt_token_ids?: number[];
}

export interface ChatToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

/** A streamed tool call: complete calls are sent whole, in one delta each (clients accumulate either way). */
export interface ChatToolCallDelta extends ChatToolCall {
  index: number;
}

export interface ChatDelta {
  role?: 'assistant';
  content?: string;
  tool_calls?: ChatToolCallDelta[];
}

export interface ChatChunkChoice {
  index: number;
  delta: ChatDelta;
  logprobs: ChatLogprobs | null;
  finish_reason: FinishReason | null;
  token_ids?: number[];
}

export interface ChatCompletionChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: ChatChunkChoice[];
  /** present (null, or the totals in the extra last chunk) only with stream_options.include_usage */
  usage?: Usage | null;
  /** first chunk, with return_token_ids */
  prompt_token_ids?: number[];
}

// ---- options ----

export interface ChatFormatOptions {
  /** the `model` field of the response */
  model: string;
  /** include `choices[].logprobs` (the request's `logprobs: true`) */
  logprobs?: boolean;
  /** vLLM's return_token_ids: `prompt_token_ids` and `choices[].token_ids` */
  returnTokenIds?: boolean;
  /** defaults: a fresh `chatcmpl-` id and the current time */
  id?: string;
  created?: number;
}

export interface ChatStreamOptions extends ChatFormatOptions, EventStreamOptions {
  /** stream_options.include_usage */
  includeUsage?: boolean;
}

/** The formatting options a request asks for. */
export function chatFormatOptions(body: ChatCompletionRequest, model: string): ChatStreamOptions {
  return {
    model,
    logprobs: body.logprobs === true,
    returnTokenIds: body.return_token_ids === true,
    includeUsage: body.stream_options?.include_usage === true,
  };
}

// ---- log-probs ----

const utf8 = new TextEncoder();

/** A token's log-prob in the Chat Completions shape (non-finite values clamped). */
export function chatLogprob(lp: TokenLogprob): ChatTokenLogprob {
  return {
    token: lp.text,
    logprob: finiteLogprob(lp.logprob),
    bytes: [...utf8.encode(lp.text)],
    top_logprobs: (lp.top ?? []).map((t) => ({
      token: t.text,
      logprob: finiteLogprob(t.logprob),
      bytes: [...utf8.encode(t.text)],
    })),
  };
}

// ---- non-streaming ----

/** Reads the whole turn into a `chat.completion`. An error event is thrown as an ApiError. */
export async function collectChatCompletion(
  events: AsyncIterable<TurnEvent>,
  opts: ChatFormatOptions,
): Promise<ChatCompletion> {
  const turn = await collectTurn(events);
  const logprobs: ChatLogprobs | null = opts.logprobs
    ? { content: turn.tokens.flatMap((t) => (t.logprob ? [chatLogprob(t.logprob)] : [])), refusal: null }
    : null;
  const calls = turn.toolCalls.map((c): ChatToolCall => ({
    id: c.id,
    type: 'function',
    function: { name: c.name, arguments: c.arguments },
  }));
  const message: ChatCompletion['choices'][number]['message'] = {
    role: 'assistant',
    // OpenAI sends null content with tool calls and no text
    content: calls.length > 0 && turn.text === '' ? null : turn.text,
    refusal: null,
  };
  if (calls.length > 0) message.tool_calls = calls;
  const choice: ChatCompletion['choices'][number] = {
    index: 0,
    message,
    logprobs,
    finish_reason: turn.done.finishReason,
  };
  if (opts.returnTokenIds) choice.token_ids = turn.tokens.map((t) => t.id);
  const body: ChatCompletion = {
    id: opts.id ?? randomId('chatcmpl'),
    object: 'chat.completion',
    created: opts.created ?? unixSeconds(),
    model: opts.model,
    choices: [choice],
    usage: usageOf(turn.done),
  };
  if (opts.returnTokenIds) body.prompt_token_ids = turn.start?.promptIds ?? [];
  return body;
}

// ---- streaming ----

/**
 * The per-request stream state machine: each TurnEvent -> the chunks to send.
 * - `start` sends nothing: the role goes out with the first token (benchmarks time TTFT at the first chunk
 *   with choices, so nothing with choices may precede the first token).
 * - `token`: the first one carries `role` and its text; later ones only when they carry text (or log-probs or
 *   token ids that were asked for).
 * - `done`: the held-back `tail`, then an empty delta with `finish_reason`, then (include_usage) the usage chunk.
 * - `error`: thrown as an ApiError (sent as an error frame by the SSE writer).
 */
export function chatChunkFormatter(opts: ChatStreamOptions): (event: TurnEvent) => SseStep {
  const id = opts.id ?? randomId('chatcmpl');
  const created = opts.created ?? unixSeconds();
  let roleSent = false;
  let promptIds: number[] | undefined;

  function chunk(choice: ChatChunkChoice): ChatCompletionChunk {
    const out: ChatCompletionChunk = {
      id,
      object: 'chat.completion.chunk',
      created,
      model: opts.model,
      choices: [choice],
    };
    if (opts.includeUsage) out.usage = null;
    if (promptIds !== undefined) {
      out.prompt_token_ids = promptIds;
      promptIds = undefined;
    }
    return out;
  }

  function delta(text: string): ChatDelta {
    if (roleSent) return { content: text };
    roleSent = true;
    return { role: 'assistant', content: text };
  }

  return function formatChatEvent(event: TurnEvent): SseStep {
    switch (event.type) {
      case 'start':
        if (opts.returnTokenIds) promptIds = event.promptIds ?? [];
        return { data: [] };
      case 'token': {
        const logprobs =
          opts.logprobs && event.logprob ? { content: [chatLogprob(event.logprob)], refusal: null } : null;
        if (roleSent && event.text === '' && logprobs === null && !opts.returnTokenIds) return { data: [] };
        const choice: ChatChunkChoice = { index: 0, delta: delta(event.text), logprobs, finish_reason: null };
        if (opts.returnTokenIds) choice.token_ids = [event.id];
        return { data: [chunk(choice)] };
      }
      case 'tool_call': {
        const call: ChatToolCallDelta = {
          index: event.index,
          id: event.id,
          type: 'function',
          function: { name: event.name, arguments: event.arguments },
        };
        const d: ChatDelta = roleSent ? { tool_calls: [call] } : { role: 'assistant', tool_calls: [call] };
        roleSent = true;
        return { data: [chunk({ index: 0, delta: d, logprobs: null, finish_reason: null })] };
      }
      case 'done': {
        const data: ChatCompletionChunk[] = [];
        if (!roleSent || event.tail !== '') {
          data.push(chunk({ index: 0, delta: delta(event.tail), logprobs: null, finish_reason: null }));
        }
        data.push(chunk({ index: 0, delta: {}, logprobs: null, finish_reason: event.finishReason }));
        if (opts.includeUsage) {
          const usage = usageOf(event);
          data.push({ id, object: 'chat.completion.chunk', created, model: opts.model, choices: [], usage });
        }
        return { data, last: true };
      }
      case 'error':
        throw ApiError.from(event.error);
    }
  };
}

/** The SSE body of a streaming chat completion (`data: {chunk}` ... `data: [DONE]`). */
export function streamChatCompletion(
  events: AsyncIterable<TurnEvent>,
  opts: ChatStreamOptions,
): ReadableStream<Uint8Array> {
  return eventStream(events, chatChunkFormatter(opts), opts);
}
