// The conversation of the open session: the server's stored messages (each assistant turn with its numbers
// and a fork button), then the turns this page keeps itself (tools turns, turns run in this browser).

import type { SessionInfo } from './api.js';
import { updateHandoff } from './engine-switch.js';
import { active, ui } from './page.js';
import { recordedStats, statsList } from './stats.js';
import type { StoredSession } from './store.js';
import { formatBytes, el, messageItem } from './view.js';

export interface TranscriptActions {
  fork(turn: number): void;
}

/** Redraw the transcript of the open session (empty when none is open or `info` is null). */
export function renderTranscript(info: SessionInfo | null, act: TranscriptActions): void {
  const s = active();
  ui.transcript.replaceChildren();
  updateHandoff();
  ui.title.textContent = s ? s.title : 'No session';
  ui.state.textContent = '';
  if (!s || !info) return;
  showState(info);
  for (const m of info.messages) {
    const item = messageItem(m, `t${m.turn}`);
    if (m.role === 'assistant') decorateTurn(item, s, m.turn, info, act);
    ui.transcript.append(item);
  }
  s.local.forEach((m, i) => {
    const item = messageItem(m, `l${i}`);
    const stats = s.stats[`l${i}`];
    if (stats) item.append(statsList(stats));
    ui.transcript.append(item);
  });
}

/** stats (stored ones, else the API's turn record) and the fork button of a session turn */
export function decorateTurn(
  item: HTMLElement,
  s: StoredSession,
  turn: number,
  info: SessionInfo,
  act: TranscriptActions,
): void {
  item.dataset.turn = String(turn);
  const record = info.turns.find((t) => t.turn === turn);
  const stats = s.stats[`t${turn}`] ?? (record && recordedStats(record));
  if (stats) item.append(statsList(stats));
  const fork = el('button', { type: 'button', class: 'fork' }, `Fork at turn ${turn}`);
  fork.addEventListener('click', () => act.fork(turn));
  item.append(fork);
}

/** the line under the title: turns, tokens of state, snapshots */
export function showState(info: SessionInfo): void {
  const st = info.state;
  ui.state.textContent = `${info.turns.length} turns · state after ${st.tokens} tokens · ${st.snapshots} snapshots, ${formatBytes(st.snapshot_bytes)}`;
}
