// The playground: chat with a session of the server (streamed), keep a list of sessions in localStorage,
// show each turn's numbers, fork, delete, and try function tools. Plain DOM; index.html holds the markup.

import { Api, ApiError, type ChatMessage, type SessionInfo, type Usage } from './api.js';
import { serverEngine, type Engine, type TurnInput } from './engine.js';
import { chooseExecutionProvider, LocalEngine } from './local-engine.js';
import { loadSessions, loadSettings, saveSessions, saveSettings, type StoredSession, type TurnStats } from './store.js';
import { $, el, formatBytes, messageItem, sessionItem, statsList, toolCallsBlock } from './view.js';

const settings = loadSettings();
let sessions = loadSessions();
const api = new Api(() => settings.apiKey);
/** the "Engine" select's values; an in-browser engine is registered here */
const ENGINES: Record<string, Engine> = { server: serverEngine(api) };
let running: AbortController | null = null;
/** the in-browser engine ("this browser"): loaded when first selected */
let local: LocalEngine | null = null;
let localLoading: Promise<LocalEngine> | null = null;

const ui = {
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

const TOOLS_EXAMPLE = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'The current weather in a city',
      parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 40 } }, required: ['city'] },
    },
  },
];

function status(text: string, error = false): void {
  ui.status.textContent = text;
  ui.status.classList.toggle('error', error);
  ui.status.setAttribute('role', error ? 'alert' : 'status');
}

const active = (): StoredSession | undefined => sessions.find((s) => s.id === settings.active);

function persist(): void {
  saveSettings(settings);
  saveSessions(sessions);
}

// ---- settings ----

function bindSettings(): void {
  ui.maxTokens.value = String(settings.maxTokens);
  ui.temperature.value = String(settings.temperature);
  ui.apiKey.value = settings.apiKey;
  ui.system.value = settings.system;
  ui.tools.value = settings.tools;
  ui.toolChoice.value = settings.toolChoice;
  const save = (): void => {
    settings.maxTokens = Math.max(1, Math.floor(Number(ui.maxTokens.value) || 1));
    settings.temperature = Math.max(0, Number(ui.temperature.value) || 0);
    settings.apiKey = ui.apiKey.value;
    settings.system = ui.system.value;
    settings.tools = ui.tools.value;
    settings.toolChoice = ui.toolChoice.value;
    settings.model = ui.model.value;
    persist();
  };
  for (const input of [ui.maxTokens, ui.temperature, ui.apiKey, ui.system, ui.tools, ui.toolChoice, ui.model]) {
    input.addEventListener('input', save);
    input.addEventListener('change', save);
  }
  ui.apiKey.addEventListener('change', () => void loadModels());
  $('tools-example').addEventListener('click', () => {
    ui.tools.value = JSON.stringify(TOOLS_EXAMPLE, null, 2);
    save();
  });
}

async function loadModels(): Promise<void> {
  try {
    const { data } = await api.models();
    ui.model.replaceChildren(...data.map((m) => el('option', { value: m.id }, m.id)));
    if (data.some((m) => m.id === settings.model)) ui.model.value = settings.model;
    settings.model = ui.model.value;
  } catch (e) {
    status(`Could not list the models: ${message(e)}`, true);
  }
}

/** The tools textarea: null when empty, else a JSON array (a clear error otherwise). */
function toolsOf(): unknown[] | null {
  const text = ui.tools.value.trim();
  if (!text) return null;
  const tools: unknown = JSON.parse(text);
  if (!Array.isArray(tools)) throw new Error('Tools must be a JSON array of {type: "function", function: {...}}');
  return tools.length > 0 ? tools : null;
}

// ---- sessions ----

function renderSessions(): void {
  const act = { open: (id: string) => void openSession(id), remove: (id: string) => void removeSession(id) };
  ui.sessions.replaceChildren(...sessions.map((s) => sessionItem(s, s.id === settings.active, act)));
}

function addSession(s: StoredSession): void {
  sessions = [s, ...sessions.filter((x) => x.id !== s.id)];
  settings.active = s.id;
  persist();
}

async function newSession(): Promise<StoredSession> {
  const { id } = await api.createSession(settings.system.trim() || undefined);
  const s: StoredSession = { id, title: 'New session', created: Date.now(), local: [], stats: {} };
  addSession(s);
  return s;
}

