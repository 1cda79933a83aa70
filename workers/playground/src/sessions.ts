// The Sessions panel: the sessions this page made (the server has no "list my sessions" route), newest
// first; open, delete, create, and fork one at a turn.

import { ApiError } from './api.js';
import { active, api, errorMessage, page, persist, status, ui } from './page.js';
import { statsUpTo } from './stats.js';
import type { StoredSession } from './store.js';
import { renderTranscript, type TranscriptActions } from './transcript.js';
import { $, el } from './view.js';

/** what the transcript's buttons do */
export const transcriptActions: TranscriptActions = { fork: (turn) => void forkAt(turn) };

interface SessionActions {
  open(id: string): void;
  remove(id: string): void;
}

function sessionItem(s: StoredSession, current: boolean, act: SessionActions): HTMLLIElement {
  const open = el('button', { type: 'button', class: 'open' }, s.title);
  if (current) open.setAttribute('aria-current', 'true');
  open.addEventListener('click', () => act.open(s.id));
  const del = el('button', { type: 'button', class: 'delete', 'aria-label': `Delete session ${s.title}` }, '×');
  del.addEventListener('click', () => act.remove(s.id));
  const note = s.forkedFrom ? el('span', { class: 'note' }, `fork at turn ${s.forkedFrom.turn}`) : '';
  return el('li', { 'data-session': s.id }, open, del, note);
}

export function renderSessions(): void {
  const act = { open: (id: string) => void openSession(id), remove: (id: string) => void removeSession(id) };
  ui.sessions.replaceChildren(...page.sessions.map((s) => sessionItem(s, s.id === page.settings.active, act)));
}

/** put `s` first in the list and make it the open one */
function addSession(s: StoredSession): void {
  page.sessions = [s, ...page.sessions.filter((x) => x.id !== s.id)];
  page.settings.active = s.id;
  persist();
}

/** a new server session with the system prompt of the settings */
export async function newSession(): Promise<StoredSession> {
  const { id } = await api.createSession(page.settings.system.trim() || undefined);
  const s: StoredSession = { id, title: 'New session', created: Date.now(), local: [], stats: {} };
  addSession(s);
  return s;
}

/** Open a session and show its transcript; one the server no longer has leaves the list. */
export async function openSession(id: string): Promise<void> {
  page.settings.active = id;
  persist();
  renderSessions();
  try {
    renderTranscript(await api.session(id), transcriptActions);
    status('');
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      page.sessions = page.sessions.filter((s) => s.id !== id);
      page.settings.active = null;
      persist();
      renderSessions();
      renderTranscript(null, transcriptActions);
    }
    status(`Could not open the session: ${errorMessage(e)}`, true);
  }
}

/** Delete on the server (already gone counts as deleted) and from the list. */
async function removeSession(id: string): Promise<void> {
  try {
    await api.deleteSession(id);
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 404)) return status(`Could not delete: ${errorMessage(e)}`, true);
  }
  page.sessions = page.sessions.filter((s) => s.id !== id);
  if (page.settings.active === id) {
    page.settings.active = null;
    renderTranscript(null, transcriptActions);
  }
  persist();
  renderSessions();
  status('Session deleted.');
}

/** A new session with the open one's turns 1..turn (and their stats), opened. */
async function forkAt(turn: number): Promise<void> {
  const from = active();
  if (!from) return;
  try {
    const { id } = await api.fork(from.id, turn);
    addSession({
      id,
      title: `${from.title} (fork)`,
      created: Date.now(),
      forkedFrom: { id: from.id, turn },
      local: [],
      stats: statsUpTo(from.stats, turn),
    });
    await openSession(id);
    status(`Forked at turn ${turn}.`);
  } catch (e) {
    status(`Could not fork: ${errorMessage(e)}`, true);
  }
}

export function bindNewSession(): void {
  $('new-session').addEventListener('click', () => {
    newSession()
      .then((s) => openSession(s.id))
      .catch((e: unknown) => status(`Could not create a session: ${errorMessage(e)}`, true));
  });
}
