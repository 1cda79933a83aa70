// DOM builders: elements by id, new elements with attributes, byte sizes, and a transcript message with its
// tool calls. No state lives here.

import type { ChatMessage, ToolCall } from './api.js';

type Attrs = Record<string, string>;

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

export function $<T extends HTMLElement>(id: string): T {
  const node = document.getElementById(id);
  if (!node) throw new Error(`#${id} is missing from index.html`);
  return node as T;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(2)} MiB`;
}

/** One message of the transcript; the caller fills `.content` (streaming) and appends stats/actions. */
export function messageItem(m: ChatMessage, key: string): HTMLLIElement {
  const content = el('div', { class: 'content' }, m.content ?? '');
  const item = el('li', { class: `msg ${m.role}`, 'data-key': key }, el('div', { class: 'role' }, m.role), content);
  if (m.tool_calls?.length) item.append(toolCallsBlock(m.tool_calls));
  return item;
}

export function toolCallsBlock(calls: ToolCall[]): HTMLElement {
  return el(
    'div',
    { class: 'tool-calls' },
    el('div', { class: 'label' }, 'tool calls'),
    ...calls.map((c) => el('pre', { class: 'tool-call' }, `${c.function.name}(${c.function.arguments})`)),
  );
}
