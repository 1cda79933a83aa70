// TurnEvents -> the (legacy) Completions wire format: one `text_completion` object, or an SSE stream of them.
//
// Log-probs use the Completions shape `{tokens, token_logprobs, top_logprobs, text_offset}`. With `echo`, the
// prompt comes first: its text, and its tokens' log-probs (the first token has none: null). This is what
// lm-evaluation-harness scores with (`echo: true, logprobs: 1, max_tokens: 1`, summing `token_logprobs`).
// `text_offset` counts code points (Python `str` indices, as OpenAI does) into the returned text.

import type { FinishReason, TokenLogprob, TurnEvent } from '../../engine/serve/protocol.js';
import { ApiError } from './errors.js';
import { randomId, unixSeconds } from '../../engine/serve/ids.js';
import type { CompletionRequest } from './schemas.js';
import { eventStream, type EventStreamOptions, type SseStep } from './sse.js';
import { promptText } from './to-turn.js';
import { collectTurn, finiteLogprob, usageOf, type StartEvent, type Usage } from './turn-events.js';

// ---- wire types ----

export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[];
  text_offset: number[];
}

export interface CompletionChoice {
  index: number;
  text: string;
  logprobs: CompletionLogprobs | null;
  finish_reason: FinishReason | null;
  /** with return_token_ids (vLLM): the prompt's ids (in the first chunk when streaming) */
  prompt_token_ids?: number[];
  /** with return_token_ids (vLLM): the generated ids */
  token_ids?: number[];
}

export interface TextCompletion {
  id: string;
  object: 'text_completion';
  created: number;
  model: string;
  choices: CompletionChoice[];
  /** always in a whole response; in a stream only with include_usage (null, then the totals in a last chunk) */
  usage?: Usage | null;
}

// ---- options ----

export interface CompletionFormatOptions {
  model: string;
  /** include log-probs (the request's `logprobs` was a number) */
  logprobs?: boolean;
  /** repeat the prompt before the completion */
  echo?: boolean;
  /**
   * the prompt text to echo; without it (a token-id prompt) the prompt tokens' texts from the `start` event
   * are joined
   */
  echoText?: string;
  returnTokenIds?: boolean;
  id?: string;
  created?: number;
}

export interface CompletionStreamOptions extends CompletionFormatOptions, EventStreamOptions {
  includeUsage?: boolean;
}

/** The formatting options a request asks for. */
export function completionFormatOptions(body: CompletionRequest, model: string): CompletionStreamOptions {
  const opts: CompletionStreamOptions = {
    model,
    logprobs: body.logprobs != null,
    echo: body.echo === true,
    returnTokenIds: body.return_token_ids === true,
    includeUsage: body.stream_options?.include_usage === true,
  };
  const text = promptText(body.prompt);
  if (text !== undefined) opts.echoText = text;
  return opts;
}

// ---- log-probs ----

/** Accumulates log-probs in the Completions shape, tracking each token's offset into the returned text. */
export class CompletionLogprobsBuilder {
  private entries: CompletionLogprobs = emptyLogprobs();

  /** `offset`: where the next token starts in the returned text, in code points */
  constructor(public offset = 0) {}

  /** One token; `null` is a prompt token without a log-prob (the first one). */
  add(lp: TokenLogprob | null): void {
    const text = lp?.text ?? '';
    this.entries.tokens.push(text);
    this.entries.token_logprobs.push(lp === null ? null : finiteLogprob(lp.logprob));
    this.entries.top_logprobs.push(lp === null ? null : topLogprobs(lp));
    this.entries.text_offset.push(this.offset);
    this.offset += codePoints(text);
  }

  /** The entries added since the last take. */
  take(): CompletionLogprobs {
    const out = this.entries;
    this.entries = emptyLogprobs();
    return out;
  }
}

