// Request bodies of the OpenAI-compatible endpoints and the session API, as zod schemas (README.md, "HTTP API").
//
// - Unknown fields are ignored (zod strips them).
// - Optional fields also accept `null`, as the OpenAI API does (many clients send `"stop": null`).
// - Wrong types and values are 400s whose `param` is the field path; see validation.ts for the messages.
// - Tool parameter schemas and response_format JSON schemas are compiled here (the grammar that constrains
//   decoding), so an invalid or unsupported schema is a 400 naming the keyword's path, not a failed turn.

import { z } from 'zod';
import { jsonSchemaGrammar, SchemaError } from '../../engine/constrain/json-schema.js';
import { preview } from './validation.js';

export { parseBody, parseValue, type ParseBodyOptions } from './validation.js';

// ---- shared pieces ----

const ROLES = ['system', 'developer', 'user', 'assistant', 'tool'] as const;

export const TextPartSchema = z.object({
  type: z.literal('text', {
    error: (iss) =>
      iss.input === undefined
        ? 'a content part needs "type": "text"'
        : `only text content parts are supported, got type ${preview(iss.input)}`,
  }),
  text: z.string(),
});

/** A message's content: a string or an array of `{type: "text", text}` parts. */
export const ContentSchema = z.union([z.string(), z.array(TextPartSchema)], {
  error: 'expected a string or an array of {"type": "text", "text": ...} parts',
});

const StopSchema = z.union(
  [z.string(), z.array(z.string()).max(4, { error: 'at most 4 stop sequences are allowed' })],
  {
    error: 'expected a string or an array of up to 4 strings',
  },
);

const NSchema = z
  .number()
  .int()
  .refine((n) => n === 1, { error: 'only n = 1 is supported (one choice per request); send n requests instead' });

const TemperatureSchema = z.number().min(0).max(2);
const TopPSchema = z.number().gt(0).max(1);
/** vLLM's extension: <= 0 disables */
const TopKSchema = z.number().int().min(-1);
const SeedSchema = z.number().int();
const StreamOptionsSchema = z.object({ include_usage: z.boolean().nullish() });
const JsonObjectSchema = z.record(z.string(), z.unknown());

// ---- chat messages ----

export const ToolCallSchema = z.object({
  id: z.string(),
  type: z.literal('function'),
  function: z.object({ name: z.string(), arguments: z.string() }),
});

const SystemMessageSchema = z.object({ role: z.literal('system'), content: ContentSchema, name: z.string().nullish() });
const DeveloperMessageSchema = z.object({
  role: z.literal('developer'),
  content: ContentSchema,
  name: z.string().nullish(),
});
const UserMessageSchema = z.object({ role: z.literal('user'), content: ContentSchema, name: z.string().nullish() });
const AssistantMessageSchema = z
  .object({
    role: z.literal('assistant'),
    content: ContentSchema.nullish(),
    tool_calls: z.array(ToolCallSchema).nullish(),
    name: z.string().nullish(),
  })
  .refine((m) => m.content != null || (m.tool_calls != null && m.tool_calls.length > 0), {
    error: 'an assistant message needs "content" or "tool_calls"',
    path: ['content'],
  });
const ToolMessageSchema = z.object({ role: z.literal('tool'), content: ContentSchema, tool_call_id: z.string() });

export const MessageSchema = z.discriminatedUnion(
  'role',
  [SystemMessageSchema, DeveloperMessageSchema, UserMessageSchema, AssistantMessageSchema, ToolMessageSchema],
  {
    error: (iss) => {
      if (iss.code !== 'invalid_union') return undefined;
      const role: unknown = isRecord(iss.input) ? iss.input.role : undefined;
      const expected = `expected one of ${ROLES.map((r) => `"${r}"`).join(', ')}`;
      return role === undefined
        ? `a message needs a "role"; ${expected}`
        : `unknown role ${preview(role)}; ${expected}`;
    },
  },
);

// ---- tools and output format ----

/** OpenAI's rule for function names. */
export const FunctionNameSchema = z
  .string()
  .regex(/^[a-zA-Z0-9_-]{1,64}$/, { error: 'must be 1-64 letters, digits, underscores or dashes' });

/** A JSON schema the grammar compiler cannot use, as a zod issue at `path` + the keyword's own path. */
export function checkJsonSchema(schema: unknown, ctx: z.RefinementCtx, path: PropertyKey[]): void {
  try {
    jsonSchemaGrammar(schema);
  } catch (e) {
    if (!(e instanceof SchemaError)) throw e;
    const sub = e.path === '' ? [] : e.path.split('.');
    ctx.addIssue({ code: 'custom', path: [...path, ...sub], message: `invalid JSON schema: ${e.message}` });
  }
}

