// The plan in words: stage labels ("0-3 +embed", "5.mlp 2/3") and the sentences that say why stages are
// over budget, the way `hymba plan` and `hymba convert --budget-mb` print them.

import type { HymbaDims } from '../model/config.js';
import { stageUnits, type StageSpec } from './stage-spec.js';
import { MB, RUN_STATE_COPIES, stageContent } from './memory.js';
import { stagePlan, type Resolved, type StagePlan } from './estimate.js';
import { atomicUnits, embedAloneSpec, headAloneSpec, sliceKey, type PlanUnit } from './packing.js';

const mb = (bytes: number): string => `${Math.round(bytes / MB)} MB`;
const unitText = (u: PlanUnit): string => (u.last - u.first === 1 ? `${u.first}` : `${u.first}-${u.last - 1}`);
const list = (xs: number[]): string => xs.join(', ');

/** "0-3", "1.mlp", "1.mlp, 2-3, 4.mixer": a sublayer range by whole layers where it can. */
function unitsText(from: number, to: number): string {
  const parts: string[] = [];
  let a = from;
  let b = to;
  if (a % 2 === 1 && a < b) {
    parts.push(`${(a - 1) / 2}.mlp`);
    a++;
  }
  const tail = b % 2 === 1 && b > a ? `${(b - 1) / 2}.mixer` : null;
  if (tail) b--;
  if (b > a) parts.push(unitText({ first: a / 2, last: b / 2 }));
  if (tail) parts.push(tail);
  return parts.join(', ');
}

/** "0-3 +embed +head", "2.mixer +embed", "5.mlp 2/3", "embed 1/2", "3.mixer mirrors 2" */
export function stageLabel(s: StageSpec): string {
  if (s.slice) {
    const part = `${s.slice.part + 1}/${s.slice.parts}`;
    return s.slice.kind === 'mlp' ? `${s.slice.layer}.mlp ${part}` : `${s.slice.kind} ${part}`;
  }
  const { from, to } = stageUnits(s);
  const body = to > from ? unitsText(from, to) : '';
  const extras = [s.embed ? '+embed' : '', s.head ? '+head' : ''].filter(Boolean).join(' ');
  const mirrors = s.kvIn && s.kvIn.length > 0 ? ` mirrors ${list(s.kvIn)}` : '';
  return `${[body, extras].filter(Boolean).join(' ')}${mirrors}`;
}

// ---------------------------------------------------------------- why stages are over budget

/** One sentence for units over budget that need the same memory: "layers 1-2, 3-4 (KV groups) need ~428 MB each". */
function unitsSentence(units: PlanUnit[], need: number, r: Resolved): string {
  const grouped = units.some((u) => u.last - u.first > 1);
  const tail = `at ${r.dtype}: over the ${r.budgetBytes / MB} MB budget`;
  if (units.length === 1) {
    const what = grouped ? `layers ${unitText(units[0]!)} (one KV group) need` : `layer ${unitText(units[0]!)} needs`;
    return `${what} ~${mb(need)} ${tail}; it would need splitting into layer slices`;
  }
  const what = `layers ${units.map(unitText).join(', ')}${grouped ? ' (KV groups)' : ''}`;
  return `${what} need ~${mb(need)} each ${tail}; each would need splitting into layer slices`;
}

/** Whole-layer units over budget on their own, grouped by what they need (a 1.5B model has many alike). */
function unitsOverBudget(d: HymbaDims, r: Resolved): Map<string, { need: number; units: PlanUnit[] }> {
  const over = new Map<string, { need: number; units: PlanUnit[] }>();
  for (const u of atomicUnits(d)) {
    const need = stagePlan(d, { ...u, embed: false, head: false }, r).estimatedBytes;
    if (need <= r.budgetBytes) continue;
    const key = mb(need);
    const entry = over.get(key) ?? { need, units: [] };
    entry.units.push(u);
    over.set(key, entry);
  }
  return over;
}

