// The tool-call parser: content vs calls, whole and streamed, and malformed calls kept as content.

import { describe, expect, it } from 'vitest';
import { parseToolCalls, ToolCallParser, type ParsedChunk } from '../../engine/text/tool-calls.js';

const NAMES = new Set(['get_weather', 'add']);

/** Feed `text` in pieces of `size` characters, then flush; the concatenated result. */
function streamed(text: string, size: number): ParsedChunk {
  const p = new ToolCallParser(NAMES);
  const out: ParsedChunk = { content: '', calls: [] };
  for (let i = 0; i < text.length; i += size) {
    const c = p.push(text.slice(i, i + size));
    out.content += c.content;
    out.calls.push(...c.calls);
  }
  const end = p.flush();
  return { content: out.content + end.content, calls: [...out.calls, ...end.calls] };
}

const CASES: { name: string; text: string; content: string; calls: { name: string; arguments: string }[] }[] = [
  { name: 'plain text', text: 'Hello there.', content: 'Hello there.', calls: [] },
  {
    name: 'one call',
    text: '<toolcall> {"name": "get_weather", "arguments": {"city": "Paris"}} </toolcall>',
    content: '',
    calls: [{ name: 'get_weather', arguments: '{"city":"Paris"}' }],
  },
  {
    name: 'text, then a call',
    text: 'Let me check.\n<toolcall> {"name": "add", "arguments": {"a": 1, "b": 2}} </toolcall>\n',
    content: 'Let me check.',
    calls: [{ name: 'add', arguments: '{"a":1,"b":2}' }],
  },
  {
    name: 'two calls on separate lines',
    text:
      '<toolcall> {"name": "add", "arguments": {"a": 1}} </toolcall>\n' +
      '<toolcall> {"name": "get_weather", "arguments": {}} </toolcall>',
    content: '',
    calls: [
      { name: 'add', arguments: '{"a":1}' },
      { name: 'get_weather', arguments: '{}' },
    ],
  },
  {
    name: 'arguments given as JSON text',
    text: '<toolcall> {"name": "add", "arguments": "{\\"a\\": 3}"} </toolcall>',
    content: '',
    calls: [{ name: 'add', arguments: '{"a":3}' }],
  },
  {
    name: 'malformed JSON stays content',
    text: 'x <toolcall> {"name": "add", "arguments": {"a": } </toolcall>',
    content: 'x <toolcall> {"name": "add", "arguments": {"a": } </toolcall>',
    calls: [],
  },
  {
    name: 'an unknown tool stays content',
    text: '<toolcall> {"name": "rm_rf", "arguments": {}} </toolcall>',
    content: '<toolcall> {"name": "rm_rf", "arguments": {}} </toolcall>',
    calls: [],
  },
  {
    name: 'arguments that are not an object stay content',
    text: '<toolcall> {"name": "add", "arguments": [1, 2]} </toolcall>',
    content: '<toolcall> {"name": "add", "arguments": [1, 2]} </toolcall>',
    calls: [],
  },
  {
    name: 'an unterminated block stays content',
    text: 'a <toolcall> {"name": "add"',
    content: 'a <toolcall> {"name": "add"',
    calls: [],
  },
  { name: 'a marker prefix at the end is content', text: 'a <tool', content: 'a <tool', calls: [] },
  { name: 'leading whitespace is dropped', text: '  \n hi  there ', content: 'hi  there', calls: [] },
];

describe('ToolCallParser', () => {
  for (const c of CASES) {
    it(`${c.name}: whole and streamed alike`, () => {
      expect(parseToolCalls(c.text, NAMES)).toEqual({ content: c.content, calls: c.calls });
      for (const size of [1, 2, 3, 7]) expect(streamed(c.text, size)).toEqual({ content: c.content, calls: c.calls });
    });
  }

  it('holds back a possible marker and releases it when it turns out to be text', () => {
    const p = new ToolCallParser(NAMES);
    expect(p.push('ok <tool').content).toBe('ok');
    expect(p.push('box').content).toBe(' <toolbox');
  });

  it('emits a call as soon as its block closes', () => {
    const p = new ToolCallParser(NAMES);
    expect(p.push('<toolcall> {"name": "add", "arguments": {}}').calls).toEqual([]);
    expect(p.push(' </toolcall>').calls).toEqual([{ name: 'add', arguments: '{}' }]);
  });

  it('drops a block cut short when asked (a call truncated by max_tokens under a tool grammar)', () => {
    const p = new ToolCallParser(NAMES);
    const a = p.push('<toolcall> {"name": "add", "arguments": {}} </toolcall>\n<toolcall> {"name": "ad');
    expect(a.calls).toEqual([{ name: 'add', arguments: '{}' }]);
    expect(p.flush({ dropUnterminated: true })).toEqual({ content: '', calls: [] });
    const q = new ToolCallParser(NAMES);
    q.push('Hi <tool');
    // a pending marker prefix outside a block is still text
    expect(q.flush({ dropUnterminated: true }).content).toBe(' <tool');
  });

  it('uses a configured format', () => {
    const p = new ToolCallParser(NAMES, { start: '[CALL]', end: '[/CALL]' });
    const a = p.push('[CALL]{"name": "add", "arguments": {"a": 1}}[/CALL]');
    expect(a.calls).toEqual([{ name: 'add', arguments: '{"a":1}' }]);
  });
});
