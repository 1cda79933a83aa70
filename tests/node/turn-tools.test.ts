// A turn with tools on the local engine: the prompt shows the tools as the chat template's `<tool>` lines,
// a forced call is decoded under its grammar and comes out as tool_call events (not as content), and the
// server's prompt-token limit is checked before anything runs.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TurnEvent, TurnRequest } from '../../engine/serve/protocol.js';
import { ServeError } from '../../engine/serve/errors.js';
import { prepareTurn, promptIds } from '../../engine/serve/prepare.js';
import { runTurn } from '../../engine/serve/turn.js';
import { makeConvertedModel, type TestModel } from '../helpers/tiny-model.js';

let tiny: TestModel;
beforeAll(async () => {
  tiny = await makeConvertedModel({ preset: 'tiny', seed: 5 });
});
afterAll(() => tiny?.cleanup());

const ADD = {
  name: 'add',
  description: 'Adds two integers.',
  parameters: {
    type: 'object',
    properties: { a: { type: 'integer', minimum: 0, maximum: 9 }, b: { type: 'integer', minimum: 0, maximum: 9 } },
    required: ['a', 'b'],
  },
};

function request(extra: Partial<TurnRequest> = {}): TurnRequest {
  return {
    prompt: { kind: 'chat', messages: [{ role: 'user', content: 'What is 2 + 3?' }] },
    maxTokens: 60,
    temperature: 0,
    stop: [],
    ...extra,
  };
}

async function events(req: TurnRequest): Promise<TurnEvent[]> {
  const out: TurnEvent[] = [];
  for await (const e of runTurn(tiny.engine, tiny.engine.localPipeline(), null, req, {
    newMessages: [],
    record: false,
  }))
    out.push(e);
  return out;
}

describe('a turn with tools', () => {
  it('renders the tools in the system block, and not with tool_choice none', () => {
    const tok = tiny.engine.tokenizer!;
    const withTools = tok.decode(promptIds(tiny.engine, request().prompt, [ADD]));
    // the template's tojson writes Python's json.dumps separators
    expect(withTools).toContain(
      '\n<tool> {"name": "add", "description": "Adds two integers.", "parameters": {"type": ',
    );
    expect(withTools).toContain('"required": ["a", "b"]}} </tool>\n');
    const plain = tok.decode(promptIds(tiny.engine, request().prompt, []));
    expect(plain).not.toContain('<tool>');
  });

  it('a required call is decoded under the grammar and arrives as a tool_call event, not content', async () => {
    for (const seed of [1, 2, 3]) {
      const ev = await events(request({ tools: [ADD], toolChoice: 'required', temperature: 1, seed }));
      const calls = ev.filter((e) => e.type === 'tool_call');
      expect(calls.length).toBeGreaterThanOrEqual(1);
      for (const c of calls) {
        if (c.type !== 'tool_call') continue;
        expect(c.name).toBe('add');
        const args = JSON.parse(c.arguments) as { a: number; b: number };
        expect(Object.keys(args)).toEqual(['a', 'b']);
        expect(Number.isInteger(args.a) && args.a >= 0 && args.a <= 9).toBe(true);
        expect(Number.isInteger(args.b) && args.b >= 0 && args.b <= 9).toBe(true);
      }
      const content = ev.map((e) => (e.type === 'token' ? e.text : e.type === 'done' ? e.tail : '')).join('');
      const done = ev.at(-1)!;
      expect(done.type).toBe('done');
      if (done.type === 'done' && done.completionTokens < 60) {
        // ended by the grammar (not by max_tokens): nothing of the calls leaks into the content
        expect(content).toBe('');
        expect(done.finishReason).toBe('tool_calls');
      }
    }
  });

  it('response_format json_schema: the whole output is the JSON', async () => {
    const ev = await events(
      request({ responseFormat: { kind: 'json_schema', schema: ADD.parameters }, temperature: 1, seed: 9 }),
    );
    const text = ev.map((e) => (e.type === 'token' ? e.text : e.type === 'done' ? e.tail : '')).join('');
    const value = JSON.parse(text) as Record<string, unknown>;
    expect(Object.keys(value)).toEqual(['a', 'b']);
    expect(ev.filter((e) => e.type === 'tool_call')).toHaveLength(0);
  });
});

describe('prompt-token limit', () => {
  it('MAX_PROMPT_TOKENS: a longer prompt is a 422 prompt_too_long; one at the limit passes', () => {
    const n = promptIds(tiny.engine, request().prompt).length;
    expect(prepareTurn(tiny.engine, request({ maxPromptTokens: n })).ids).toHaveLength(n);
    let err: unknown;
    try {
      prepareTurn(tiny.engine, request({ maxPromptTokens: n - 1 }));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ServeError);
    expect((err as ServeError).info).toMatchObject({ kind: 'too_long', code: 'prompt_too_long', param: 'messages' });
  });
});
