// Request body of POST /v1/responses (the Responses API), as a zod schema. Same conventions as schemas.ts:
// unknown fields are ignored, optional fields accept null, violations are 400s naming the field path
// (`input[2].content[0].type`). Only what this server can act on is accepted: text input, function tools,
// function calls and their outputs; images, files, reasoning items, item references and hosted tools are
// 400s that name the unsupported type.

import { z } from 'zod';
import { checkOutputSchema, checkToolSchemas, FunctionNameSchema } from './schemas.js';
import { preview } from './validation.js';

const JsonObjectSchema = z.record(z.string(), z.unknown());

const typeOf = (input: unknown): unknown =>
  typeof input === 'object' && input !== null && !Array.isArray(input) ? (input as { type?: unknown }).type : undefined;

// ---- input ----

/** input_text (user/system/developer) or output_text (an assistant message sent back) */
const TextPartSchema = z.object({
  type: z.enum(['input_text', 'output_text'], {
    error: (iss) =>
      iss.input === undefined
        ? 'a content part needs "type": "input_text"'
        : `only input_text and output_text content parts are supported, got type ${preview(iss.input)}`,
  }),
  text: z.string(),
});

const ContentSchema = z.union([z.string(), z.array(TextPartSchema)], {
  error: 'expected a string or an array of {"type": "input_text", "text": ...} parts',
});

/** A message item; `type` may be left out (EasyInputMessage). */
const MessageItemSchema = z.object({
  type: z.literal('message').optional(),
  role: z.enum(['user', 'system', 'developer', 'assistant']),
  content: ContentSchema,
});

/** A call the model made, sent back as history. */
const FunctionCallItemSchema = z.object({
  type: z.literal('function_call'),
  call_id: z.string(),
  name: z.string(),
  arguments: z.string(),
});

/** The result of a function call. */
const FunctionCallOutputItemSchema = z.object({
  type: z.literal('function_call_output'),
  call_id: z.string(),
  output: ContentSchema,
});

const SUPPORTED_ITEMS = '"message", "function_call" or "function_call_output"';

export const InputItemSchema = z.discriminatedUnion(
  'type',
  [MessageItemSchema, FunctionCallItemSchema, FunctionCallOutputItemSchema],
  {
    error: (iss) => {
      if (iss.code !== 'invalid_union') return undefined;
      return `unsupported input item type ${preview(typeOf(iss.input))}; expected ${SUPPORTED_ITEMS}`;
    },
  },
);

export const ResponseInputSchema = z.union([z.string(), z.array(InputItemSchema)], {
  error: 'expected a string or an array of input items',
});

// ---- tools and text format ----

export const ResponseToolSchema = z.object({
  type: z.literal('function', {
    error: (iss) => `only function tools are supported, got type ${preview(iss.input)}`,
  }),
  name: FunctionNameSchema,
  description: z.string().nullish(),
  parameters: JsonObjectSchema.nullish(),
  strict: z.boolean().nullish(),
});

export const ResponseToolChoiceSchema = z.union(
  [z.enum(['auto', 'none', 'required']), z.object({ type: z.literal('function'), name: z.string() })],
  { error: 'expected "auto", "none", "required" or {"type": "function", "name": ...}' },
);

export const TextFormatSchema = z.discriminatedUnion(
  'type',
  [
    z.object({ type: z.literal('text') }),
    z.object({ type: z.literal('json_object') }),
    z.object({
      type: z.literal('json_schema'),
      name: z.string(),
      schema: JsonObjectSchema,
      description: z.string().nullish(),
      strict: z.boolean().nullish(),
    }),
  ],
  { error: 'expected {"type": "text"}, {"type": "json_object"} or {"type": "json_schema", "name", "schema"}' },
);

// ---- POST /v1/responses ----

export const ResponseCreateRequestSchema = z
  .object({
    model: z.string().nullish(),
    input: ResponseInputSchema,
    instructions: z.string().nullish(),
    previous_response_id: z.string().nullish(),
    /** default true: keep the response (and the model state after it) for GET and previous_response_id */
    store: z.boolean().nullish(),
    stream: z.boolean().nullish(),
    max_output_tokens: z.number().int().min(1).nullish(),
    temperature: z.number().min(0).max(2).nullish(),
    top_p: z.number().gt(0).max(1).nullish(),
    tools: z.array(ResponseToolSchema).nullish(),
    tool_choice: ResponseToolChoiceSchema.nullish(),
    parallel_tool_calls: z.boolean().nullish(),
    text: z.object({ format: TextFormatSchema.nullish() }).nullish(),
    /** OpenAI's limits: 16 pairs, keys up to 64 characters, values up to 512 */
    metadata: z
      .record(z.string().max(64), z.string().max(512))
      .refine((m) => Object.keys(m).length <= 16, { error: 'at most 16 key-value pairs are allowed' })
      .nullish(),
    user: z.string().nullish(),
    /** extension: seeded sampling */
    seed: z.number().int().nullish(),
  })
  .superRefine(function checkResponseRequest(body, ctx) {
    if (Array.isArray(body.input) && body.input.length === 0)
      ctx.addIssue({ code: 'custom', path: ['input'], message: 'must contain at least one item' });
    const tools = body.tools ?? [];
    const choice = body.tool_choice;
    if (choice != null && choice !== 'auto' && choice !== 'none' && tools.length === 0)
      ctx.addIssue({ code: 'custom', path: ['tool_choice'], message: 'requires "tools"' });
    if (typeof choice === 'object' && choice !== null && !tools.some((t) => t.name === choice.name))
      ctx.addIssue({
        code: 'custom',
        path: ['tool_choice', 'name'],
        message: `no tool named ${preview(choice.name)} in "tools"`,
      });
    checkToolSchemas(tools, ctx, (i) => ['tools', i, 'parameters']);
    const format = body.text?.format;
    if (format?.type === 'json_schema') checkOutputSchema(format.schema, ctx, ['text', 'format', 'schema']);
  });

export type ResponseCreateRequest = z.output<typeof ResponseCreateRequestSchema>;
export type ResponseInputItem = z.output<typeof InputItemSchema>;
export type ResponseTool = z.output<typeof ResponseToolSchema>;
export type ResponseContent = z.output<typeof ContentSchema>;
