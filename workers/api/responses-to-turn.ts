// A validated POST /v1/responses body -> the canonical TurnRequest (engine/serve/protocol.ts). The prompt
// carries only this request's input items as chat messages; the route decides what history goes before them
// (a session's stored transcript, or for `store: false` the chain's messages sent along).

import type { ChatMessage } from '../../engine/text/chat-template.js';
import type { OutputFormat, TurnRequest } from '../../engine/serve/protocol.js';
import type { ResponseContent, ResponseCreateRequest, ResponseInputItem } from './responses-schemas.js';
import { DEFAULT_TEMPERATURE, toolSpec } from './to-turn.js';

/** Text parts joined by newlines, as Chat Completions does. */
export function contentText(content: ResponseContent): string {
  return typeof content === 'string' ? content : content.map((p) => p.text).join('\n');
}

/**
 * Input items -> chat messages. Messages keep their role (developer -> system); a `function_call` becomes an
 * assistant message with that tool call, merged into the assistant message just before it (one turn's calls
 * render together); a `function_call_output` becomes a `tool` message.
 */
export function inputMessages(input: ResponseCreateRequest['input']): ChatMessage[] {
  if (typeof input === 'string') return [{ role: 'user', content: input }];
  const out: ChatMessage[] = [];
  for (const item of input) {
    const m = itemMessage(item);
    const last = out[out.length - 1];
    if (item.type === 'function_call' && last?.role === 'assistant') {
      last.tool_calls = [...(last.tool_calls ?? []), ...m.tool_calls!];
      continue;
    }
    out.push(m);
  }
  return out;
}

function itemMessage(item: ResponseInputItem): ChatMessage {
  switch (item.type) {
    case 'function_call':
      return { role: 'assistant', content: '', tool_calls: [{ name: item.name, arguments: item.arguments }] };
    case 'function_call_output':
      return { role: 'tool', content: contentText(item.output) };
    default:
      return { role: item.role === 'developer' ? 'system' : item.role, content: contentText(item.content) };
  }
}

/** text.format as the turn's OutputFormat (undefined for plain text). */
export function textFormat(format: NonNullable<ResponseCreateRequest['text']>['format']): OutputFormat | undefined {
  if (format == null || format.type === 'text') return undefined;
  if (format.type === 'json_object') return { kind: 'json_object' };
  return { kind: 'json_schema', schema: format.schema };
}

/** The turn for this request's input (new messages only) with its sampling, tools and output format. */
export function responseToTurn(body: ResponseCreateRequest, defaultMaxTokens: number): TurnRequest {
  const turn: TurnRequest = {
    prompt: { kind: 'chat', messages: inputMessages(body.input) },
    maxTokens: body.max_output_tokens ?? defaultMaxTokens,
    temperature: body.temperature ?? DEFAULT_TEMPERATURE,
    stop: [],
  };
  if (body.top_p != null && body.top_p < 1) turn.topP = body.top_p;
  if (body.seed != null) turn.seed = body.seed;
  if (body.tools != null && body.tools.length > 0) {
    turn.tools = body.tools.map(toolSpec);
    const choice = body.tool_choice;
    if (choice != null) turn.toolChoice = typeof choice === 'string' ? choice : { name: choice.name };
    if (body.parallel_tool_calls != null) turn.parallelToolCalls = body.parallel_tool_calls;
  }
  const format = textFormat(body.text?.format);
  if (format) turn.responseFormat = format;
  return turn;
}

/** The turn with `history` before its prompt's messages (a `store: false` continuation sends the chain). */
export function withHistory(turn: TurnRequest, history: ChatMessage[]): TurnRequest {
  if (turn.prompt.kind !== 'chat') return turn;
  return { ...turn, prompt: { kind: 'chat', messages: [...history, ...turn.prompt.messages] } };
}