/** Sentences naming what cannot fit the budget even alone (whole layers), then any other over-budget stage. */
export function layerProblems(d: HymbaDims, stages: StagePlan[], r: Resolved): string[] {
  const out: string[] = [];
  const budget = `over the ${r.budgetBytes / MB} MB budget`;
  const embedAlone = stagePlan(d, embedAloneSpec(), r).estimatedBytes;
  const headAlone = stagePlan(d, headAloneSpec(d), r).estimatedBytes;
  if (embedAlone > r.budgetBytes)
    out.push(
      `the embedding (${d.V} x ${d.H} table${d.M > 0 ? ` + ${d.M} meta tokens` : ''}) needs ~${mb(embedAlone)} at ${r.dtype}: ${budget}; it would need splitting into vocabulary slices`,
    );
  if (headAlone > r.budgetBytes)
    out.push(
      `the head (tied ${d.V} x ${d.H} table) needs ~${mb(headAlone)} at ${r.dtype}: ${budget}; it would need splitting into vocabulary slices`,
    );
  const over = unitsOverBudget(d, r);
  for (const { need, units } of over.values()) out.push(unitsSentence(units, need, r));
  const overUnits = [...over.values()].flatMap((e) => e.units);
  for (const [k, s] of stages.entries()) {
    if (!s.overBudget) continue;
    const explained =
      (s.embed && embedAlone > r.budgetBytes) ||
      (s.head && headAlone > r.budgetBytes) ||
      overUnits.some((u) => u.first >= s.first && u.last <= s.last);
    if (!explained)
      out.push(
        `stage ${k} (${stageLabel(s)}) needs ~${mb(s.estimatedBytes)}: ${budget}; its parts fit alone but not together`,
      );
  }
  return out;
}

/** Sentences for a sub-layer plan: mixers over budget (grouped), slices that do not fit, anything else. */
export function unitProblems(d: HymbaDims, stages: StagePlan[], r: Resolved): string[] {
  const out: string[] = [];
  const budget = `over the ${r.budgetBytes / MB} MB budget`;
  const over = new Map<string, { need: number; state: number; layers: number[] }>();
  const done = new Set<string>();
  for (const [k, s] of stages.entries()) {
    if (!s.overBudget) continue;
    const c = stageContent(d, s);
    if (!s.slice && c.mixers.length === 1 && c.mlps.length === 0 && c.embedRows === 0 && c.headRows === 0) {
      const key = mb(s.estimatedBytes);
      const entry = over.get(key) ?? { need: s.estimatedBytes, state: s.stateBytesPerSession, layers: [] };
      entry.layers.push(c.mixers[0]!);
      over.set(key, entry);
    } else if (s.slice) {
      const key = sliceKey(s)!;
      if (done.has(key)) continue;
      done.add(key);
      const what =
        s.slice.kind === 'mlp'
          ? `the MLP of layer ${s.slice.layer}`
          : `the ${s.slice.kind === 'embed' ? 'embedding' : 'head'}`;
      out.push(`${what} does not fit even in ${s.slice.parts} slices (~${mb(s.estimatedBytes)} each): ${budget}`);
    } else
      out.push(
        `stage ${k} (${stageLabel(s)}) needs ~${mb(s.estimatedBytes)}: ${budget}; its parts fit alone but not together`,
      );
  }
  for (const { need, state, layers } of over.values()) {
    const what =
      layers.length === 1 ? `the mixer of layer ${layers[0]} needs` : `the mixers of layers ${list(layers)} need`;
    const each = layers.length === 1 ? '' : ' each';
    out.push(
      `${what} ~${mb(need)}${each} at ${r.dtype} (of which ${mb((RUN_STATE_COPIES + r.hotSessions) * state)} session state at ${r.contextTokens} tokens): ${budget}; mixer blocks are not sliced (attention heads and SSM channels could be)`,
    );
  }
  return out;
}
