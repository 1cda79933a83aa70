import { describe, it, expect, beforeAll } from 'vitest';
import llamaTokenizer from 'llama-tokenizer-js';
import {
  HYMBA_INSTRUCT_CHAT_TEMPLATE,
  renderChat,
  templateEmitsBos,
  type ChatMessage,
  type RenderChatOptions,
} from '../../engine/text/chat-template.js';
import { HymbaTokenizer } from '../../engine/text/tokenizer.js';
import { buildTokenizerFiles } from '../../infra/test-model/tokenizer-files.js';

// The chat template published with nvidia/Hymba-1.5B-Instruct and nvidia/Nemotron-Mini-4B-Instruct, as
// reproduced by third parties (e.g. LMFlow's Hymba conversation template). Ours must render identically for
// every conversation it handles.
const PUBLISHED_TEMPLATE =
  "{{'<extra_id_0>System'}}{% for message in messages %}{% if message['role'] == 'system' %}{{'\\n' + message['content'].strip()}}{% if tools or contexts %}{{'\\n'}}{% endif %}{% endif %}{% endfor %}{% if tools %}{% for tool in tools %}{{ '\\n<tool> ' + tool|tojson + ' </tool>' }}{% endfor %}{% endif %}{% if contexts %}{% if tools %}{{'\\n'}}{% endif %}{% for context in contexts %}{{ '\\n<context> ' + context.strip() + ' </context>' }}{% endfor %}{% endif %}{{'\\n\\n'}}{% for message in messages %}{% if message['role'] == 'user' %}{{ '<extra_id_1>User\\n' + message['content'].strip() + '\\n' }}{% elif message['role'] == 'assistant' %}{{ '<extra_id_1>Assistant\\n' + message['content'].strip() + '\\n' }}{% elif message['role'] == 'tool' %}{{ '<extra_id_1>Tool\\n' + message['content'].strip() + '\\n' }}{% endif %}{% endfor %}{%- if add_generation_prompt %}{{'<extra_id_1>Assistant\\n'}}{%- endif %}";

