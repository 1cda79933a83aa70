// Where a turn runs. An Engine takes one user turn and yields the reply as it is produced; the page renders
// the same events whichever engine made them. Today there is the server (the HTTP API); an in-browser engine
// (onnxruntime-web with WebGPU or WASM, restoring a session snapshot downloaded from the server) is added to
// `ENGINES` and enabled in the "Engine" select of index.html.

import type { Api, ChatChunk, ChatMessage, ToolCall, Usage } from './api.js';

export interface TurnInput {
  sessionId: string;
  model: string;
  content: string;
  /** the conversation before this turn (only the tools path sends it: the session API keeps it server-side) */
  history: ChatMessage[];
  /** OpenAI function tool definitions; null: no tools */
  tools: unknown[] | null;
  toolChoice: string;
  maxTokens: number;
  temperature: number;
}

export type TurnEvent =
  | { type: 'text'; text: string }
  | { type: 'tool_calls'; calls: ToolCall[] }
  | { type: 'usage'; usage: Usage }
  | { type: 'finish'; reason: string };

export interface Engine {
  readonly id: string;
  /** true when the turn is stored in the server session (so GET /v1/sessions/:id shows it) */
  storesTurn(input: TurnInput): boolean;
  turn(input: TurnInput, signal: AbortSignal): AsyncGenerator<TurnEvent>;
}

/**
 * The server: without tools, POST /v1/sessions/:id/messages (the session keeps transcript and state); with
 * tools, POST /v1/chat/completions with the whole conversation and `prompt_cache_key` = the session id, so
 * the server still resumes from stored state (turns with tools are kept by the page, not the session).
 */
export function serverEngine(api: Api): Engine {
  return {
    id: 'server',
    storesTurn: (input) => input.tools === null,
    async *turn(input, signal) {
      const sampling = { max_tokens: input.maxTokens, temperature: input.temperature };
      const stream_options = { include_usage: true };
      const chunks =
        input.tools === null
          ? api.stream(
              `/v1/sessions/${encodeURIComponent(input.sessionId)}/messages`,
              { content: input.content, stream: true, stream_options, ...sampling },
              signal,
            )
          : api.stream(
              '/v1/chat/completions',
              {
                model: input.model,
                messages: [...input.history, { role: 'user', content: input.content }],
                tools: input.tools,
                tool_choice: input.toolChoice,
                prompt_cache_key: input.sessionId,
                stream: true,
                stream_options,
                ...sampling,
              },
              signal,
            );
      yield* chunkEvents(chunks);
    },
  };
}

/** chat.completion.chunk objects -> TurnEvents (tool-call deltas accumulated by index, sent whole at the end) */
async function* chunkEvents(chunks: AsyncIterable<ChatChunk>): AsyncGenerator<TurnEvent> {
  const calls: ToolCall[] = [];
  for await (const chunk of chunks) {
    if (chunk.usage) yield { type: 'usage', usage: chunk.usage };
    for (const choice of chunk.choices) {
      if (choice.delta.content) yield { type: 'text', text: choice.delta.content };
      for (const d of choice.delta.tool_calls ?? []) {
        const call = (calls[d.index] ??= { id: '', type: 'function', function: { name: '', arguments: '' } });
        if (d.id) call.id = d.id;
        call.function.name += d.function?.name ?? '';
        call.function.arguments += d.function?.arguments ?? '';
      }
      if (choice.finish_reason) {
        if (calls.length > 0) yield { type: 'tool_calls', calls };
        yield { type: 'finish', reason: choice.finish_reason };
      }
    }
  }
}
