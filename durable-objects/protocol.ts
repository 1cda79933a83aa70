// The canonical internal request and the events a turn produces. Every API (Chat Completions, Completions,
// the session API) is parsed into a TurnRequest; the SessionDO yields TurnEvents; one module per wire
// format shapes them. Neither side sees the other's representation.

import type { ChatMessage } from '../engine/chat-template.js';

export type TurnPrompt =
  /** rendered with the model's chat template, generation prompt appended */
  | { kind: 'chat'; messages: ChatMessage[]; tools?: object[] }
  /** raw text, tokenized with BOS as the tokenizer config says */
  | { kind: 'text'; text: string }
  /** token ids as given */
  | { kind: 'ids'; ids: number[] };

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
}

export interface TokenLogprob {
  id: number;
  text: string;
  logprob: number;
  top?: { id: number; text: string; logprob: number }[];
}

export type FinishReason = 'stop' | 'length';

export interface ApiErrorBody {
  status: number;
  type: string;
  message: string;
  code: string | null;
  param: string | null;
}

export type TurnEvent =
  /** prompt processed: sent before the first token */
  | {
      type: 'start';
      promptTokens: number;
      cachedTokens: number;
      promptIds?: number[];
      promptLogprobs?: (TokenLogprob | null)[];
    }
  /** one generated token; `text` is what is safe to emit now (may be '' while a stop string is possible) */
  | { type: 'token'; id: number; text: string; logprob?: TokenLogprob }
  | {
      type: 'done';
      finishReason: FinishReason;
      promptTokens: number;
      completionTokens: number;
      cachedTokens: number;
      tail: string;
    }
  | { type: 'error'; error: ApiErrorBody };