async function openSession(id: string): Promise<void> {
  settings.active = id;
  persist();
  renderSessions();
  try {
    renderTranscript(await api.session(id));
    status('');
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      sessions = sessions.filter((s) => s.id !== id);
      settings.active = null;
      persist();
      renderSessions();
      renderTranscript(null);
    }
    status(`Could not open the session: ${message(e)}`, true);
  }
}

async function removeSession(id: string): Promise<void> {
  try {
    await api.deleteSession(id);
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 404)) return status(`Could not delete: ${message(e)}`, true);
  }
  sessions = sessions.filter((s) => s.id !== id);
  if (settings.active === id) {
    settings.active = null;
    renderTranscript(null);
  }
  persist();
  renderSessions();
  status('Session deleted.');
}

async function forkAt(turn: number): Promise<void> {
  const from = active();
  if (!from) return;
  try {
    const { id } = await api.fork(from.id, turn);
    const stats = Object.fromEntries(
      Object.entries(from.stats).filter(([k]) => k.startsWith('t') && +k.slice(1) <= turn),
    );
    addSession({
      id,
      title: `${from.title} (fork)`,
      created: Date.now(),
      forkedFrom: { id: from.id, turn },
      local: [],
      stats,
    });
    await openSession(id);
    status(`Forked at turn ${turn}.`);
  } catch (e) {
    status(`Could not fork: ${message(e)}`, true);
  }
}

// ---- transcript ----

