// TurnEvents -> the Responses API wire format: one `response` object, or an SSE stream of typed events
// (`event: response.output_text.delta` + `data: {"type": ..., "sequence_number": n, ...}`), ending with
// `response.completed` / `response.incomplete` carrying the whole response (no `[DONE]`). Both are built by
// the same assembler, so a streamed response and a non-streamed one have the same output items.

import type { ChatMessage } from '../../engine/text/chat-template.js';
import type { TurnEvent } from '../../engine/serve/protocol.js';
import { ApiError } from './errors.js';
import { randomHex } from '../../engine/serve/ids.js';
import type { ResponseCreateRequest } from './responses-schemas.js';
import { DEFAULT_KEEP_ALIVE_MS, writeSse } from './sse.js';
import { turnEndedEarly, type DoneEvent } from './turn-events.js';

// ---- wire types (openai/resources/responses/responses.d.ts) ----

export interface OutputText {
  type: 'output_text';
  text: string;
  annotations: never[];
  logprobs: never[];
}

type ItemStatus = 'in_progress' | 'completed' | 'incomplete';

export interface OutputMessage {
  type: 'message';
  id: string;
  status: ItemStatus;
  role: 'assistant';
  content: OutputText[];
}

export interface FunctionCall {
  type: 'function_call';
  id: string;
  call_id: string;
  name: string;
  arguments: string;
  status: ItemStatus;
}

export type OutputItem = OutputMessage | FunctionCall;

export interface ResponseUsage {
  input_tokens: number;
  input_tokens_details: { cached_tokens: number };
  output_tokens: number;
  output_tokens_details: { reasoning_tokens: number };
  total_tokens: number;
}

export interface FunctionToolOut {
  type: 'function';
  name: string;
  description: string | null;
  parameters: Record<string, unknown> | null;
  strict: boolean | null;
}

type TextFormatOut = NonNullable<NonNullable<ResponseCreateRequest['text']>['format']>;

export interface ResponseObject {
  id: string;
  object: 'response';
  created_at: number;
  status: 'in_progress' | 'completed' | 'incomplete';
  incomplete_details: { reason: 'max_output_tokens' } | null;
  error: null;
  model: string;
  instructions: string | null;
  previous_response_id: string | null;
  output: OutputItem[];
  parallel_tool_calls: boolean;
  tool_choice: NonNullable<ResponseCreateRequest['tool_choice']>;
  tools: FunctionToolOut[];
  temperature: number;
  top_p: number;
  max_output_tokens: number | null;
  store: boolean;
  metadata: Record<string, string>;
  text: { format: TextFormatOut };
  usage: ResponseUsage | null;
  user?: string;
}

/** One typed stream event (its `type` is also the SSE `event:` name). */
export type ResponseStreamEvent = { type: string; sequence_number: number } & Record<string, unknown>;

// ---- ids ----

/** `msg_...`, `fc_...`: output item ids (128 random bits). */
export const itemId = (prefix: 'msg' | 'fc'): string => `${prefix}_${randomHex(16)}`;

/** The random suffix of a response id (64 bits; the session's own id carries the rest). */
export const responseSuffix = (): string => randomHex(8);

// ---- the response shell ----

/** What the response echoes from its request, and who it is. */
export interface ResponseHead {
  id: string;
  createdAt: number;
  model: string;
  /** the request (a response rebuilt from storage has none: `{}`) */
  body: Partial<ResponseCreateRequest>;
}

/** The response object before any output: `in_progress`, no usage. */
export function responseShell(head: ResponseHead): ResponseObject {
  const b = head.body;
  const out: ResponseObject = {
    id: head.id,
    object: 'response',
    created_at: head.createdAt,
    status: 'in_progress',
    incomplete_details: null,
    error: null,
    model: head.model,
    instructions: b.instructions ?? null,
    previous_response_id: b.previous_response_id ?? null,
    output: [],
    parallel_tool_calls: b.parallel_tool_calls ?? true,
    tool_choice: b.tool_choice ?? 'auto',
    tools: (b.tools ?? []).map((t) => ({
      type: 'function',
      name: t.name,
      description: t.description ?? null,
      parameters: t.parameters ?? null,
      strict: t.strict ?? null,
    })),
    temperature: b.temperature ?? 1,
    top_p: b.top_p ?? 1,
    max_output_tokens: b.max_output_tokens ?? null,
    store: b.store ?? true,
    metadata: b.metadata ?? {},
    text: { format: b.text?.format ?? { type: 'text' } },
    usage: null,
  };
  if (b.user != null) out.user = b.user;
  return out;
}

