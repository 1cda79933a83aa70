// Chat prompts: the Hymba Instruct chat template and a renderer for any Hugging Face (Jinja) chat template.
//
// HYMBA_INSTRUCT_CHAT_TEMPLATE follows the template published with nvidia/Hymba-1.5B-Instruct (the same one
// as nvidia/Nemotron-Mini-4B-Instruct), byte for byte for every conversation that template handles:
//
//   {{'<extra_id_0>System'}}{% for message in messages %}{% if message['role'] == 'system' %}
//   {{'\n' + message['content'].strip()}}{% if tools or contexts %}{{'\n'}}{% endif %}{% endif %}{% endfor %}
//   {% if tools %}{% for tool in tools %}{{ '\n<tool> ' + tool|tojson + ' </tool>' }}{% endfor %}{% endif %}
//   {% if contexts %}{% if tools %}{{'\n'}}{% endif %}{% for context in contexts %}
//   {{ '\n<context> ' + context.strip() + ' </context>' }}{% endfor %}{% endif %}{{'\n\n'}}
//   {% for message in messages %}{% if message['role'] == 'user' %}{{ '<extra_id_1>User\n' + ... + '\n' }}
//   {% elif message['role'] == 'assistant' %}{{ '<extra_id_1>Assistant\n' + ... + '\n' }}
//   {% elif message['role'] == 'tool' %}{{ '<extra_id_1>Tool\n' + ... + '\n' }}{% endif %}{% endfor %}
//   {%- if add_generation_prompt %}{{'<extra_id_1>Assistant\n'}}{%- endif %}
//
// Decisions (tests/node/chat-template.test.ts pins each one):
// - BOS: the template does NOT emit `bos_token`. tokenizer_config.json has add_bos_token = true, so the
//   tokenizer adds `<s>` when the rendered prompt is encoded; BOS therefore appears exactly once. For a
//   checkpoint whose own template does emit it, use `templateEmitsBos()` to encode without a second BOS.
// - `</s>`: a completed assistant turn is rendered `<extra_id_1>Assistant\n{text}\n`, WITHOUT `</s>`, as in the
//   published template. `</s>` is what the model emits to end its turn during generation (a stop token), it
//   is not re-inserted into the history. (Also, with the Llama-2 tokenizer.json a `</s>` in the middle of a
//   prompt makes the normalizer prepend an extra "▁" to the text after it, which the model never saw.)
// - The system block is always emitted. Without tools the system text is followed by "\n\n" only
//   (`<extra_id_0>System\n{system}\n\n`); with tools by "\n" + the `\n<tool> {json} </tool>` lines + "\n\n".
//   With no system message: `<extra_id_0>System\n\n`.
// - Contents are `.strip()`ped, as in the published template.
// Additions that the published template lacks (they do not change its output for the conversations it handles):
// - role `developer` is treated as `system`;
// - an assistant message's `tool_calls` are rendered after its text as `<toolcall> {json} </toolcall>`, one per
//   line, with `{json}` = {"name": ..., "arguments": {...}} (the Nemotron-Mini tool-call format).

import { Template } from '@huggingface/jinja';

/** Jinja source of the Hymba Instruct chat template (default for model dirs that ship none). */
export const HYMBA_INSTRUCT_CHAT_TEMPLATE = [
  "{{- '<extra_id_0>System' -}}",
  '{%- for message in messages -%}',
  "{%- if message['role'] == 'system' or message['role'] == 'developer' -%}",
  "{{- '\\n' + message['content'].strip() -}}",
  "{%- if tools or contexts -%}{{- '\\n' -}}{%- endif -%}",
  '{%- endif -%}',
  '{%- endfor -%}',
  "{%- if tools -%}{%- for tool in tools -%}{{- '\\n<tool> ' + tool|tojson + ' </tool>' -}}{%- endfor -%}{%- endif -%}",
  "{%- if contexts -%}{%- if tools -%}{{- '\\n' -}}{%- endif -%}{%- for context in contexts -%}{{- '\\n<context> ' + context.strip() + ' </context>' -}}{%- endfor -%}{%- endif -%}",
  "{{- '\\n\\n' -}}",
  '{%- for message in messages -%}',
  "{%- if message['role'] == 'user' -%}",
  "{{- '<extra_id_1>User\\n' + message['content'].strip() + '\\n' -}}",
  "{%- elif message['role'] == 'assistant' -%}",
  "{{- '<extra_id_1>Assistant\\n' + message['content'].strip() -}}",
  "{%- if message['tool_calls'] -%}{%- for call in message['tool_calls'] -%}",
  "{%- if not loop.first or message['content'].strip() -%}{{- '\\n' -}}{%- endif -%}",
  "{{- '<toolcall> ' + call|tojson + ' </toolcall>' -}}",
  '{%- endfor -%}{%- endif -%}',
  "{{- '\\n' -}}",
  "{%- elif message['role'] == 'tool' -%}",
  "{{- '<extra_id_1>Tool\\n' + message['content'].strip() + '\\n' -}}",
  '{%- endif -%}',
  '{%- endfor -%}',
  "{%- if add_generation_prompt -%}{{- '<extra_id_1>Assistant\\n' -}}{%- endif -%}",
].join('');

