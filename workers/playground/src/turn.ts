// One turn in the conversation: the composer sends the message to the selected engine, the reply streams
// into the transcript as it is produced, then the turn is stored with its numbers (in the server session,
// or in this page for tools turns and turns run in this browser). Stop aborts the stream.

import type { ChatMessage, Usage } from './api.js';
import type { Engine, TurnInput } from './engine.js';
import { localEngine, selectedEngine, showLocal, updateHandoff } from './engine-switch.js';
import { active, api, errorMessage, page, persist, status, ui } from './page.js';
import { newSession, renderSessions, transcriptActions } from './sessions.js';
import { measuredStats, ReplyTimer, statsList, type ReplyTiming } from './stats.js';
import type { StoredSession } from './store.js';
import { toolsOf } from './tools.js';
import { decorateTurn, showState } from './transcript.js';
import { messageItem, toolCallsBlock } from './view.js';

/** the turn in flight (Stop aborts it); one at a time */
let running: AbortController | null = null;

interface StreamResult {
  text: string;
  toolCalls: ChatMessage['tool_calls'];
  usage: Usage | null;
  timing: ReplyTiming;
}

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
    maxTokens: page.settings.maxTokens,
    temperature: page.settings.temperature,
  };
  const engine = await selectedEngine();
  const local = localEngine();
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

/** Run the turn, rendering each delta into `reply` as it arrives; null when it failed or was stopped. */
async function streamInto(engine: Engine, input: TurnInput, reply: HTMLElement): Promise<StreamResult | null> {
  const content = reply.querySelector<HTMLElement>('.content')!;
  let text = '';
  let toolCalls: ChatMessage['tool_calls'];
  let usage: Usage | null = null;
  running = new AbortController();
  setBusy(true);
  const timer = new ReplyTimer();
  try {
    for await (const ev of engine.turn(input, running.signal)) {
      timer.saw(ev);
      if (ev.type === 'text') content.textContent = text += ev.text;
      else if (ev.type === 'tool_calls') reply.append(toolCallsBlock((toolCalls = ev.calls)));
      else if (ev.type === 'usage') usage = ev.usage;
    }
    return { text, toolCalls, usage, timing: timer.finish(usage?.completion_tokens ?? 0) };
  } catch (e) {
    reply.classList.add('failed');
    status(running.signal.aborted ? 'Stopped.' : `The turn failed: ${errorMessage(e)}`, !running.signal.aborted);
    return null;
  } finally {
    running = null;
    setBusy(false);
  }
}

/** Keep the turn and its numbers: a stored turn under its session turn number, else in the page's list. */
async function finishTurn(
  s: StoredSession,
  stored: boolean,
  input: TurnInput,
  reply: HTMLElement,
  r: StreamResult,
): Promise<void> {
  const info = stored ? await api.session(s.id) : null;
  const stats = measuredStats(r.usage, r.timing, info ? info.state.snapshot_bytes : null);
  const question = reply.previousElementSibling as HTMLElement | null;
  if (info) {
    // the streamed element stays (no re-render, so screen readers do not hear the transcript again)
    const turn = info.turns.at(-1)?.turn ?? 0;
    s.stats[`t${turn}`] = stats;
    persist();
    if (question) question.dataset.key = `t${turn}`;
    reply.dataset.key = `t${turn}`;
    decorateTurn(reply, s, turn, info, transcriptActions);
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

/** Send on submit (Enter without Shift, outside an IME composition), Stop aborts. */
export function bindComposer(): void {
  ui.composer.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const content = ui.message.value.trim();
    if (!content || running) return;
    ui.message.value = '';
    send(content).catch((e: unknown) => status(errorMessage(e), true));
  });
  ui.message.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      ui.composer.requestSubmit();
    }
  });
  ui.stop.addEventListener('click', () => running?.abort());
}