export function responseUsage(done: Pick<DoneEvent, 'promptTokens' | 'completionTokens' | 'cachedTokens'>) {
  return {
    input_tokens: done.promptTokens,
    input_tokens_details: { cached_tokens: done.cachedTokens },
    output_tokens: done.completionTokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: done.promptTokens + done.completionTokens,
  } satisfies ResponseUsage;
}

const outputText = (text: string): OutputText => ({ type: 'output_text', text, annotations: [], logprobs: [] });

// ---- the assembler: TurnEvents -> output items and stream events ----

/**
 * Builds one response from a turn's events. Text opens a message item (closed by a tool call or the end);
 * each tool call is a function_call item. `push`/`finish` return the stream events, numbered in order.
 * A turn with neither text nor calls still gets an (empty) message.
 */
export class ResponseAssembler {
  private seq = 0;
  private readonly response: ResponseObject;
  private message: { item: OutputMessage; index: number } | null = null;

  constructor(head: ResponseHead) {
    this.response = responseShell(head);
  }

  private event(type: string, fields: Record<string, unknown>): ResponseStreamEvent {
    return { type, sequence_number: this.seq++, ...fields };
  }

  private snapshot(): ResponseObject {
    return structuredClone(this.response);
  }

  /** response.created and response.in_progress */
  open(): ResponseStreamEvent[] {
    return [
      this.event('response.created', { response: this.snapshot() }),
      this.event('response.in_progress', { response: this.snapshot() }),
    ];
  }

  private openMessage(out: ResponseStreamEvent[]): { item: OutputMessage; index: number } {
    if (this.message) return this.message;
    const item: OutputMessage = {
      type: 'message',
      id: itemId('msg'),
      status: 'in_progress',
      role: 'assistant',
      content: [],
    };
    const index = this.response.output.push(item) - 1;
    out.push(this.event('response.output_item.added', { output_index: index, item: structuredClone(item) }));
    item.content.push(outputText(''));
    out.push(
      this.event('response.content_part.added', {
        item_id: item.id,
        output_index: index,
        content_index: 0,
        part: outputText(''),
      }),
    );
    this.message = { item, index };
    return this.message;
  }

  private addText(text: string, out: ResponseStreamEvent[]): void {
    if (text === '') return;
    const { item, index } = this.openMessage(out);
    item.content[0]!.text += text;
    out.push(
      this.event('response.output_text.delta', {
        item_id: item.id,
        output_index: index,
        content_index: 0,
        delta: text,
        logprobs: [],
      }),
    );
  }

  private closeMessage(status: ItemStatus, out: ResponseStreamEvent[]): void {
    if (!this.message) return;
    const { item, index } = this.message;
    const part = item.content[0]!;
    const at = { item_id: item.id, output_index: index, content_index: 0 };
    out.push(this.event('response.output_text.done', { ...at, text: part.text, logprobs: [] }));
    out.push(this.event('response.content_part.done', { ...at, part: structuredClone(part) }));
    item.status = status;
    out.push(this.event('response.output_item.done', { output_index: index, item: structuredClone(item) }));
    this.message = null;
  }

  private addCall(e: Extract<TurnEvent, { type: 'tool_call' }>, out: ResponseStreamEvent[]): void {
    this.closeMessage('completed', out);
    const item: FunctionCall = {
      type: 'function_call',
      id: itemId('fc'),
      call_id: e.id,
      name: e.name,
      arguments: '',
      status: 'in_progress',
    };
    const index = this.response.output.push(item) - 1;
    out.push(this.event('response.output_item.added', { output_index: index, item: structuredClone(item) }));
    const at = { item_id: item.id, output_index: index };
    out.push(this.event('response.function_call_arguments.delta', { ...at, delta: e.arguments }));
    item.arguments = e.arguments;
    item.status = 'completed';
    out.push(this.event('response.function_call_arguments.done', { ...at, name: e.name, arguments: e.arguments }));
    out.push(this.event('response.output_item.done', { output_index: index, item: structuredClone(item) }));
  }

  /** The stream events of one turn event before `done`; an `error` event is thrown as an ApiError. */
  push(e: TurnEvent): ResponseStreamEvent[] {
    const out: ResponseStreamEvent[] = [];
    switch (e.type) {
      case 'start':
      case 'done':
        break;
      case 'token':
        this.addText(e.text, out);
        break;
      case 'tool_call':
        this.addCall(e, out);
        break;
      case 'error':
        throw ApiError.from(e.error);
    }
    return out;
  }

