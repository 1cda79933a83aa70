// Server-Sent Events: `data: {json}\n\n` frames, `data: [DONE]`, `: keep-alive` comments while the source is
// quiet (long prompt processing must not trip client read timeouts), errors as a final `data: {"error": ...}`
// frame, and cancellation passed back to the producer.

import { ApiError, errorBody, toApiError } from './errors.js';
import { closeQuietly } from './turn-events.js';

export const DEFAULT_KEEP_ALIVE_MS = 10_000;

export const SSE_HEADERS: Readonly<Record<string, string>> = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache, no-transform',
  // proxies (nginx and friends) must not buffer the stream
  'x-accel-buffering': 'no',
};

export const KEEP_ALIVE_FRAME = ': keep-alive\n\n';
export const DONE_FRAME = 'data: [DONE]\n\n';

/** One source event, formatted: the payloads to send (each one `data:` frame), and whether it was the last. */
export interface SseStep {
  data: readonly unknown[];
  /** the stream is complete: send `data: [DONE]` and close */
  last?: boolean;
}

export interface EventStreamOptions {
  /** interval of `: keep-alive` comments while waiting for the source; 0 disables them (default 10 s) */
  keepAliveMs?: number;
  /** called with an exception that is not an ApiError before it is sent as a generic 500 */
  onError?: (err: unknown) => void;
}

/** `data: {json}\n\n` */
export function sseData(payload: unknown): string {
  return `data: ${JSON.stringify(payload)}\n\n`;
}

/** A 200 event-stream response. */
export function sseResponse(body: ReadableStream<Uint8Array>, init: ResponseInit = {}): Response {
  const headers = new Headers(init.headers);
  for (const [name, value] of Object.entries(SSE_HEADERS)) headers.set(name, value);
  return new Response(body, { ...init, status: init.status ?? 200, headers });
}

/** How one kind of stream turns its source's events into SSE text (see writeSse). */
export interface SseWriter<E> {
  /** frames sent as the stream opens */
  open?(): string;
  /** the frames for one event, and whether the stream is then complete (may wait, e.g. to store a result) */
  event(e: E): { frames: string; last: boolean } | Promise<{ frames: string; last: boolean }>;
  /** the frame that reports an error and ends the stream */
  error(err: ApiError): string;
  /** the error for a source that ends before a last event (default: a generic internal error) */
  ended?(): ApiError;
  /** called with an exception that is not an ApiError before it is sent as a generic 500 */
  onError?: (err: unknown) => void;
}

/**
 * The one SSE loop: pull an event (sending `: keep-alive` comments while the source is quiet), write its
 * frames, stop after the last. The stream always ends: after a last event, or with an error frame (a thrown
 * error, or the source ending early). When the client cancels, the source's `return()` is called so the
 * producer can stop.
 */
export function writeSse<E>(
  source: AsyncIterable<E>,
  writer: SseWriter<E>,
  keepAliveMs = DEFAULT_KEEP_ALIVE_MS,
): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  const iterator = source[Symbol.asyncIterator]();
  let cancelled = false;
  let sourceClosed = false;

  function closeSource(): void {
    if (sourceClosed) return;
    sourceClosed = true;
    // not awaited: a producer that is busy (prompt processing) sees the return when it next yields
    void closeQuietly(iterator);
  }

  async function pump(controller: ReadableStreamDefaultController<Uint8Array>): Promise<void> {
    const send = (frames: string): void => {
      if (!cancelled && frames !== '') controller.enqueue(encoder.encode(frames));
    };
    try {
      if (writer.open) send(writer.open());
      for (;;) {
        const result = await withKeepAlive(iterator.next(), keepAliveMs, () => send(KEEP_ALIVE_FRAME));
        if (cancelled) return;
        if (result.done) {
          sourceClosed = true;
          throw writer.ended?.() ?? ApiError.internal('The response ended before it was complete.');
        }
        const step = await writer.event(result.value);
        send(step.frames);
        if (step.last) return;
      }
    } catch (err) {
      if (cancelled) return;
      if (!(err instanceof ApiError)) (writer.onError ?? logError)(err);
      send(writer.error(toApiError(err)));
    } finally {
      closeSource();
      if (!cancelled) controller.close();
    }
  }

  return new ReadableStream<Uint8Array>({
    start(controller) {
      void pump(controller);
    },
    cancel() {
      cancelled = true;
      closeSource();
    },
  });
}

/**
 * The OpenAI streaming format over `source`: `format` maps each event to `data:` payloads (and may throw an
 * ApiError, sent as a `data: {"error": ...}` frame); after a step marked `last` comes `data: [DONE]`.
 */
export function eventStream<E>(
  source: AsyncIterable<E>,
  format: (event: E) => SseStep,
  opts: EventStreamOptions = {},
): ReadableStream<Uint8Array> {
  return writeSse(
    source,
    {
      event(e) {
        const step = format(e);
        const last = step.last === true;
        return { frames: step.data.map(sseData).join('') + (last ? DONE_FRAME : ''), last };
      },
      error: (err) => sseData(errorBody(err)),
      ...(opts.onError ? { onError: opts.onError } : {}),
    },
    opts.keepAliveMs ?? DEFAULT_KEEP_ALIVE_MS,
  );
}

/** Awaits `next`, calling `onIdle` every `ms` until it settles. */
export async function withKeepAlive<T>(next: Promise<T>, ms: number, onIdle: () => void): Promise<T> {
  if (!(ms > 0)) return next;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const tick = (): void => {
    onIdle();
    timer = setTimeout(tick, ms);
  };
  timer = setTimeout(tick, ms);
  try {
    return await next;
  } finally {
    clearTimeout(timer);
  }
}

function logError(err: unknown): void {
  console.error('event stream failed:', err);
}
