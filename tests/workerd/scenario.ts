// The conversations the API tests run, shared by the Node side (global-setup.ts computes what the engine
// gives for them in one from-scratch pass) and the workerd side (the tests send them through the API).
// Plain data only: this module is imported in Node and in workerd.

export const SYSTEM = 'You are a terse assistant.';

/** The user messages of the three-turn conversation. */
export const USER_TURNS = ['Hello! Who are you?', 'What is two plus two?', 'Thanks. Now say goodbye.'] as const;

/** max_tokens of every scenario turn: small, to keep the suite fast. */
export const MAX_TOKENS = 6;

/** A user message sent as turn 2 and cancelled mid-stream; its greedy reply must be long. */
export const DETOUR = 'Tell me a long story about the sea, please.';
/** The cancelled turn asks for this many tokens; the setup checks greedy generation does not stop sooner. */
export const DETOUR_MAX_TOKENS = 128;

/** The text whose token ids (BOS included) are the /v1/completions prompt. */
export const COMPLETION_PROMPT = 'The capital of France is';

/** One turn as the engine computes it from scratch over the whole conversation so far. */
export interface ExpectedTurn {
  /** the rendered conversation with the generation prompt, tokenized (meta tokens excluded) */
  promptIds: number[];
  /** greedy completion ids (stop token excluded) */
  tokenIds: number[];
  /** their text, as the server streams it (special tokens skipped) */
  text: string;
  finishReason: 'stop' | 'length';
  /**
   * tokens of the conversation before this turn's user message, rendered without a generation prompt
   * (system block + earlier user and assistant messages): what a resumed turn must report as cached
   */
  previousConversationTokens: number;
  /** tokens of the conversation up to and including this turn's reply (no generation prompt) */
  conversationTokens: number;
}

/** A greedy generation from a fresh state over `promptIds`. */
export interface ExpectedGeneration {
  promptIds: number[];
  tokenIds: number[];
  text: string;
  finishReason: 'stop' | 'length';
}

export interface ApiExpectations {
  /** the three-turn conversation (SYSTEM, USER_TURNS), turn by turn */
  conversation: ExpectedTurn[];
  /** /v1/completions with the token ids of COMPLETION_PROMPT */
  completion: ExpectedGeneration;
  /** [SYSTEM, USER_TURNS[0], reply 1, DETOUR] with DETOUR_MAX_TOKENS */
  detour: ExpectedGeneration;
  /** the model's context for prompt + completion (max_position_embeddings - meta tokens) */
  contextTokens: number;
}
