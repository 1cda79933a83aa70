// What every part of the page shares: the settings and the session list (kept in localStorage), the API
// client, the page's elements by id (index.html holds the markup), and the status line.

import { Api } from './api.js';
import { loadSessions, loadSettings, saveSessions, saveSettings, type StoredSession } from './store.js';
import { $ } from './view.js';

export const page = {
  settings: loadSettings(),
  /** newest first; replaced (not edited in place) when a session is added or removed */
  sessions: loadSessions(),
};

export const api = new Api(() => page.settings.apiKey);

export const ui = {
  model: $<HTMLSelectElement>('model'),
  engine: $<HTMLSelectElement>('engine'),
  maxTokens: $<HTMLInputElement>('max-tokens'),
  temperature: $<HTMLInputElement>('temperature'),
  apiKey: $<HTMLInputElement>('api-key'),
  system: $<HTMLTextAreaElement>('system'),
  sessions: $<HTMLUListElement>('sessions'),
  title: $<HTMLHeadingElement>('session-title'),
  state: $<HTMLParagraphElement>('session-state'),
  transcript: $<HTMLOListElement>('transcript'),
  composer: $<HTMLFormElement>('composer'),
  message: $<HTMLTextAreaElement>('message'),
  send: $<HTMLButtonElement>('send'),
  stop: $<HTMLButtonElement>('stop'),
  status: $<HTMLParagraphElement>('status'),
  tools: $<HTMLTextAreaElement>('tools'),
  toolChoice: $<HTMLSelectElement>('tool-choice'),
  localInfo: $<HTMLParagraphElement>('local-engine'),
  continueHere: $<HTMLButtonElement>('continue-here'),
  sendBack: $<HTMLButtonElement>('send-back'),
};

/** The status line; an error is announced at once (role=alert), anything else politely. */
export function status(text: string, error = false): void {
  ui.status.textContent = text;
  ui.status.classList.toggle('error', error);
  ui.status.setAttribute('role', error ? 'alert' : 'status');
}

/** the open session, if any */
export const active = (): StoredSession | undefined => page.sessions.find((s) => s.id === page.settings.active);

export function persist(): void {
  saveSettings(page.settings);
  saveSessions(page.sessions);
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
