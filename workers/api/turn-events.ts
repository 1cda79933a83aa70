// Reading a TurnEvent stream, independent of the wire format: collecting a whole turn, failing fast on an
// early error, usage, and log-probs that JSON can carry.

import type { TurnEvent } from '../../engine/serve/protocol.js';
import { ApiError } from './errors.js';

export type StartEvent = Extract<TurnEvent, { type: 'start' }>;
export type TokenEvent = Extract<TurnEvent, { type: 'token' }>;
export type DoneEvent = Extract<TurnEvent, { type: 'done' }>;
export type ToolCallEvent = Extract<TurnEvent, { type: 'tool_call' }>;

/** A finished turn. */
export interface TurnResult {
  start: StartEvent | undefined;
  tokens: TokenEvent[];
  toolCalls: ToolCallEvent[];
  done: DoneEvent;
  /** every token's `text`, then the final `tail` */
  text: string;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
}

/** What JSON carries instead of -Infinity / NaN (`JSON.stringify(-Infinity)` is `null`). */
export const MIN_LOGPROB = -9999;

export function finiteLogprob(x: number): number {
  if (Number.isNaN(x)) return MIN_LOGPROB;
  if (x === Infinity) return 0; // a log-prob is <= 0
  return Math.max(x, MIN_LOGPROB);
}

export function usageOf(done: DoneEvent): Usage {
  return {
    prompt_tokens: done.promptTokens,
    completion_tokens: done.completionTokens,
    total_tokens: done.promptTokens + done.completionTokens,
    prompt_tokens_details: { cached_tokens: done.cachedTokens },
  };
}

export function turnEndedEarly(): ApiError {
  return ApiError.internal('The model stopped before finishing the turn.');
}

/** Reads a whole turn. An `error` event is thrown as an ApiError; the source is closed on every exit. */
export async function collectTurn(events: AsyncIterable<TurnEvent>): Promise<TurnResult> {
  let start: StartEvent | undefined;
  const tokens: TokenEvent[] = [];
  const toolCalls: ToolCallEvent[] = [];
  let text = '';
  // for-await calls the iterator's return() when we leave early (done, or a throw)
  for await (const event of events) {
    switch (event.type) {
      case 'start':
        start = event;
        break;
      case 'token':
        tokens.push(event);
        text += event.text;
        break;
      case 'tool_call':
        toolCalls.push(event);
        break;
      case 'done':
        return { start, tokens, toolCalls, done: event, text: text + event.tail };
      case 'error':
        throw ApiError.from(event.error);
    }
  }
  throw turnEndedEarly();
}

/**
 * Waits up to `waitMs` for the first event, so that an error the Durable Object reports at once (session busy,
 * prompt too long, loading) can still be sent with its HTTP status instead of inside a 200 event stream.
 * Throws that error as an ApiError (or rethrows what the source threw in that time); otherwise returns the
 * events, the first one included. Returning from the result's iterator returns from the source's.
 */
export async function failFast(events: AsyncIterable<TurnEvent>, waitMs: number): Promise<AsyncIterable<TurnEvent>> {
  const source = events[Symbol.asyncIterator]();
  const first = source.next();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), waitMs);
  });
  let early: IteratorResult<TurnEvent> | 'timeout';
  try {
    early = await Promise.race([first, timeout]);
  } catch (err) {
    await closeQuietly(source);
    throw err;
  } finally {
    clearTimeout(timer);
  }
  if (early !== 'timeout' && !early.done && early.value.type === 'error') {
    await closeQuietly(source);
    throw ApiError.from(early.value.error);
  }
  let head: Promise<IteratorResult<TurnEvent>> | undefined = first;
  const iterator: AsyncIterator<TurnEvent> = {
    next() {
      const next = head ?? source.next();
      head = undefined;
      return next;
    },
    async return() {
      head = undefined;
      await closeQuietly(source);
      return { done: true, value: undefined };
    },
  };
  return { [Symbol.asyncIterator]: () => iterator };
}

/** Calls the iterator's `return()` (lets the producer stop); its failures are of no interest here. */
export async function closeQuietly(it: AsyncIterator<unknown>): Promise<void> {
  try {
    await it.return?.();
  } catch {
    // the producer failed while stopping: nothing left to tell the client
  }
}
