// Before a turn runs: the prompt rendered with the chat template and tokenized, checked against the vocabulary,
// the server's prompt limit and the context; and what the output must be (free text, JSON, tool calls). Every
// problem here is the client's, thrown as the ServeError it should get. Also the /tokenize and /detokenize
// helpers, which tokenize exactly as a turn does.

import { renderChat, templateEmitsBos, HYMBA_INSTRUCT_CHAT_TEMPLATE, type ChatMessage } from '../text/chat-template.js';
import type { ModelFront } from '../run/loaded-model.js';
import type { HymbaTokenizer } from '../text/tokenizer.js';
import { alt, type Grammar } from '../constrain/grammar.js';
import { anyJsonObjectGrammar, jsonSchemaGrammar, SchemaError } from '../constrain/json-schema.js';
import { HYMBA_TOOL_CALL_FORMAT, toolCallGrammar, type ToolCallFormat } from '../text/tool-calls.js';
import { errors, ServeError } from './errors.js';
import type { OutputFormat, ToolSpec, TurnPrompt, TurnRequest } from './protocol.js';

/** Text as ids, with BOS unless the text already starts with it (a template that emits it). */
function encodeText(tok: HymbaTokenizer, text: string): number[] {
  return tok.encode(text, { addBos: tok.addBosToken && !templateEmitsBos(text, tok.bosToken) });
}

/**
 * Messages rendered with the model's chat template (or the Hymba Instruct default), as ids. Without a
 * generation prompt and with the turn's tools this is the canonical state's token list after a turn
 * (renderedWithReply in commit.ts); session handoff uploads are checked against it.
 */
export function encodeConversation(
  tok: HymbaTokenizer,
  messages: ChatMessage[],
  tools: readonly ToolSpec[],
  addGenerationPrompt: boolean,
): number[] {
  const text = renderChat(tok.chatTemplate ?? HYMBA_INSTRUCT_CHAT_TEMPLATE, messages, {
    addGenerationPrompt,
    bosToken: tok.bosToken,
    eosToken: tok.eosToken,
    // the function objects ({name, description, parameters}), as the template's `<tool> {json} </tool>` lines
    ...(tools.length > 0 ? { tools: tools.map((t) => ({ ...t })) } : {}),
  });
  return encodeText(tok, text);
}

/** encodeConversation, a template error (a message the template rejects) as the client's. */
function encodeMessages(
  tok: HymbaTokenizer,
  messages: ChatMessage[],
  tools: readonly ToolSpec[],
  addGenerationPrompt: boolean,
): number[] {
  try {
    return encodeConversation(tok, messages, tools, addGenerationPrompt);
  } catch (e) {
    throw errors.invalid(e instanceof Error ? e.message : String(e), 'messages');
  }
}

/** Throws unless every id is in the vocabulary [0, V). */
function checkVocabulary(ids: number[], V: number, param: string): void {
  const bad = ids.find((id) => !Number.isInteger(id) || id < 0 || id >= V);
  if (bad !== undefined) throw errors.invalid(`token id ${bad} is outside the vocabulary [0, ${V})`, param);
}

/** The tools the prompt offers: none with tool_choice "none". */
export function offeredTools(req: Pick<TurnRequest, 'tools' | 'toolChoice'>): ToolSpec[] {
  return req.toolChoice === 'none' ? [] : (req.tools ?? []);
}

/** The prompt as token ids, meta tokens excluded. */
export function promptIds(engine: ModelFront, prompt: TurnPrompt, tools: readonly ToolSpec[] = []): number[] {
  if (prompt.kind === 'ids') {
    if (prompt.ids.length === 0) throw errors.invalid('the prompt is empty', 'prompt');
    checkVocabulary(prompt.ids, engine.model.dims.V, 'prompt');
    return prompt.ids;
  }
  const tok = engine.tokenizer;
  if (!tok) throw errors.invalid('this model has no tokenizer: send the prompt as token ids', 'prompt');
  const ids = prompt.kind === 'text' ? encodeText(tok, prompt.text) : encodeMessages(tok, prompt.messages, tools, true);
  if (ids.length === 0) throw errors.invalid('the prompt is empty', 'prompt');
  return ids;
}

