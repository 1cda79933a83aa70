// Function calling and structured output through the openai SDK: tools rendered in the prompt, forced calls
// decoded under a grammar (so even the tiny random model calls tools with valid arguments), tool results fed
// back, JSON answers validated against their schema on every seed, and invalid schemas rejected with a 400.

import type {
  ChatCompletionChunk,
  ChatCompletionMessageParam,
  ChatCompletionMessageToolCall,
  ChatCompletionTool,
} from 'openai/resources/chat/completions';
import { beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { expectError, openaiClient, post, seedModel } from './api-helpers.js';

beforeAll(seedModel);

/** The weather tool's arguments, as a zod schema: the JSON schema sent and the validator of what comes back. */
const WeatherArgs = z.object({
  city: z.enum(['Paris', 'Tokyo', 'Lima']),
  days: z.number().int().min(1).max(7),
  units: z.enum(['celsius', 'fahrenheit']).optional(),
});
const AddArgs = z.object({ a: z.number().int().min(-100).max(100), b: z.number().int().min(-100).max(100) });

const TOOLS: ChatCompletionTool[] = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'The weather forecast for a city.',
      parameters: z.toJSONSchema(WeatherArgs) as Record<string, unknown>,
    },
  },
  {
    type: 'function',
    function: {
      name: 'add',
      description: 'Adds two integers.',
      parameters: z.toJSONSchema(AddArgs) as Record<string, unknown>,
    },
  },
];

const ASK: ChatCompletionMessageParam[] = [
  { role: 'system', content: 'You can call tools.' },
  { role: 'user', content: 'What is the weather in Paris for three days?' },
];

function checkCall(call: ChatCompletionMessageToolCall): void {
  expect(call.type).toBe('function');
  if (call.type !== 'function') return;
  expect(call.id).toMatch(/^call_[0-9a-f]{24}$/);
  const args: unknown = JSON.parse(call.function.arguments);
  if (call.function.name === 'get_weather') expect(WeatherArgs.safeParse(args).success).toBe(true);
  else if (call.function.name === 'add') expect(AddArgs.safeParse(args).success).toBe(true);
  else expect.unreachable(`unknown tool ${call.function.name}`);
}

/** Runs the tool (deterministically) and returns its result message. */
function toolResult(call: ChatCompletionMessageToolCall): ChatCompletionMessageParam {
  if (call.type !== 'function') throw new Error('not a function call');
  return { role: 'tool', tool_call_id: call.id, content: JSON.stringify({ ok: true, tool: call.function.name }) };
}

describe('function calling', () => {
  it('a full tool loop, not streamed: required call -> tool result -> final answer, with state reused', async () => {
    const client = openaiClient();
    const key = `tools-${crypto.randomUUID()}`;
    const first = await client.chat.completions.create({
      model: 'hymba',
      messages: ASK,
      tools: TOOLS,
      tool_choice: 'required',
      parallel_tool_calls: false,
      max_tokens: 120,
      temperature: 0,
      prompt_cache_key: key,
    });
    const choice = first.choices[0]!;
    expect(choice.finish_reason).toBe('tool_calls');
    expect(choice.message.content).toBeNull();
    expect(choice.message.tool_calls).toHaveLength(1);
    const call = choice.message.tool_calls![0]!;
    checkCall(call);

    const messages: ChatCompletionMessageParam[] = [
      ...ASK,
      { role: 'assistant', content: null, tool_calls: [call] },
      toolResult(call),
    ];
    const second = await client.chat.completions.create({
      model: 'hymba',
      messages,
      tools: TOOLS,
      tool_choice: 'none',
      max_tokens: 8,
      temperature: 0,
      prompt_cache_key: key,
    });
    const answer = second.choices[0]!;
    expect(answer.message.tool_calls ?? []).toEqual([]);
    expect(typeof answer.message.content).toBe('string');
    expect(['stop', 'length']).toContain(answer.finish_reason);
    // tool_choice none shows no tools, so the prompt differs from the first turn's: no state prefix applies
    expect(second.usage!.prompt_tokens_details!.cached_tokens).toBe(0);

    // with the same tools offered, the stored state (prompt + the call as the template renders it) is reused
    const third = await client.chat.completions.create({
      model: 'hymba',
      messages,
      tools: TOOLS,
      tool_choice: 'auto',
      max_tokens: 8,
      temperature: 0,
      prompt_cache_key: key,
    });
    expect(third.usage!.prompt_tokens_details!.cached_tokens).toBeGreaterThan(first.usage!.prompt_tokens);
  });

  it('a full tool loop, streamed: tool_calls deltas accumulate into a valid call, then the answer streams', async () => {
    const client = openaiClient();
    const stream = await client.chat.completions.create({
      model: 'hymba',
      messages: ASK,
      tools: TOOLS,
      tool_choice: 'required',
      max_tokens: 160,
      temperature: 0.8,
      seed: 7,
      stream: true,
      stream_options: { include_usage: true },
    });
    const calls = new Map<number, { id: string; name: string; arguments: string }>();
    let finish: string | null = null;
    let content = '';
    for await (const chunk of stream as AsyncIterable<ChatCompletionChunk>) {
      for (const c of chunk.choices) {
        content += c.delta.content ?? '';
        for (const d of c.delta.tool_calls ?? []) {
          const cur = calls.get(d.index) ?? { id: '', name: '', arguments: '' };
          cur.id += d.id ?? '';
          cur.name += d.function?.name ?? '';
          cur.arguments += d.function?.arguments ?? '';
          calls.set(d.index, cur);
        }
        finish = c.finish_reason ?? finish;
      }
    }
    expect(finish).toBe('tool_calls');
    expect(calls.size).toBeGreaterThanOrEqual(1);
    const parsed = [...calls.values()].map((c): ChatCompletionMessageToolCall => ({
      id: c.id,
      type: 'function',
      function: { name: c.name, arguments: c.arguments },
    }));
    parsed.forEach(checkCall);

    const final = await client.chat.completions.create({
      model: 'hymba',
      messages: [
        ...ASK,
        { role: 'assistant', content: content || null, tool_calls: parsed },
        ...parsed.map(toolResult),
      ],
      tools: TOOLS,
      max_tokens: 6,
      temperature: 0,
      stream: true,
    });
    let text = '';
    let lastFinish: string | null = null;
    for await (const chunk of final as AsyncIterable<ChatCompletionChunk>) {
      for (const c of chunk.choices) {
        text += c.delta.content ?? '';
        lastFinish = c.finish_reason ?? lastFinish;
      }
    }
    expect(lastFinish).not.toBeNull();
    expect(typeof text).toBe('string');
  });

  it('a named tool_choice calls exactly that function', async () => {
    for (const seed of [1, 2, 3]) {
      const res = await openaiClient().chat.completions.create({
        model: 'hymba',
        messages: ASK,
        tools: TOOLS,
        tool_choice: { type: 'function', function: { name: 'add' } },
        max_tokens: 80,
        temperature: 1,
        seed,
      });
      const calls = res.choices[0]!.message.tool_calls ?? [];
      expect(calls).toHaveLength(1);
      expect(calls[0]!.type === 'function' && calls[0]!.function.name).toBe('add');
      checkCall(calls[0]!);
    }
  });

  it('tool_choice required with sampling gives valid calls on every seed', async () => {
    for (const seed of [11, 12, 13, 14, 15]) {
      const res = await openaiClient().chat.completions.create({
        model: 'hymba',
        messages: ASK,
        tools: TOOLS,
        tool_choice: 'required',
        parallel_tool_calls: false,
        max_tokens: 120,
        temperature: 1,
        seed,
      });
      const choice = res.choices[0]!;
      expect(choice.finish_reason).toBe('tool_calls');
      expect(choice.message.tool_calls).toHaveLength(1);
      checkCall(choice.message.tool_calls![0]!);
    }
  });
});