const WEATHER_TOOL = {
  name: 'get_weather',
  description: 'Current weather for a city',
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

const base: RenderChatOptions = { addGenerationPrompt: true, bosToken: '<s>', eosToken: '</s>' };

const render = (messages: ChatMessage[], opts: Partial<RenderChatOptions> = {}): string =>
  renderChat(HYMBA_INSTRUCT_CHAT_TEMPLATE, messages, { ...base, ...opts });

let tok: HymbaTokenizer;
beforeAll(() => {
  const files = buildTokenizerFiles();
  tok = new HymbaTokenizer(files.tokenizerJson, files.tokenizerConfig);
});

describe('HYMBA_INSTRUCT_CHAT_TEMPLATE', () => {
  it('renders system + tools + user + assistant tool call + tool result + assistant exactly', () => {
    const messages: ChatMessage[] = [
      { role: 'system', content: 'You are a helpful assistant.' },
      { role: 'user', content: 'What is the weather in Paris?' },
      { role: 'assistant', content: '', tool_calls: [{ name: 'get_weather', arguments: { city: 'Paris' } }] },
      { role: 'tool', content: '{"temperature_c": 21, "sky": "clear"}' },
      { role: 'assistant', content: 'It is 21 °C and clear in Paris.' },
      { role: 'user', content: 'Thanks!' },
    ];
    expect(render(messages, { tools: [WEATHER_TOOL] })).toBe(
      '<extra_id_0>System\n' +
        'You are a helpful assistant.\n' +
        '\n<tool> {"name": "get_weather", "description": "Current weather for a city", "parameters": ' +
        '{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}} </tool>' +
        '\n\n' +
        '<extra_id_1>User\nWhat is the weather in Paris?\n' +
        '<extra_id_1>Assistant\n<toolcall> {"name": "get_weather", "arguments": {"city": "Paris"}} </toolcall>\n' +
        '<extra_id_1>Tool\n{"temperature_c": 21, "sky": "clear"}\n' +
        '<extra_id_1>Assistant\nIt is 21 °C and clear in Paris.\n' +
        '<extra_id_1>User\nThanks!\n' +
        '<extra_id_1>Assistant\n',
    );
  });

  it('generation prompt only when asked', () => {
    const messages: ChatMessage[] = [{ role: 'user', content: 'Hi' }];
    expect(render(messages, { addGenerationPrompt: true })).toBe(
      '<extra_id_0>System\n\n<extra_id_1>User\nHi\n<extra_id_1>Assistant\n',
    );
    expect(render(messages, { addGenerationPrompt: false })).toBe('<extra_id_0>System\n\n<extra_id_1>User\nHi\n');
  });

  it('system block: always present, text stripped, blank line before the first turn', () => {
    expect(
      render(
        [
          { role: 'system', content: '  Be brief.\n' },
          { role: 'user', content: ' Hi \n' },
        ],
        { addGenerationPrompt: false },
      ),
    ).toBe('<extra_id_0>System\nBe brief.\n\n<extra_id_1>User\nHi\n');
    // tools without a system message
    expect(render([{ role: 'user', content: 'Hi' }], { tools: [{ name: 't' }], addGenerationPrompt: false })).toBe(
      '<extra_id_0>System\n<tool> {"name": "t"} </tool>\n\n<extra_id_1>User\nHi\n',
    );
    // an empty tools list is no tools
    expect(render([{ role: 'user', content: 'Hi' }], { tools: [] })).toBe(
      render([{ role: 'user', content: 'Hi' }], {}),
    );
  });

  it('developer is treated as system', () => {
    const dev = render([
      { role: 'developer', content: 'Answer in French.' },
      { role: 'user', content: 'Hello' },
    ]);
    const sys = render([
      { role: 'system', content: 'Answer in French.' },
      { role: 'user', content: 'Hello' },
    ]);
    expect(dev).toBe(sys);
    expect(dev.startsWith('<extra_id_0>System\nAnswer in French.\n\n')).toBe(true);
  });

  it('tool calls: after the text, one per line, string arguments parsed as JSON', () => {
    const out = render(
      [
        { role: 'user', content: 'Weather in Paris and Oslo?' },
        {
          role: 'assistant',
          content: 'Checking.',
          tool_calls: [
            { name: 'get_weather', arguments: '{"city": "Paris"}' },
            { name: 'get_weather', arguments: { city: 'Oslo' } },
          ],
        },
      ],
      { addGenerationPrompt: false },
    );
    expect(out).toBe(
      '<extra_id_0>System\n\n<extra_id_1>User\nWeather in Paris and Oslo?\n' +
        '<extra_id_1>Assistant\nChecking.\n' +
        '<toolcall> {"name": "get_weather", "arguments": {"city": "Paris"}} </toolcall>\n' +
        '<toolcall> {"name": "get_weather", "arguments": {"city": "Oslo"}} </toolcall>\n',
    );
  });

  it('matches the published template for every conversation that template handles', () => {
    const conversations: [ChatMessage[], Partial<RenderChatOptions>][] = [
      [[{ role: 'user', content: 'Hi' }], {}],
      [[{ role: 'user', content: 'Hi' }], { addGenerationPrompt: false }],
      [
        [
          { role: 'system', content: 'S' },
          { role: 'user', content: 'U1' },
          { role: 'assistant', content: 'A1' },
          { role: 'user', content: 'U2' },
        ],
        {},
      ],
      [
        [
          { role: 'system', content: 'S' },
          { role: 'user', content: 'U' },
          { role: 'assistant', content: '<toolcall> {"name": "t", "arguments": {}} </toolcall>' },
          { role: 'tool', content: 'R' },
        ],
        { tools: [WEATHER_TOOL, { name: 't', parameters: {} }] },
      ],
      [[{ role: 'user', content: 'Q' }], { contexts: ['passage one', ' passage two '] }],
      [
        [
          { role: 'system', content: 'S' },
          { role: 'user', content: 'Q' },
        ],
        { tools: [{ name: 't' }], contexts: ['c'] },
      ],
      [
        [
          { role: 'system', content: 'S1' },
          { role: 'system', content: 'S2' },
          { role: 'user', content: 'Q' },
        ],
        {},
      ],
    ];
    for (const [messages, opts] of conversations) {
      const expected = renderChat(PUBLISHED_TEMPLATE, messages, { ...base, ...opts });
      expect(render(messages, opts)).toBe(expected);
    }
  });

  it('BOS appears exactly once: the template has none, the tokenizer adds it', () => {
    const prompt = render([
      { role: 'system', content: 'S' },
      { role: 'user', content: 'Hello there' },
      { role: 'assistant', content: 'Hi!' },
      { role: 'user', content: 'How are you?' },
    ]);
    expect(templateEmitsBos(prompt, tok.bosToken)).toBe(false);
    expect(prompt.includes('<s>')).toBe(false);
    const ids = tok.encode(prompt, { addBos: !templateEmitsBos(prompt, tok.bosToken) });
    expect(ids[0]).toBe(tok.bosId);
    expect(ids.filter((id) => id === tok.bosId)).toHaveLength(1);
    // </s> is the model's stop token, never part of a rendered history
    expect(prompt.includes('</s>')).toBe(false);
    expect(ids.includes(tok.eosId)).toBe(false);
    // no special tokens in the prompt text, so it tokenizes exactly as llama-tokenizer-js
    expect(ids).toEqual(llamaTokenizer.encode(prompt));

    // a template that emits bos_token itself: encode without adding another
    const withBos = renderChat('{{ bos_token }}{{ messages[0].content }}', [{ role: 'user', content: 'x' }], base);
    expect(withBos).toBe('<s>x');
    expect(templateEmitsBos(withBos, tok.bosToken)).toBe(true);
    const ids2 = tok.encode(withBos, { addBos: !templateEmitsBos(withBos, tok.bosToken) });
    expect(ids2.filter((id) => id === tok.bosId)).toHaveLength(1);
    expect(ids2[0]).toBe(tok.bosId);
  });

  it('passes eos_token to templates that use it', () => {
    const t =
      "{% for m in messages %}{{ m['content'] }}{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}";
    expect(
      renderChat(
        t,
        [
          { role: 'user', content: 'a' },
          { role: 'assistant', content: 'b' },
        ],
        base,
      ),
    ).toBe('ab</s>');
  });
});

describe('renderChat errors', () => {
  it('template syntax errors', () => {
    expect(() => renderChat('{% if %}', [], base)).toThrow(/chat template: cannot parse/);
    expect(() => renderChat('{{ messages[0].content ', [], base)).toThrow(Error);
  });

  it('raise_exception and runtime errors', () => {
    expect(() => renderChat("{{ raise_exception('only user roles') }}", [], base)).toThrow(
      /chat template: rendering failed: only user roles/,
    );
  });

  it('malformed messages', () => {
    const bad = [{ role: 'robot', content: 'x' }] as unknown as ChatMessage[];
    expect(() => render(bad)).toThrow(/chat message 0: unknown role "robot"/);
    const noContent = [{ role: 'user' }] as unknown as ChatMessage[];
    expect(() => render(noContent)).toThrow(/chat message 0: content must be a string/);
    const userCalls = [{ role: 'user', content: 'x', tool_calls: [{ name: 'f', arguments: {} }] }] as ChatMessage[];
    expect(() => render(userCalls)).toThrow(/only assistant messages carry tool_calls/);
  });
});