/** Tool names are unique and each parameters schema compiles; `pathOf(i)` is where tool i's schema sits. */
export function checkToolSchemas(
  tools: readonly { name: string; parameters?: unknown }[],
  ctx: z.RefinementCtx,
  pathOf: (i: number) => PropertyKey[],
): void {
  const seen = new Set<string>();
  tools.forEach((t, i) => {
    if (seen.has(t.name)) {
      ctx.addIssue({
        code: 'custom',
        path: [...pathOf(i).slice(0, -1), 'name'],
        message: `duplicate tool name ${preview(t.name)}`,
      });
    }
    seen.add(t.name);
    if (t.parameters != null) checkJsonSchema(t.parameters, ctx, pathOf(i));
  });
}

/** A response_format / text.format JSON schema compiles. */
export const checkOutputSchema = checkJsonSchema;

export const ToolSchema = z.object({
  type: z.literal('function'),
  function: z.object({
    name: FunctionNameSchema,
    description: z.string().nullish(),
    parameters: JsonObjectSchema.nullish(),
    strict: z.boolean().nullish(),
  }),
});

const NamedToolChoiceSchema = z.object({ type: z.literal('function'), function: z.object({ name: z.string() }) });

export const ToolChoiceSchema = z.union([z.enum(['auto', 'none', 'required']), NamedToolChoiceSchema], {
  error: 'expected "auto", "none", "required" or {"type": "function", "function": {"name": ...}}',
});

export const ResponseFormatSchema = z.discriminatedUnion(
  'type',
  [
    z.object({ type: z.literal('text') }),
    z.object({ type: z.literal('json_object') }),
    z.object({
      type: z.literal('json_schema'),
      json_schema: z.object({
        name: z.string(),
        description: z.string().nullish(),
        schema: JsonObjectSchema.nullish(),
        strict: z.boolean().nullish(),
      }),
    }),
  ],
  { error: 'expected {"type": "text"}, {"type": "json_object"} or {"type": "json_schema", "json_schema": {...}}' },
);

// ---- POST /v1/chat/completions ----

/** Sampling fields shared by Chat Completions and Completions. */
const SAMPLING_FIELDS = {
  temperature: TemperatureSchema.nullish(),
  top_p: TopPSchema.nullish(),
  top_k: TopKSchema.nullish(),
  seed: SeedSchema.nullish(),
  stop: StopSchema.nullish(),
  n: NSchema.nullish(),
};

export const ChatCompletionRequestSchema = z
  .object({
    model: z.string().nullish(),
    messages: z.array(MessageSchema).min(1, { error: 'must contain at least one message' }),
    stream: z.boolean().nullish(),
    stream_options: StreamOptionsSchema.nullish(),
    max_completion_tokens: z.number().int().min(1).nullish(),
    max_tokens: z.number().int().min(1).nullish(),
    ...SAMPLING_FIELDS,
    logprobs: z.boolean().nullish(),
    top_logprobs: z.number().int().min(0).max(20).nullish(),
    tools: z.array(ToolSchema).nullish(),
    tool_choice: ToolChoiceSchema.nullish(),
    parallel_tool_calls: z.boolean().nullish(),
    response_format: ResponseFormatSchema.nullish(),
    prompt_cache_key: z.string().nullish(),
    user: z.string().nullish(),
    /** vLLM's extension: `prompt_token_ids` and `choices[].token_ids` in the response */
    return_token_ids: z.boolean().nullish(),
  })
  .superRefine(function checkChatRequest(body, ctx) {
    if ((body.top_logprobs ?? 0) > 0 && body.logprobs !== true) {
      ctx.addIssue({ code: 'custom', path: ['top_logprobs'], message: 'requires "logprobs": true' });
    }
    const choice = body.tool_choice;
    const tools = body.tools ?? [];
    if (choice != null && choice !== 'auto' && choice !== 'none' && tools.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['tool_choice'], message: 'requires "tools"' });
    }
    if (typeof choice === 'object' && choice !== null && !tools.some((t) => t.function.name === choice.function.name)) {
      ctx.addIssue({
        code: 'custom',
        path: ['tool_choice', 'function', 'name'],
        message: `no tool named ${preview(choice.function.name)} in "tools"`,
      });
    }
    checkToolSchemas(
      tools.map((t) => ({ name: t.function.name, parameters: t.function.parameters })),
      ctx,
      (i) => ['tools', i, 'function', 'parameters'],
    );
    const rf = body.response_format;
    if (rf?.type === 'json_schema' && rf.json_schema.schema != null)
      checkOutputSchema(rf.json_schema.schema, ctx, ['response_format', 'json_schema', 'schema']);
  });