describe('structured output', () => {
  const Person = z.object({
    name: z.enum(['Ada', 'Grace', 'Alan']),
    age: z.number().int().min(0).max(120),
    tags: z.array(z.enum(['x', 'y', 'z'])).max(3),
    admin: z.boolean(),
    nickname: z.string().max(12).optional(),
  });

  it('json_schema: the answer parses and validates against the schema on every seed tried', async () => {
    for (const seed of [1, 2, 3, 4, 5, 6]) {
      const res = await openaiClient().chat.completions.create({
        model: 'hymba',
        messages: [{ role: 'user', content: 'Describe a person as JSON.' }],
        response_format: {
          type: 'json_schema',
          json_schema: { name: 'person', schema: z.toJSONSchema(Person) as Record<string, unknown>, strict: true },
        },
        max_tokens: 150,
        temperature: 1,
        seed,
      });
      const choice = res.choices[0]!;
      expect(choice.finish_reason).toBe('stop');
      const parsed = Person.safeParse(JSON.parse(choice.message.content!));
      expect(parsed.success, choice.message.content!).toBe(true);
    }
  });

  it('json_object: the answer is a JSON object', async () => {
    const res = await openaiClient().chat.completions.create({
      model: 'hymba',
      messages: [{ role: 'user', content: 'Answer in JSON.' }],
      response_format: { type: 'json_object' },
      max_tokens: 60,
      temperature: 0,
    });
    const choice = res.choices[0]!;
    if (choice.finish_reason === 'stop') {
      const value: unknown = JSON.parse(choice.message.content!);
      expect(typeof value === 'object' && value !== null && !Array.isArray(value)).toBe(true);
    } else {
      // cut by max_tokens: still a prefix of a JSON object
      expect(choice.message.content!.startsWith('{')).toBe(true);
    }
  });
});

describe('invalid tools and schemas', () => {
  const base = { model: 'hymba', messages: ASK, max_tokens: 4 };

  it('a parameters schema with an unknown type is a 400 naming the keyword', async () => {
    const res = await post('/v1/chat/completions', {
      ...base,
      tools: [
        {
          type: 'function',
          function: { name: 'f', parameters: { type: 'object', properties: { a: { type: 'strin' } } } },
        },
      ],
    });
    const err = await expectError(res, 400);
    expect(err.param).toBe('tools[0].function.parameters.properties.a.type');
  });

  it('an unsupported keyword is a 400, not a silently unconstrained call', async () => {
    const res = await post('/v1/chat/completions', {
      ...base,
      tools: [
        {
          type: 'function',
          function: {
            name: 'f',
            parameters: { type: 'object', properties: { a: { type: 'string', pattern: '^a+$' } } },
          },
        },
      ],
    });
    const err = await expectError(res, 400);
    expect(err.param).toMatch(/^tools\[0\]\.function\.parameters\.properties\.a/);
    expect(err.message).toMatch(/pattern/);
  });

  it('duplicate and malformed tool names, and a response_format schema that is not a schema', async () => {
    const dup = await post('/v1/chat/completions', {
      ...base,
      tools: [TOOLS[1], TOOLS[1]],
    });
    expect((await expectError(dup, 400)).param).toBe('tools[1].function.name');
    const bad = await post('/v1/chat/completions', {
      ...base,
      tools: [{ type: 'function', function: { name: 'has space' } }],
    });
    expect((await expectError(bad, 400)).param).toBe('tools[0].function.name');
    const rf = await post('/v1/chat/completions', {
      ...base,
      response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', required: ['a'] } } },
    });
    expect((await expectError(rf, 400)).param).toMatch(/^response_format\.json_schema\.schema/);
  });
});
