// DOM builders for the transcript, the per-turn statistics and the session list. No state lives here.

import type { ChatMessage, ToolCall } from './api.js';
import type { StoredSession, TurnStats } from './store.js';

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

const fmt = (v: number | null, unit: string, digits = 0): string => (v === null ? '–' : `${v.toFixed(digits)}${unit}`);

/** The numbers of one turn, as a description list; each value carries data-stat for scripts and tests. */
export function statsList(s: TurnStats): HTMLElement {
  const rows: [string, string, string][] = [
    ['prompt', 'prompt tokens', String(s.promptTokens)],
    ['cached', 'cached tokens', String(s.cachedTokens)],
    ['completion', 'completion tokens', String(s.completionTokens)],
    ['ttft', 'time to first token', fmt(s.ttftMs, ' ms')],
    ['tps', 'tokens/s', fmt(s.tokensPerSecond, '', 1)],
    ['snapshot', 'snapshot bytes', s.snapshotBytes === null ? '–' : formatBytes(s.snapshotBytes)],
  ];
  return el(
    'dl',
    { class: 'stats' },
    ...rows.flatMap(([key, label, value]) => [
      el('dt', {}, label),
      el('dd', { 'data-stat': key, 'data-value': statValue(s, key) }, value),
    ]),
  );
}

function statValue(s: TurnStats, key: string): string {
  const v = {
    prompt: s.promptTokens,
    cached: s.cachedTokens,
    completion: s.completionTokens,
    ttft: s.ttftMs,
    tps: s.tokensPerSecond,
    snapshot: s.snapshotBytes,
  }[key];
  return v === null || v === undefined ? '' : String(v);
}

export interface SessionActions {
  open(id: string): void;
  remove(id: string): void;
}

export function sessionItem(s: StoredSession, active: boolean, act: SessionActions): HTMLLIElement {
  const open = el('button', { type: 'button', class: 'open' }, s.title);
  if (active) open.setAttribute('aria-current', 'true');
  open.addEventListener('click', () => act.open(s.id));
  const del = el('button', { type: 'button', class: 'delete', 'aria-label': `Delete session ${s.title}` }, '×');
  del.addEventListener('click', () => act.remove(s.id));
  const note = s.forkedFrom ? el('span', { class: 'note' }, `fork at turn ${s.forkedFrom.turn}`) : '';
  return el('li', { 'data-session': s.id }, open, del, note);
}