/** What /tokenize asks for: text (BOS as the tokenizer adds it, unless addSpecial is false) or a chat. */
export type TokenizeInput =
  | { kind: 'text'; text: string; addSpecial: boolean }
  | { kind: 'chat'; messages: ChatMessage[]; addGenerationPrompt: boolean };

/** The ids a prompt becomes, exactly as a turn would tokenize it. */
export function tokenizeInput(engine: ModelFront, input: TokenizeInput): number[] {
  const tok = engine.tokenizer;
  if (!tok) throw errors.invalid('this model has no tokenizer', 'prompt');
  if (input.kind === 'text')
    return input.addSpecial ? encodeText(tok, input.text) : tok.encode(input.text, { addBos: false });
  return encodeMessages(tok, input.messages, [], input.addGenerationPrompt);
}

/** Text of token ids (special tokens included, as vLLM's /detokenize). */
export function detokenizeIds(engine: ModelFront, ids: number[]): string {
  const tok = engine.tokenizer;
  if (!tok) throw errors.invalid('this model has no tokenizer', 'tokens');
  checkVocabulary(ids, engine.model.dims.V, 'tokens');
  return tok.decode(ids);
}

export interface PreparedTurn {
  ids: number[];
  /** positions left in the context after the prompt */
  room: number;
}

/** Tokenize and check the prompt; throws the ServeError the client should get. */
export function prepareTurn(engine: ModelFront, req: TurnRequest): PreparedTurn {
  const { dims } = engine.model;
  const ids = promptIds(engine, req.prompt, offeredTools(req));
  const param = req.prompt.kind === 'chat' ? 'messages' : 'prompt';
  if (req.maxPromptTokens !== undefined && ids.length > req.maxPromptTokens)
    throw new ServeError({
      kind: 'too_long',
      code: 'prompt_too_long',
      param,
      message: `The prompt is ${ids.length} tokens; this server accepts at most ${req.maxPromptTokens}.`,
    });
  const room = dims.maxPositions - dims.M - ids.length;
  if (room < 1) throw errors.contextLengthExceeded(ids.length, dims.maxPositions - dims.M, param);
  return { ids, room };
}

/** The model's tool-call format: the manifest's, else Hymba's. */
export function toolCallFormat(engine: ModelFront): ToolCallFormat {
  return engine.manifest.generation.toolCall ?? HYMBA_TOOL_CALL_FORMAT;
}

/** `build()`, a JSON Schema it rejects as the client's error about `param`. */
function withSchema<T>(param: string, build: () => T): T {
  try {
    return build();
  } catch (e) {
    if (e instanceof SchemaError)
      throw errors.invalid(`invalid JSON schema${e.path ? ` at ${e.path}` : ''}: ${e.message}`, param);
    throw e;
  }
}

/** The grammar of response_format, or null for free text. */
function formatGrammar(rf: OutputFormat | undefined): Grammar | null {
  if (rf?.kind === 'json_object') return anyJsonObjectGrammar();
  if (rf?.kind === 'json_schema') return jsonSchemaGrammar(rf.schema);
  return null;
}

/**
 * The grammar the output must follow, or null for free text: forced tool calls (tool_choice "required" or a
 * named function), JSON (response_format), or, with tools on "auto", free text in which a call block, once
 * opened, must be a valid call.
 */
export function outputGrammar(engine: ModelFront, req: TurnRequest): Grammar | null {
  const tools = offeredTools(req);
  const format = toolCallFormat(engine);
  const choice = req.toolChoice ?? 'auto';
  const parallel = req.parallelToolCalls !== false;
  const json = withSchema('response_format', () => formatGrammar(req.responseFormat));
  return withSchema('tools', () => {
    if (tools.length === 0) return json;
    if (choice === 'required') return toolCallGrammar(tools, { parallel, lazy: false, format });
    if (typeof choice === 'object')
      return toolCallGrammar(
        tools.filter((t) => t.name === choice.name),
        { parallel: false, lazy: false, format },
      );
    if (json) return alt(json, toolCallGrammar(tools, { parallel, lazy: false, format }));
    return toolCallGrammar(tools, { parallel, lazy: true, format });
  });
}
