// The canonical internal request and the events a turn produces. Every API (Chat Completions, Completions,
// the session API) is parsed into a TurnRequest; the SessionDO yields TurnEvents; one module per wire
// format shapes them. Neither side sees the other's representation.

import type { ServeErrorInfo } from './errors.js';

import type { ChatMessage } from '../text/chat-template.js';

export type TurnPrompt =
  /** rendered with the model's chat template (tools from TurnRequest.tools), generation prompt appended */
  | { kind: 'chat'; messages: ChatMessage[] }
  /** raw text, tokenized with BOS as the tokenizer config says */
  | { kind: 'text'; text: string }
  /** token ids as given */
  | { kind: 'ids'; ids: number[] };

/** A function the model may call (OpenAI's `tool.function`); `parameters` is a JSON Schema already validated. */
export interface ToolSpec {
  name: string;
  description?: string;
  parameters?: Record<string, unknown>;
}

/** auto: the model decides; none: tools are not offered; required: at least one call; {name}: that function. */
export type ToolChoice = 'auto' | 'none' | 'required' | { name: string };

/** What the output must be: free text, any JSON object, or JSON matching a schema (decoding is constrained). */
export type OutputFormat =
  { kind: 'text' } | { kind: 'json_object' } | { kind: 'json_schema'; schema: Record<string, unknown> };

export interface TurnRequest {
  prompt: TurnPrompt;
  maxTokens: number;
  temperature: number;
  topP?: number;
  topK?: number;
  seed?: number;
  stop: string[];
  /** undefined: no log-probs; 0: the chosen token's; k: also the top k alternatives */
  logprobs?: number;
  /** completions: also return the prompt tokens' log-probs */
  echo?: boolean;
  /** return prompt and completion token ids (vLLM's return_token_ids) */
  returnTokenIds?: boolean;
  /** functions shown to the model through the chat template (chat prompts only) */
  tools?: ToolSpec[];
  /** default 'auto' when tools are given */
  toolChoice?: ToolChoice;
  /** default true: the model may call several tools in one turn */
  parallelToolCalls?: boolean;
  /** default text */
  responseFormat?: OutputFormat;
  /** the server's limit on prompt tokens (MAX_PROMPT_TOKENS), below the model's context */
  maxPromptTokens?: number;
}

export interface TokenLogprob {
  id: number;
  text: string;
  logprob: number;
  top?: { id: number; text: string; logprob: number }[];
}

export type FinishReason = 'stop' | 'length' | 'tool_calls';

export type TurnEvent =
  /** prompt processed: sent before the first token */
  | {
      type: 'start';
      promptTokens: number;
      cachedTokens: number;
      promptIds?: number[];
      promptLogprobs?: (TokenLogprob | null)[];
    }
  /**
   * one generated token; `text` is the message content safe to emit now: '' while a stop string is possible,
   * and '' for the text of tool calls (those arrive as `tool_call` events)
   */
  | { type: 'token'; id: number; text: string; logprob?: TokenLogprob }
  /** a complete tool call parsed from the output; `arguments` is JSON text of an object */
  | { type: 'tool_call'; index: number; id: string; name: string; arguments: string }
  | {
      type: 'done';
      finishReason: FinishReason;
      promptTokens: number;
      completionTokens: number;
      cachedTokens: number;
      tail: string;
      /** bytes of the model state stored for this turn (0 or absent when nothing was stored) */
      snapshotBytes?: number;
    }
  | { type: 'error'; error: ServeErrorInfo };