export type ChatRole = 'system' | 'developer' | 'user' | 'assistant' | 'tool';

/** One tool call made by the assistant; `arguments` may be an object or its JSON text. */
export interface ChatToolCall {
  name: string;
  arguments: Record<string, unknown> | string;
}

export interface ChatMessage {
  role: ChatRole;
  content: string;
  /** assistant only */
  tool_calls?: ChatToolCall[];
}

export interface RenderChatOptions {
  /** tool definitions (JSON objects), rendered with `tojson` */
  tools?: object[];
  /** retrieved passages (the published template's `contexts`) */
  contexts?: string[];
  addGenerationPrompt: boolean;
  bosToken: string;
  eosToken: string;
}

const ROLES: ReadonlySet<string> = new Set<ChatRole>(['system', 'developer', 'user', 'assistant', 'tool']);

let cached: { source: string; template: Template } | null = null;

function compile(source: string): Template {
  if (cached?.source === source) return cached.template;
  let template: Template;
  try {
    template = new Template(source);
  } catch (err) {
    throw new Error(`chat template: cannot parse the template: ${errorMessage(err)}`, { cause: err });
  }
  cached = { source, template };
  return template;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function normalizeToolCall(call: ChatToolCall, where: string): { name: string; arguments: unknown } {
  if (typeof call !== 'object' || call === null || typeof call.name !== 'string') {
    throw new Error(`${where}: a tool call needs a string "name"`);
  }
  let args: unknown = call.arguments ?? {};
  if (typeof args === 'string') {
    try {
      args = JSON.parse(args === '' ? '{}' : args);
    } catch {
      // not JSON: keep the text as given
    }
  }
  // key order name, arguments: the order the model emits
  return { name: call.name, arguments: args };
}

/**
 * Renders `messages` with a Hugging Face chat template (Jinja), the way `apply_chat_template(tokenize=False)`
 * does: variables `messages`, `tools`, `contexts`, `add_generation_prompt`, `bos_token`, `eos_token`.
 * `developer` messages are passed to the template as `system`. Throws an Error naming the problem when a
 * message is malformed or the template fails to parse or render (including its `raise_exception(...)`).
 */
export function renderChat(template: string, messages: ChatMessage[], opts: RenderChatOptions): string {
  if (!Array.isArray(messages)) throw new Error('chat template: messages must be an array');
  const prepared = messages.map((m, i) => {
    const where = `chat message ${i}`;
    if (typeof m !== 'object' || m === null) throw new Error(`${where}: not an object`);
    if (typeof m.role !== 'string' || !ROLES.has(m.role)) {
      throw new Error(
        `${where}: unknown role ${JSON.stringify(m.role)} (expected system|developer|user|assistant|tool)`,
      );
    }
    if (typeof m.content !== 'string') throw new Error(`${where}: content must be a string`);
    const role = m.role === 'developer' ? 'system' : m.role;
    const out: { role: string; content: string; tool_calls?: { name: string; arguments: unknown }[] } = {
      role,
      content: m.content,
    };
    if (m.tool_calls !== undefined) {
      if (m.role !== 'assistant') throw new Error(`${where}: only assistant messages carry tool_calls`);
      if (!Array.isArray(m.tool_calls)) throw new Error(`${where}: tool_calls must be an array`);
      if (m.tool_calls.length > 0) out.tool_calls = m.tool_calls.map((c) => normalizeToolCall(c, where));
    }
    return out;
  });

  const vars: Record<string, unknown> = {
    messages: prepared,
    add_generation_prompt: opts.addGenerationPrompt,
    bos_token: opts.bosToken,
    eos_token: opts.eosToken,
  };
  if (opts.tools && opts.tools.length > 0) vars.tools = opts.tools;
  if (opts.contexts && opts.contexts.length > 0) vars.contexts = opts.contexts;

  const compiled = compile(template);
  try {
    return compiled.render(vars);
  } catch (err) {
    throw new Error(`chat template: rendering failed: ${errorMessage(err)}`, { cause: err });
  }
}

/**
 * True when a rendered prompt already starts with the BOS text (a template that emits `{{ bos_token }}`);
 * encode such a prompt with `addBos: false` so that BOS appears exactly once.
 */
export function templateEmitsBos(rendered: string, bosToken: string): boolean {
  return bosToken.length > 0 && rendered.startsWith(bosToken);
}