function renderTranscript(info: SessionInfo | null): void {
  const s = active();
  ui.transcript.replaceChildren();
  updateHandoff();
  ui.title.textContent = s ? s.title : 'No session';
  ui.state.textContent = '';
  if (!s || !info) return;
  showState(info);
  for (const m of info.messages) {
    const item = messageItem(m, `t${m.turn}`);
    if (m.role === 'assistant') decorateTurn(item, s, m.turn, info);
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
function decorateTurn(item: HTMLElement, s: StoredSession, turn: number, info: SessionInfo): void {
  item.dataset.turn = String(turn);
  const record = info.turns.find((t) => t.turn === turn);
  const stats: TurnStats | undefined =
    s.stats[`t${turn}`] ??
    (record && {
      promptTokens: record.promptTokens,
      cachedTokens: record.cachedTokens,
      completionTokens: record.completionTokens,
      ttftMs: null,
      tokensPerSecond: null,
      snapshotBytes: null,
    });
  if (stats) item.append(statsList(stats));
  const fork = el('button', { type: 'button', class: 'fork' }, `Fork at turn ${turn}`);
  fork.addEventListener('click', () => void forkAt(turn));
  item.append(fork);
}

function showState(info: SessionInfo): void {
  const st = info.state;
  ui.state.textContent = `${info.turns.length} turns · state after ${st.tokens} tokens · ${st.snapshots} snapshots, ${formatBytes(st.snapshot_bytes)}`;
}

// ---- a turn ----

async function send(content: string): Promise<void> {
  const session = active() ?? (await newSession());
  if (session.title === 'New session') session.title = content.slice(0, 40) || 'Untitled';
  renderSessions();
  ui.title.textContent = session.title;
  const input: TurnInput = {
    sessionId: session.id,
    model: ui.model.value,
    content,
    history: await historyOf(session),
    tools: toolsOf(),
    toolChoice: ui.toolChoice.value,
    maxTokens: settings.maxTokens,
    temperature: settings.temperature,
  };
  const engine = ui.engine.value === 'browser' ? await ensureLocal() : (ENGINES[ui.engine.value] ?? ENGINES.server!);
  if (engine !== local && (local?.localState(session.id)?.localTurns ?? 0) > 0) {
    ui.message.value = content;
    return status('This session has turns that ran in this browser: send them back to the server first.', true);
  }
  // a server turn moves the session on: a state continued here earlier is stale from now on
  if (engine !== local) local?.forget(session.id);
  ui.transcript.append(messageItem({ role: 'user', content }, 'pending'));
  const reply = messageItem({ role: 'assistant', content: '' }, 'pending');
  reply.dataset.streaming = 'true';
  ui.transcript.append(reply);
  reply.scrollIntoView({ block: 'end' });
  const result = await streamInto(engine, input, reply);
  delete reply.dataset.streaming;
  if (!result) return;
  await finishTurn(session, engine.storesTurn(input), input, reply, result);
  if (engine === local) showLocal();
  updateHandoff();
}

/** the conversation so far, for the tools path (which sends whole histories) */
async function historyOf(s: StoredSession): Promise<ChatMessage[]> {
  if (toolsOf() === null) return [];
  const info = await api.session(s.id);
  return [...info.messages.map(({ turn: _turn, ...m }) => m), ...s.local];
}

interface StreamResult {
  text: string;
  toolCalls: ChatMessage['tool_calls'];
  usage: Usage | null;
  ttftMs: number | null;
  tokensPerSecond: number | null;
}

/** Run the turn, rendering each delta into `reply` as it arrives; null when it failed or was stopped. */
async function streamInto(engine: Engine, input: TurnInput, reply: HTMLElement): Promise<StreamResult | null> {
  const content = reply.querySelector<HTMLElement>('.content')!;
  const result: StreamResult = { text: '', toolCalls: undefined, usage: null, ttftMs: null, tokensPerSecond: null };
  running = new AbortController();
  setBusy(true);
  const t0 = performance.now();
  let tFirst: number | null = null;
  let textEvents = 0;
  try {
    for await (const ev of engine.turn(input, running.signal)) {
      if ((ev.type === 'text' || ev.type === 'tool_calls') && tFirst === null) tFirst = performance.now();
      if (ev.type === 'text') {
        content.textContent = result.text += ev.text;
        textEvents++;
      } else if (ev.type === 'tool_calls') reply.append(toolCallsBlock((result.toolCalls = ev.calls)));
      else if (ev.type === 'usage') result.usage = ev.usage;
    }
    const tEnd = performance.now();
    const n = result.usage?.completion_tokens ?? 0;
    result.ttftMs = tFirst === null ? null : Math.round(tFirst - t0);
    // the decode rate after the first token, when the reply streamed (a held-back tool call arrives at once)
    const streamed = tFirst !== null && n > 1 && textEvents * 2 >= n && tEnd > tFirst;
    result.tokensPerSecond = streamed ? ((n - 1) * 1000) / (tEnd - tFirst!) : null;
    return result;
  } catch (e) {
    reply.classList.add('failed');
    status(running.signal.aborted ? 'Stopped.' : `The turn failed: ${message(e)}`, !running.signal.aborted);
    return null;
  } finally {
    running = null;
    setBusy(false);
  }
}

async function finishTurn(
  s: StoredSession,
  stored: boolean,
  input: TurnInput,
  reply: HTMLElement,
  r: StreamResult,
): Promise<void> {
  const info = stored ? await api.session(s.id) : null;
  const stats: TurnStats = {
    promptTokens: r.usage?.prompt_tokens ?? 0,
    cachedTokens: r.usage?.prompt_tokens_details?.cached_tokens ?? 0,
    completionTokens: r.usage?.completion_tokens ?? 0,
    ttftMs: r.ttftMs,
    tokensPerSecond: r.tokensPerSecond,
    snapshotBytes: info ? info.state.snapshot_bytes : null,
  };
  const question = reply.previousElementSibling as HTMLElement | null;
  if (info) {
    // the streamed element stays (no re-render, so screen readers do not hear the transcript again)
    const turn = info.turns.at(-1)?.turn ?? 0;
    s.stats[`t${turn}`] = stats;
    persist();
    if (question) question.dataset.key = `t${turn}`;
    reply.dataset.key = `t${turn}`;
    decorateTurn(reply, s, turn, info);
    showState(info);
  } else {
    s.local.push({ role: 'user', content: input.content });
    s.local.push({ role: 'assistant', content: r.text || null, ...(r.toolCalls ? { tool_calls: r.toolCalls } : {}) });
    s.stats[`l${s.local.length - 1}`] = stats;
    persist();
    if (question) question.dataset.key = `l${s.local.length - 2}`;
    reply.dataset.key = `l${s.local.length - 1}`;
    reply.append(statsList(stats));
  }
  status('');
}

function setBusy(busy: boolean): void {
  ui.transcript.setAttribute('aria-busy', String(busy));
  ui.send.disabled = busy;
  ui.stop.disabled = !busy;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

// ---- the in-browser engine and session handoff ----

/** Load the engine into this page once: ORT (WebGPU when there is an adapter, else WASM) and the served model. */
function ensureLocal(): Promise<LocalEngine> {
  localLoading ??= (async () => {
    const ep = await chooseExecutionProvider();
    ui.localInfo.textContent = `This browser: loading the model (${ep})...`;
    const engine = await LocalEngine.load(api, ep);
    ENGINES.browser = local = engine;
    showLocal();
    updateHandoff();
    return engine;
  })();
  localLoading.catch((e: unknown) => {
    localLoading = null;
    ui.localInfo.textContent = '';
    status(`The in-browser engine could not load: ${message(e)}`, true);
  });
  return localLoading;
}

/** Which EP runs, the load time, the last local turn's decode rate, the last handoff. */
function showLocal(): void {
  if (!local) return;
  const parts = [`This browser: ${local.ep}`, `model loaded in ${Math.round(local.loadMs)} ms`];
  const t = local.lastTurn;
  ui.localInfo.dataset.ep = local.ep;
  if (t?.decodeTokensPerSecond) {
    parts.push(`decode ${t.decodeTokensPerSecond.toFixed(1)} tokens/s`);
    ui.localInfo.dataset.tps = t.decodeTokensPerSecond.toFixed(2);
  }
  const h = local.lastHandoff;
  if (h)
    parts.push(`last handoff: ${h.direction} ${formatBytes(h.bytes)} (${h.tokens} tokens) in ${Math.round(h.ms)} ms`);
  ui.localInfo.textContent = parts.join(' · ');
}

/** The handoff buttons: with "this browser" selected and a session open; send back once a local turn ran. */
function updateHandoff(): void {
  const s = active();
  const browser = ui.engine.value === 'browser' && local !== null && s !== undefined;
  ui.continueHere.hidden = !browser;
  ui.sendBack.hidden = !(browser && (local!.localState(s.id)?.localTurns ?? 0) > 0);
}

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
    local?.forget(s.id);
    updateHandoff();
    status(`Could not continue in this browser: ${message(e)}`, true);
  }
}

async function sendBack(): Promise<void> {
  const s = active();
  if (!s || !local) return;
  const turns = local.localState(s.id)?.localTurns ?? 0;
  try {
    status('Sending the session state back...');
    const h = await local.sendBack(s.id);
    // the local turns are the server's now: drop their page-side copies (they were the last ones added)
    const keep = s.local.length - 2 * turns;
    for (let i = keep; i < s.local.length; i++) delete s.stats[`l${i}`];
    s.local = s.local.slice(0, Math.max(0, keep));
    persist();
    showLocal();
    await openSession(s.id);
    updateHandoff();
    status(
      `Sent back: the server session continues from turn ${h.serverTurn} (${formatBytes(h.bytes)} in ${Math.round(h.ms)} ms).`,
    );
  } catch (e) {
    status(`Could not send the session back: ${message(e)}`, true);
  }
}

// ---- start ----

ui.composer.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const content = ui.message.value.trim();
  if (!content || running) return;
  ui.message.value = '';
  send(content).catch((e: unknown) => status(message(e), true));
});
ui.message.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    ui.composer.requestSubmit();
  }
});
ui.stop.addEventListener('click', () => running?.abort());
ui.engine.addEventListener('change', () => {
  updateHandoff();
  if (ui.engine.value === 'browser') void ensureLocal().catch(() => undefined);
});
ui.continueHere.addEventListener('click', () => void continueHere());
ui.sendBack.addEventListener('click', () => void sendBack());
/** test hook (tests/browser): the in-browser engine, once loaded */
(window as unknown as { hymbaLocal: () => LocalEngine | null }).hymbaLocal = () => local;
$('new-session').addEventListener('click', () => {
  newSession()
    .then((s) => openSession(s.id))
    .catch((e: unknown) => status(`Could not create a session: ${message(e)}`, true));
});

bindSettings();
renderSessions();
void loadModels();
if (settings.active) void openSession(settings.active);
