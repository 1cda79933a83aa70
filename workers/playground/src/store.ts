// What the page keeps in localStorage: the settings and the list of sessions it made (the server has no
// "list my sessions" route), with the client-side measurements of each turn.

import type { ChatMessage } from './api.js';

/** One turn's numbers: tokens from the API's usage, times measured here, state size after the turn */
export interface TurnStats {
  promptTokens: number;
  cachedTokens: number;
  completionTokens: number;
  /** time to first token, ms (null: not measured in this browser, e.g. a resumed session's older turns) */
  ttftMs: number | null;
  /** completion tokens after the first / the time after the first token */
  tokensPerSecond: number | null;
  /** the session's snapshot bytes after this turn (GET /v1/sessions/:id state) */
  snapshotBytes: number | null;
}

export interface StoredSession {
  id: string;
  title: string;
  created: number;
  forkedFrom?: { id: string; turn: number };
  /** turns sent with tools (POST /v1/chat/completions): kept here, the session does not store them */
  local: ChatMessage[];
  /** "t<turn>" for session turns, "l<index of the assistant message in local>" for local ones */
  stats: Record<string, TurnStats>;
}

export interface Settings {
  apiKey: string;
  model: string;
  maxTokens: number;
  temperature: number;
  tools: string;
  toolChoice: string;
  system: string;
  active: string | null;
}

const SETTINGS_KEY = 'hymba-playground:settings';
const SESSIONS_KEY = 'hymba-playground:sessions';

export const DEFAULT_SETTINGS: Settings = {
  apiKey: '',
  model: '',
  maxTokens: 256,
  temperature: 0.7,
  tools: '',
  toolChoice: 'auto',
  system: '',
  active: null,
};

function read<T>(key: string, fallback: T): T {
  try {
    const raw = localStorage.getItem(key);
    return raw === null ? fallback : (JSON.parse(raw) as T);
  } catch {
    return fallback;
  }
}

export function loadSettings(): Settings {
  return { ...DEFAULT_SETTINGS, ...read<Partial<Settings>>(SETTINGS_KEY, {}) };
}

export function saveSettings(s: Settings): void {
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(s));
}

/** newest first */
export function loadSessions(): StoredSession[] {
  const list = read<StoredSession[]>(SESSIONS_KEY, []);
  return Array.isArray(list) ? list : [];
}

export function saveSessions(list: StoredSession[]): void {
  localStorage.setItem(SESSIONS_KEY, JSON.stringify(list));
}