  /** The finished response and the stream events that close it (the final one excluded: see `last`). */
  finish(done: DoneEvent): { response: ResponseObject; events: ResponseStreamEvent[] } {
    const out: ResponseStreamEvent[] = [];
    this.addText(done.tail, out);
    const incomplete = done.finishReason === 'length';
    if (this.response.output.length === 0) this.openMessage(out); // no text and no calls: an empty message
    this.closeMessage(incomplete ? 'incomplete' : 'completed', out);
    this.response.status = incomplete ? 'incomplete' : 'completed';
    this.response.incomplete_details = incomplete ? { reason: 'max_output_tokens' } : null;
    this.response.usage = responseUsage(done);
    return { response: this.snapshot(), events: out };
  }

  /** response.completed or response.incomplete, with the whole response. */
  last(response: ResponseObject): ResponseStreamEvent {
    const type = response.status === 'incomplete' ? 'response.incomplete' : 'response.completed';
    return this.event(type, { response });
  }

  /** The `error` event of a failure mid-stream. */
  error(e: ApiError): ResponseStreamEvent {
    return this.event('error', { code: e.code, message: e.message, param: e.param });
  }
}

// ---- non-streaming ----

/** Reads the whole turn into a response. An error event is thrown as an ApiError. */
export async function collectResponse(events: AsyncIterable<TurnEvent>, head: ResponseHead): Promise<ResponseObject> {
  const asm = new ResponseAssembler(head);
  for await (const e of events) {
    if (e.type === 'done') return asm.finish(e).response;
    asm.push(e);
  }
  throw turnEndedEarly();
}

// ---- streaming ----

/** `event: <type>\ndata: {json}\n\n` */
export function sseEvent(e: ResponseStreamEvent): string {
  return `event: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`;
}

export interface ResponseStreamOptions {
  /** interval of `: keep-alive` comments while the turn is quiet; 0 disables them (default 10 s) */
  keepAliveMs?: number;
  /** called with the finished response before the final event is sent (stores it) */
  onComplete?: (response: ResponseObject) => Promise<void>;
}

/**
 * The SSE body of a streamed response. It always ends: with response.completed / response.incomplete, or
 * with an `error` event (a failed turn, or the turn ending early). Cancelling it closes the turn's events.
 */
export function streamResponse(
  events: AsyncIterable<TurnEvent>,
  head: ResponseHead,
  opts: ResponseStreamOptions = {},
): ReadableStream<Uint8Array> {
  const asm = new ResponseAssembler(head);
  const frames = (events: readonly ResponseStreamEvent[]): string => events.map(sseEvent).join('');
  return writeSse(
    events,
    {
      open: () => frames(asm.open()),
      async event(e) {
        if (e.type !== 'done') return { frames: frames(asm.push(e)), last: false };
        const { response, events: closing } = asm.finish(e);
        await opts.onComplete?.(response); // stored before the client hears it is complete
        return { frames: frames([...closing, asm.last(response)]), last: true };
      },
      error: (err) => frames([asm.error(err)]),
      ended: turnEndedEarly,
      onError: (err) => console.error('response stream failed:', err),
    },
    opts.keepAliveMs ?? DEFAULT_KEEP_ALIVE_MS,
  );
}

// ---- a stored turn whose body was never saved ----

/**
 * A response rebuilt from its stored turn (the turn committed, but saving the body did not happen): output
 * and usage from the transcript and turn log; request fields the session does not keep take their defaults.
 */
export function responseFromTurn(
  head: ResponseHead,
  turn: { promptTokens: number; completionTokens: number; cachedTokens: number; finishReason: string } | null,
  output: ChatMessage[],
): ResponseObject {
  const response = responseShell(head);
  const incomplete = turn?.finishReason === 'length';
  for (const m of output) {
    if (m.content !== '' || !m.tool_calls?.length) {
      const status = incomplete ? 'incomplete' : 'completed';
      response.output.push({
        type: 'message',
        id: itemId('msg'),
        status,
        role: 'assistant',
        content: [outputText(m.content)],
      });
    }
    for (const c of m.tool_calls ?? [])
      response.output.push({
        type: 'function_call',
        id: itemId('fc'),
        call_id: `call_${randomHex(12)}`,
        name: c.name,
        arguments: typeof c.arguments === 'string' ? c.arguments : JSON.stringify(c.arguments),
        status: 'completed',
      });
  }
  response.status = incomplete ? 'incomplete' : 'completed';
  response.incomplete_details = incomplete ? { reason: 'max_output_tokens' } : null;
  if (turn) response.usage = responseUsage(turn);
  return response;
}
