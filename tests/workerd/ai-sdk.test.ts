// The Vercel AI SDK (`ai` + `@ai-sdk/openai-compatible`) runs a whole tool loop against the Worker: step 1 must
// call a tool (forced, decoded under the tool grammar), the SDK executes it and sends the result back, step 2
// answers in text. Streaming and not. The SDK parses our wire format with its own schemas, so a field it
// rejects fails the test.

import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { generateText, stepCountIs, streamText, tool } from 'ai';
import { exports } from 'cloudflare:workers';
import { beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { BASE, seedModel } from './api-helpers.js';

beforeAll(seedModel);

/** Request bodies the SDK sent, newest last. */
const sent: string[] = [];

const provider = createOpenAICompatible({
  name: 'hymba-edge',
  baseURL: `${BASE}/v1`,
  apiKey: 'test',
  includeUsage: true,
  fetch: (url, init) => {
    if (typeof init?.body === 'string') sent.push(init.body);
    return exports.default.fetch(new Request(url, init));
  },
});

const Weather = z.object({ city: z.enum(['Paris', 'Tokyo', 'Lima']), days: z.number().int().min(1).max(7) });

function tools(calls: z.infer<typeof Weather>[]) {
  return {
    get_weather: tool({
      description: 'The weather forecast for a city.',
      inputSchema: Weather,
      execute: async (input: z.infer<typeof Weather>) => {
        calls.push(input);
        return { forecast: 'sunny', city: input.city, days: input.days };
      },
    }),
  };
}

/** Step 0 must call the tool; later steps must answer in text. */
const prepareStep = ({ stepNumber }: { stepNumber: number }) =>
  ({ toolChoice: stepNumber === 0 ? 'required' : 'none' }) as const;

describe('Vercel AI SDK (openai-compatible provider)', () => {
  it('generateText: tool call -> tool result -> final answer', async () => {
    const calls: z.infer<typeof Weather>[] = [];
    const result = await generateText({
      model: provider('hymba'),
      system: 'You can call tools.',
      prompt: 'What is the weather in Tokyo this week?',
      tools: tools(calls),
      prepareStep,
      stopWhen: stepCountIs(2),
      maxOutputTokens: 100,
      temperature: 0,
    });
    expect(result.steps).toHaveLength(2);
    const [first, second] = result.steps;
    expect(first!.finishReason).toBe('tool-calls');
    expect(first!.toolCalls).toHaveLength(1);
    expect(first!.toolCalls[0]!.toolName).toBe('get_weather');
    expect(first!.toolResults).toHaveLength(1);
    expect(calls).toHaveLength(1);
    expect(Weather.safeParse(calls[0]).success).toBe(true);
    expect(second!.toolCalls).toHaveLength(0);
    expect(['stop', 'length']).toContain(second!.finishReason);
    // step 2 was sent the call and its result
    const last = JSON.parse(sent.at(-1)!) as { messages: { role: string; tool_calls?: unknown[] }[] };
    expect(last.messages.some((m) => m.role === 'assistant' && (m.tool_calls?.length ?? 0) === 1)).toBe(true);
    expect(last.messages.at(-1)!.role).toBe('tool');
  });

  it('streamText: the same loop over SSE', async () => {
    const calls: z.infer<typeof Weather>[] = [];
    const result = streamText({
      model: provider('hymba'),
      system: 'You can call tools.',
      prompt: 'Weather in Lima for two days?',
      tools: tools(calls),
      prepareStep,
      stopWhen: stepCountIs(2),
      maxOutputTokens: 100,
      temperature: 0.7,
      seed: 3,
    });
    const kinds = new Set<string>();
    for await (const part of result.fullStream) {
      if (part.type === 'error') throw part.error instanceof Error ? part.error : new Error(String(part.error));
      kinds.add(part.type);
    }
    const steps = await result.steps;
    expect(steps).toHaveLength(2);
    expect(steps[0]!.toolCalls).toHaveLength(1);
    expect(calls).toHaveLength(1);
    expect(Weather.safeParse(calls[0]).success).toBe(true);
    expect(kinds.has('tool-call')).toBe(true);
    expect(kinds.has('tool-result')).toBe(true);
    expect(['stop', 'length']).toContain(steps[1]!.finishReason);
  });
});
