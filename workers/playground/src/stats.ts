// Per-turn numbers: tokens from the API's usage, time to first token and decode rate measured in this page,
// the session's snapshot bytes after the turn; and their description list under each reply.

import type { TurnRecord, Usage } from './api.js';
import type { TurnEvent } from './engine.js';
import type { TurnStats } from './store.js';
import { el, formatBytes } from './view.js';

/** What this page measures of one streamed reply. */
export interface ReplyTiming {
  ttftMs: number | null;
  tokensPerSecond: number | null;
}

/** Times one reply: started when the turn is sent, told of each event as it arrives. */
export class ReplyTimer {
  private readonly t0 = performance.now();
  private tFirst: number | null = null;
  private textEvents = 0;

  saw(ev: TurnEvent): void {
    if ((ev.type === 'text' || ev.type === 'tool_calls') && this.tFirst === null) this.tFirst = performance.now();
    if (ev.type === 'text') this.textEvents++;
  }

  /** at the end of the stream, with the usage's completion tokens */
  finish(completionTokens: number): ReplyTiming {
    const tEnd = performance.now();
    const n = completionTokens;
    const tFirst = this.tFirst;
    // the decode rate after the first token, when the reply streamed (a held-back tool call arrives at once)
    const streamed = tFirst !== null && n > 1 && this.textEvents * 2 >= n && tEnd > tFirst;
    return {
      ttftMs: tFirst === null ? null : Math.round(tFirst - this.t0),
      tokensPerSecond: streamed ? ((n - 1) * 1000) / (tEnd - tFirst) : null,
    };
  }
}

/** a turn run from this page: its usage, its timing, the snapshot bytes after it (null: not stored) */
export function measuredStats(usage: Usage | null, timing: ReplyTiming, snapshotBytes: number | null): TurnStats {
  return {
    promptTokens: usage?.prompt_tokens ?? 0,
    cachedTokens: usage?.prompt_tokens_details?.cached_tokens ?? 0,
    completionTokens: usage?.completion_tokens ?? 0,
    ttftMs: timing.ttftMs,
    tokensPerSecond: timing.tokensPerSecond,
    snapshotBytes,
  };
}

/** a turn the API recorded but this page did not measure (e.g. a session opened in another browser) */
export function recordedStats(record: TurnRecord): TurnStats {
  return {
    promptTokens: record.promptTokens,
    cachedTokens: record.cachedTokens,
    completionTokens: record.completionTokens,
    ttftMs: null,
    tokensPerSecond: null,
    snapshotBytes: null,
  };
}

/** the stats of session turns 1..turn (what a fork at `turn` inherits) */
export function statsUpTo(stats: Record<string, TurnStats>, turn: number): Record<string, TurnStats> {
  return Object.fromEntries(Object.entries(stats).filter(([k]) => k.startsWith('t') && +k.slice(1) <= turn));
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

/** the raw number behind a row (data-value), '' when not measured */
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