function emptyLogprobs(): CompletionLogprobs {
  return { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
}

/** `{token: logprob}` for the alternatives; without alternatives (logprobs: 0), the chosen token alone. */
function topLogprobs(lp: TokenLogprob): Record<string, number> {
  const top = lp.top !== undefined && lp.top.length > 0 ? lp.top : [lp];
  const out: Record<string, number> = {};
  for (const t of top) {
    const logprob = finiteLogprob(t.logprob);
    // two alternatives can decode to the same text: keep the likelier
    const prev = out[t.text];
    if (prev === undefined || logprob > prev) out[t.text] = logprob;
  }
  return out;
}

/** Length in code points (Python's `len`), not UTF-16 units. */
export function codePoints(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

/** The echoed prompt: the request's text, else the prompt tokens' texts. */
function echoedText(opts: CompletionFormatOptions, start: StartEvent | undefined): string {
  if (!opts.echo) return '';
  if (opts.echoText !== undefined) return opts.echoText;
  return (start?.promptLogprobs ?? []).map((lp) => lp?.text ?? '').join('');
}

/** The prompt part of the log-probs (echo only); leaves the builder's offset at the end of the echoed text. */
function addPromptLogprobs(b: CompletionLogprobsBuilder, start: StartEvent | undefined, echoText: string): void {
  for (const lp of start?.promptLogprobs ?? []) b.add(lp);
  b.offset = codePoints(echoText);
}

// ---- non-streaming ----

/** Reads the whole turn into a `text_completion`. An error event is thrown as an ApiError. */
export async function collectCompletion(
  events: AsyncIterable<TurnEvent>,
  opts: CompletionFormatOptions,
): Promise<TextCompletion> {
  const turn = await collectTurn(events);
  const echoText = echoedText(opts, turn.start);
  let logprobs: CompletionLogprobs | null = null;
  if (opts.logprobs) {
    const b = new CompletionLogprobsBuilder();
    if (opts.echo) addPromptLogprobs(b, turn.start, echoText);
    for (const t of turn.tokens) if (t.logprob) b.add(t.logprob);
    logprobs = b.take();
  }
  const choice: CompletionChoice = {
    index: 0,
    text: echoText + turn.text,
    logprobs,
    finish_reason: turn.done.finishReason,
  };
  if (opts.returnTokenIds) {
    choice.prompt_token_ids = turn.start?.promptIds ?? [];
    choice.token_ids = turn.tokens.map((t) => t.id);
  }
  return {
    id: opts.id ?? randomId('cmpl'),
    object: 'text_completion',
    created: opts.created ?? unixSeconds(),
    model: opts.model,
    choices: [choice],
    usage: usageOf(turn.done),
  };
}

// ---- streaming ----

/**
 * The per-request stream state machine. `start` sends the echoed prompt (if asked for; prompt processing is
 * over by then); each token with text (or requested log-probs / ids) a chunk; `done` the tail with
 * `finish_reason`, then (include_usage) a usage chunk with `choices: []`.
 */
export function completionChunkFormatter(opts: CompletionStreamOptions): (event: TurnEvent) => SseStep {
  const id = opts.id ?? randomId('cmpl');
  const created = opts.created ?? unixSeconds();
  const logprobs = new CompletionLogprobsBuilder();
  let promptIds: number[] | undefined;

  function chunk(choice: CompletionChoice): TextCompletion {
    const out: TextCompletion = { id, object: 'text_completion', created, model: opts.model, choices: [choice] };
    if (opts.includeUsage) out.usage = null;
    if (promptIds !== undefined) {
      choice.prompt_token_ids = promptIds;
      promptIds = undefined;
    }
    return out;
  }

  function onStart(event: StartEvent): SseStep {
    if (opts.returnTokenIds) promptIds = event.promptIds ?? [];
    if (!opts.echo) return { data: [] };
    const text = echoedText(opts, event);
    let lps: CompletionLogprobs | null = null;
    if (opts.logprobs) {
      addPromptLogprobs(logprobs, event, text);
      lps = logprobs.take();
    } else {
      logprobs.offset = codePoints(text);
    }
    if (text === '' && lps === null && promptIds === undefined) return { data: [] };
    const choice: CompletionChoice = { index: 0, text, logprobs: lps, finish_reason: null };
    if (opts.returnTokenIds) choice.token_ids = [];
    return { data: [chunk(choice)] };
  }

  return function formatCompletionEvent(event: TurnEvent): SseStep {
    switch (event.type) {
      case 'start':
        return onStart(event);
      case 'token': {
        let lps: CompletionLogprobs | null = null;
        if (opts.logprobs && event.logprob) {
          logprobs.add(event.logprob);
          lps = logprobs.take();
        }
        if (event.text === '' && lps === null && !opts.returnTokenIds) return { data: [] };
        const choice: CompletionChoice = { index: 0, text: event.text, logprobs: lps, finish_reason: null };
        if (opts.returnTokenIds) choice.token_ids = [event.id];
        return { data: [chunk(choice)] };
      }
      case 'done': {
        const last: CompletionChoice = {
          index: 0,
          text: event.tail,
          logprobs: null,
          finish_reason: event.finishReason,
        };
        if (opts.returnTokenIds) last.token_ids = [];
        const data: TextCompletion[] = [chunk(last)];
        if (opts.includeUsage) {
          data.push({ id, object: 'text_completion', created, model: opts.model, choices: [], usage: usageOf(event) });
        }
        return { data, last: true };
      }
      case 'tool_call':
        return { data: [] }; // completions offer no tools
      case 'error':
        throw ApiError.from(event.error);
    }
  };
}

/** The SSE body of a streaming completion. */
export function streamCompletion(
  events: AsyncIterable<TurnEvent>,
  opts: CompletionStreamOptions,
): ReadableStream<Uint8Array> {
  return eventStream(events, completionChunkFormatter(opts), opts);
}
