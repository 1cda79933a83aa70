// Validated request bodies -> the one canonical TurnRequest (engine/serve/protocol.ts). The Durable Object
// never sees OpenAI JSON.
//
// Defaults: temperature 1 and top_p 1 (OpenAI's); max tokens: the caller's `defaultMaxTokens` (the route passes
// its configured default; OpenAI's legacy completions default is 16). Clamping to the server's limits is the
// route's job.

import type { ChatMessage, ChatToolCall } from '../../engine/text/chat-template.js';
import type { OutputFormat, ToolSpec, TurnPrompt, TurnRequest } from '../../engine/serve/protocol.js';
import type {
  ChatCompletionRequest,
  ChatMessageInput,
  CompletionPrompt,
  CompletionRequest,
  MessageContent,
  SessionMessageRequest,
} from './schemas.js';

export const DEFAULT_TEMPERATURE = 1;

/** Joins text parts like vLLM does (one newline between parts); a string stays as it is. */
export function flattenContent(content: MessageContent | null | undefined): string {
  if (content == null) return '';
  if (typeof content === 'string') return content;
  return content.map((part) => part.text).join('\n');
}

/** OpenAI messages -> chat-template messages: developer -> system, parts flattened, tool calls kept. */
export function toChatMessages(messages: readonly ChatMessageInput[]): ChatMessage[] {
  return messages.map(function toChatMessage(m): ChatMessage {
    switch (m.role) {
      case 'developer':
        return { role: 'system', content: flattenContent(m.content) };
      case 'assistant': {
        const out: ChatMessage = { role: 'assistant', content: flattenContent(m.content) };
        if (m.tool_calls != null && m.tool_calls.length > 0) {
          // arguments stay JSON text; the template renderer parses them. (The call id has no place in ChatMessage.)
          out.tool_calls = m.tool_calls.map((c): ChatToolCall => ({
            name: c.function.name,
            arguments: c.function.arguments,
          }));
        }
        return out;
      }
      default:
        // system, user, tool (tool_call_id has no place in ChatMessage)
        return { role: m.role, content: flattenContent(m.content) };
    }
  });
}

/** `stop` as a list without empty strings (an empty stop string would end every turn at once). */
export function stopList(stop: string | readonly string[] | null | undefined): string[] {
  if (stop == null) return [];
  return (typeof stop === 'string' ? [stop] : [...stop]).filter((s) => s !== '');
}

interface SamplingFields {
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
}

function sampling(body: SamplingFields): Pick<TurnRequest, 'temperature' | 'topP' | 'topK' | 'seed' | 'stop'> {
  const out: Pick<TurnRequest, 'temperature' | 'topP' | 'topK' | 'seed' | 'stop'> = {
    temperature: body.temperature ?? DEFAULT_TEMPERATURE,
    stop: stopList(body.stop),
  };
  if (body.top_p != null && body.top_p < 1) out.topP = body.top_p;
  if (body.top_k != null && body.top_k > 0) out.topK = body.top_k;
  if (body.seed != null) out.seed = body.seed;
  return out;
}

type ChatTool = NonNullable<ChatCompletionRequest['tools']>[number];

/** An OpenAI function tool as the turn's ToolSpec (null fields dropped). */
export function toolSpec(fn: ChatTool['function']): ToolSpec {
  const spec: ToolSpec = { name: fn.name };
  if (fn.description != null) spec.description = fn.description;
  if (fn.parameters != null) spec.parameters = fn.parameters;
  return spec;
}

/** response_format as the turn's OutputFormat; a json_schema without a schema is any JSON object. */
export function outputFormat(rf: ChatCompletionRequest['response_format']): OutputFormat | undefined {
  if (rf == null || rf.type === 'text') return undefined;
  if (rf.type === 'json_object' || rf.json_schema.schema == null) return { kind: 'json_object' };
  return { kind: 'json_schema', schema: rf.json_schema.schema };
}

/** POST /v1/chat/completions */
export function chatToTurn(body: ChatCompletionRequest, defaultMaxTokens: number): TurnRequest {
  const turn: TurnRequest = {
    prompt: { kind: 'chat', messages: toChatMessages(body.messages) },
    maxTokens: body.max_completion_tokens ?? body.max_tokens ?? defaultMaxTokens,
    ...sampling(body),
  };
  if (body.logprobs === true) turn.logprobs = body.top_logprobs ?? 0;
  if (body.return_token_ids === true) turn.returnTokenIds = true;
  if (body.tools != null && body.tools.length > 0) {
    turn.tools = body.tools.map((t) => toolSpec(t.function));
    const choice = body.tool_choice;
    if (choice != null) turn.toolChoice = typeof choice === 'string' ? choice : { name: choice.function.name };
    if (body.parallel_tool_calls != null) turn.parallelToolCalls = body.parallel_tool_calls;
  }
  const format = outputFormat(body.response_format);
  if (format) turn.responseFormat = format;
  return turn;
}

/** The completions prompt (a batch of one is unwrapped; the schema rejects larger batches). */
export function completionPrompt(prompt: CompletionPrompt): TurnPrompt {
  if (typeof prompt === 'string') return { kind: 'text', text: prompt };
  if (isTokenIds(prompt)) return { kind: 'ids', ids: prompt };
  const first = prompt[0];
  if (typeof first === 'string') return { kind: 'text', text: first };
  return { kind: 'ids', ids: first ?? [] };
}

function isTokenIds(prompt: CompletionPrompt): prompt is number[] {
  return Array.isArray(prompt) && prompt.every((x) => typeof x === 'number');
}

/** POST /v1/completions */
export function completionToTurn(body: CompletionRequest, defaultMaxTokens: number): TurnRequest {
  const turn: TurnRequest = {
    prompt: completionPrompt(body.prompt),
    maxTokens: body.max_tokens ?? defaultMaxTokens,
    ...sampling(body),
  };
  if (body.logprobs != null) turn.logprobs = body.logprobs;
  if (body.echo === true) turn.echo = true;
  if (body.return_token_ids === true) turn.returnTokenIds = true;
  return turn;
}

/**
 * POST /v1/sessions/:id/messages: the new user message only; the session's Durable Object prepends its stored
 * transcript (and resumes from the snapshot that ends where this message begins).
 */
export function sessionMessageToTurn(body: SessionMessageRequest, defaultMaxTokens: number): TurnRequest {
  const turn: TurnRequest = {
    prompt: { kind: 'chat', messages: [{ role: 'user', content: flattenContent(body.content) }] },
    maxTokens: body.max_tokens ?? defaultMaxTokens,
    ...sampling(body),
  };
  if (body.return_token_ids === true) turn.returnTokenIds = true;
  return turn;
}

/** The text a completions `echo` repeats, when the prompt was text (token-id prompts: see the format module). */
export function promptText(prompt: CompletionPrompt): string | undefined {
  const p = completionPrompt(prompt);
  return p.kind === 'text' ? p.text : undefined;
}
