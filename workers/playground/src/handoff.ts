// Session handoff between the server and the in-browser engine: "Continue in this browser" downloads the
// session's state and runs the next turns here; "Send back to the server" uploads the state those turns made.

import { ensureLocal, localEngine, showLocal, updateHandoff } from './engine-switch.js';
import { active, errorMessage, persist, status, ui } from './page.js';
import { openSession } from './sessions.js';
import type { StoredSession } from './store.js';
import { formatBytes } from './view.js';

async function continueHere(): Promise<void> {
  const s = active();
  if (!s) return;
  try {
    const engine = await ensureLocal();
    status('Downloading the session state...');
    const h = await engine.continueHere(s.id);
    showLocal();
    updateHandoff();
    status(
      `Continued in this browser from turn ${h.turn}: ${h.tokens} tokens of state (${formatBytes(h.bytes)}) in ${Math.round(h.ms)} ms.`,
    );
  } catch (e) {
    localEngine()?.forget(s.id);
    updateHandoff();
    status(`Could not continue in this browser: ${errorMessage(e)}`, true);
  }
}

async function sendBack(): Promise<void> {
  const s = active();
  const local = localEngine();
  if (!s || !local) return;
  const turns = local.localState(s.id)?.localTurns ?? 0;
  try {
    status('Sending the session state back...');
    const h = await local.sendBack(s.id);
    dropLocalTurns(s, turns);
    persist();
    showLocal();
    await openSession(s.id);
    updateHandoff();
    status(
      `Sent back: the server session continues from turn ${h.serverTurn} (${formatBytes(h.bytes)} in ${Math.round(h.ms)} ms).`,
    );
  } catch (e) {
    status(`Could not send the session back: ${errorMessage(e)}`, true);
  }
}

/** the local turns are the server's now: drop their page-side copies (they were the last ones added) */
function dropLocalTurns(s: StoredSession, turns: number): void {
  const keep = s.local.length - 2 * turns;
  for (let i = keep; i < s.local.length; i++) delete s.stats[`l${i}`];
  s.local = s.local.slice(0, Math.max(0, keep));
}

export function bindHandoff(): void {
  ui.continueHere.addEventListener('click', () => void continueHere());
  ui.sendBack.addEventListener('click', () => void sendBack());
}