// ---- POST /v1/completions ----

const TokenIdSchema = z.number().int().min(0);

/** string | token ids | a batch of either; only batches of one are served for now. */
export const PromptSchema = z
  .union([z.string(), z.array(TokenIdSchema), z.array(z.string()), z.array(z.array(TokenIdSchema))], {
    error: 'expected a string, an array of token ids, or an array of one of those',
  })
  .superRefine(function checkPrompt(prompt, ctx) {
    if (typeof prompt === 'string') return;
    if (prompt.length === 0) {
      ctx.addIssue({ code: 'custom', message: 'must not be empty' });
      return;
    }
    const batch = typeof prompt[0] === 'string' || Array.isArray(prompt[0]);
    if (batch && prompt.length > 1) {
      ctx.addIssue({
        code: 'custom',
        message: `batches of prompts are not supported yet (got ${prompt.length}); send one prompt per request`,
      });
    } else if (Array.isArray(prompt[0]) && prompt[0].length === 0) {
      ctx.addIssue({ code: 'custom', path: [0], message: 'must not be empty' });
    }
  });

export const CompletionRequestSchema = z.object({
  model: z.string().nullish(),
  prompt: PromptSchema,
  stream: z.boolean().nullish(),
  stream_options: StreamOptionsSchema.nullish(),
  echo: z.boolean().nullish(),
  /** the number of alternatives per token (0: only the chosen token's log-prob) */
  logprobs: z.number().int().min(0).max(5).nullish(),
  /** vLLM's extension: `choices[].prompt_token_ids` and `choices[].token_ids` in the response */
  return_token_ids: z.boolean().nullish(),
  /** 0 is allowed: with `echo` it scores the prompt without generating */
  max_tokens: z.number().int().min(0).nullish(),
  ...SAMPLING_FIELDS,
  user: z.string().nullish(),
  /** routes the request to a stored state, so a prompt that extends an earlier one pays only for the new part */
  prompt_cache_key: z.string().nullish(),
});

// ---- session API ----

/** POST /v1/sessions */
export const CreateSessionRequestSchema = z.object({
  system: z.string().nullish(),
  metadata: JsonObjectSchema.nullish(),
});

/** POST /v1/sessions/:id/messages */
export const SessionMessageRequestSchema = z.object({
  content: ContentSchema,
  max_tokens: z.number().int().min(1).nullish(),
  temperature: TemperatureSchema.nullish(),
  seed: SeedSchema.nullish(),
  stop: StopSchema.nullish(),
  stream: z.boolean().nullish(),
  stream_options: StreamOptionsSchema.nullish(),
  /** vLLM's extension, as in Chat Completions: `prompt_token_ids` and `choices[].token_ids` in the response */
  return_token_ids: z.boolean().nullish(),
});

/** POST /v1/sessions/:id/fork */
/** POST /tokenize (vLLM's shape): a prompt, or messages rendered with the chat template. */
export const TokenizeRequestSchema = z
  .object({
    model: z.string().nullish(),
    prompt: z.string().nullish(),
    messages: z.array(MessageSchema).min(1, { error: 'must contain at least one message' }).nullish(),
    add_special_tokens: z.boolean().nullish(),
    add_generation_prompt: z.boolean().nullish(),
  })
  .refine((b) => (b.prompt != null) !== (b.messages != null), {
    error: 'give exactly one of prompt and messages',
    path: ['prompt'],
  });

/** POST /detokenize: token ids back to text. */
export const DetokenizeRequestSchema = z.object({
  model: z.string().nullish(),
  tokens: z.array(z.number().int().min(0)).max(1 << 20),
});

export const ForkSessionRequestSchema = z.object({ turn: z.number().int().min(0) });

export type TextPart = z.output<typeof TextPartSchema>;
export type MessageContent = z.output<typeof ContentSchema>;
export type ChatMessageInput = z.output<typeof MessageSchema>;
export type ChatCompletionRequest = z.output<typeof ChatCompletionRequestSchema>;
export type CompletionPrompt = z.output<typeof PromptSchema>;
export type CompletionRequest = z.output<typeof CompletionRequestSchema>;
export type CreateSessionRequest = z.output<typeof CreateSessionRequestSchema>;
export type SessionMessageRequest = z.output<typeof SessionMessageRequestSchema>;
export type ForkSessionRequest = z.output<typeof ForkSessionRequestSchema>;
export type TokenizeRequest = z.output<typeof TokenizeRequestSchema>;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
