// The packing of units into stages, greedily in model order, each stage growing while its estimate fits.
//
// Two granularities. Whole layers first: consecutive layer ranges, KV reuse groups kept together. When
// that cannot fit, sub-layer units: the embedding, each layer's mixer block (attention + SSM) and MLP
// block, the head; a consumer's mixer away from its producer's mirrors the producer's K/V; an MLP, the
// embedding or the head that does not fit alone is cut into slices that run in parallel.

import type { HymbaDims } from '../model/config.js';
import { stageUnits, type StageSpec } from './stage-spec.js';
import { stagePlan, type Resolved } from './estimate.js';

/** The most slices an MLP block, the embedding or the head is cut into before the planner gives up. */
export const MAX_SLICES = 64;

// ---------------------------------------------------------------- whole layers

/** Layers [first, last) that must share a stage: a KV reuse group with everything between its members. */
export interface PlanUnit {
  first: number;
  last: number;
}

/** Layers in order, grouped so that no consumer is separated from its KV producer (checkStage's rule). */
export function atomicUnits(d: HymbaDims): PlanUnit[] {
  const units: PlanUnit[] = [];
  for (let i = 0; i < d.L; i++) {
    const kv = d.layers[i]!.kv;
    let first = kv.kind === 'consumer' ? kv.producer : i;
    // a consumer pulls every unit from its producer on into its own
    while (units.length > 0 && units[units.length - 1]!.last > first) first = Math.min(first, units.pop()!.first);
    units.push({ first, last: i + 1 });
  }
  return units;
}

/** The whole embedding alone: a stage of one slice in one part. */
export const embedAloneSpec = (): StageSpec => ({
  first: 0,
  last: 0,
  embed: false,
  head: false,
  slice: { kind: 'embed', part: 0, parts: 1 },
});
/** The whole head alone: a stage of one slice in one part. */
export const headAloneSpec = (d: HymbaDims): StageSpec => ({
  first: d.L,
  last: d.L,
  embed: false,
  head: false,
  slice: { kind: 'head', part: 0, parts: 1 },
});

/** The largest stage any whole-layer plan needs: each unit alone, the first with the embedding, the last with the head. */
export function layerMinBudgetBytes(d: HymbaDims, r: Resolved): number {
  const units = atomicUnits(d);
  return Math.max(
    ...units.map((u, k) => stagePlan(d, { ...u, embed: k === 0, head: k === units.length - 1 }, r).estimatedBytes),
  );
}

/**
 * Pack consecutive KV-group units greedily: a stage grows while its estimate stays within the budget. The
 * embedding rides on stage 0 and the head on the last stage; a unit that does not fit even alone gets a
 * stage of its own, marked over budget.
 */
export function layerSpecs(d: HymbaDims, r: Resolved): StageSpec[] {
  const units = atomicUnits(d);
  const done: StageSpec[] = [];
  let cur: StageSpec | null = null;
  for (const [k, u] of units.entries()) {
    const head = k === units.length - 1;
    if (cur !== null) {
      const grown: StageSpec = { first: cur.first, last: u.last, embed: cur.embed, head };
      if (!stagePlan(d, grown, r).overBudget) {
        cur = grown;
        continue;
      }
      done.push(cur);
    }
    cur = { ...u, embed: done.length === 0, head };
  }
  done.push(cur!);
  return done;
}

// ---------------------------------------------------------------- sub-layer units

/** A unit of the sub-layer plan, in model order. */
type SubUnit = { kind: 'embed' } | { kind: 'mixer'; layer: number } | { kind: 'mlp'; layer: number } | { kind: 'head' };

/** The embedding, each layer's mixer and MLP block, the head. */
function subUnits(d: HymbaDims): SubUnit[] {
  const out: SubUnit[] = [{ kind: 'embed' }];
  for (let i = 0; i < d.L; i++) out.push({ kind: 'mixer', layer: i }, { kind: 'mlp', layer: i });
  out.push({ kind: 'head' });
  return out;
}

/** A stage being packed: the whole embedding, sublayers [from, to), the whole head. */
interface Packing {
  embed: boolean;
  from: number;
  to: number;
  head: boolean;
}

/** The producers whose mixers run elsewhere while a consumer's runs in [from, to). */
function mirrored(d: HymbaDims, from: number, to: number): number[] {
  const out = new Set<number>();
  for (let u = from + (from % 2); u < to; u += 2) {
    const kv = d.layers[u / 2]!.kv;
    if (kv.kind === 'consumer' && !(2 * kv.producer >= from && 2 * kv.producer < to)) out.add(kv.producer);
  }
  return [...out].sort((a, b) => a - b);
}

/** The stage spec of a packing: the embedding or head alone as a one-part slice, else its sublayers and mirrors. */
function packedSpec(d: HymbaDims, p: Packing): StageSpec {
  if (p.to === p.from && !p.head) return embedAloneSpec();
  if (p.to === p.from && !p.embed) return headAloneSpec(d);
  const kvIn = mirrored(d, p.from, p.to);
  return {
    first: Math.floor(p.from / 2),
    last: Math.ceil(p.to / 2),
    embed: p.embed,
    head: p.head,
    units: { from: p.from, to: p.to },
    ...(kvIn.length > 0 ? { kvIn } : {}),
  };
}

/** The packing with unit u (at sublayer `at`) added, or u alone when there is none. */
function grow(p: Packing | null, u: SubUnit, at: number): Packing {
  const base = p ?? { embed: false, from: at, to: at, head: false };
  switch (u.kind) {
    case 'embed':
      return { ...base, embed: true };
    case 'head':
      return { ...base, head: true };
    default:
      return { ...base, to: at + 1 };
  }
}

/** The slices of an MLP block, the embedding or the head in `parts` parts. */
function sliceSpecs(d: HymbaDims, u: SubUnit, parts: number): StageSpec[] {
  return Array.from({ length: parts }, (_, part): StageSpec => {
    switch (u.kind) {
      case 'mlp':
        return {
          first: u.layer,
          last: u.layer + 1,
          embed: false,
          head: false,
          slice: { kind: 'mlp', layer: u.layer, part, parts },
        };
      case 'embed':
        return { first: 0, last: 0, embed: false, head: false, slice: { kind: 'embed', part, parts } };
      case 'head':
        return { first: d.L, last: d.L, embed: false, head: false, slice: { kind: 'head', part, parts } };
      case 'mixer':
        throw new Error('mixer blocks are not sliced');
    }
  });
}

/** The fewest slices of a unit that each fit (MAX_SLICES, over budget, when none does). */
function slicesThatFit(d: HymbaDims, u: SubUnit, r: Resolved): StageSpec[] {
  for (let parts = 2; parts <= MAX_SLICES; parts++) {
    const specs = sliceSpecs(d, u, parts);
    if (specs.every((s) => !stagePlan(d, s, r).overBudget)) return specs;
  }
  return sliceSpecs(d, u, MAX_SLICES);
}

/**
 * Pack consecutive sub-layer units greedily (embedding, then mixer and MLP of each layer, then head): a stage
 * grows while its estimate, mirrors included, stays within the budget. A unit that does not fit alone is
 * sliced (MLP by intermediate columns, embedding and head by vocabulary rows) into the fewest parts that
 * fit; a mixer that does not fit alone gets a stage of its own, over budget.
 */
export function unitSpecs(d: HymbaDims, r: Resolved): StageSpec[] {
  const done: StageSpec[] = [];
  let cur: Packing | null = null;
  const fits = (p: Packing): boolean => !stagePlan(d, packedSpec(d, p), r).overBudget;
  let at = 0; // the sublayer the next mixer or MLP unit is
  for (const u of subUnits(d)) {
    // grow the current stage by u while it fits; else close it
    if (cur !== null) {
      const grown = grow(cur, u, at);
      if (fits(grown)) {
        cur = grown;
        if (u.kind === 'mixer' || u.kind === 'mlp') at++;
        continue;
      }
      done.push(packedSpec(d, cur));
      cur = null;
    }
    // u starts a stage of its own: alone when it fits (a mixer even when it does not, closed at once) ...
    const alone = grow(null, u, at);
    if (u.kind === 'mixer' || u.kind === 'mlp') at++;
    if (fits(alone) || u.kind === 'mixer') {
      cur = alone;
      if (!fits(alone)) {
        done.push(packedSpec(d, alone));
        cur = null;
      }
      continue;
    }
    // ... else in the fewest slices that fit, each a stage
    done.push(...slicesThatFit(d, u, r));
  }
  if (cur !== null) done.push(packedSpec(d, cur));
  markMirrorSources(done);
  return done;
}

/** Who sends K/V rows to a mirror: the stage holding a mirrored producer's mixer lists it in kvOut. */
function markMirrorSources(specs: StageSpec[]): void {
  for (const s of specs)
    for (const p of s.kvIn ?? []) {
      const src = specs.find((t) => !t.slice && stageUnits(t).from <= 2 * p && 2 * p < stageUnits(t).to)!;
      src.kvOut = [...new Set([...(src.kvOut ?? []), p])].sort((a, b) => a - b);
    }
}

/** Sibling slices of one block share a key ("mlp:3:4"); a stage that is no slice has none. */
export const sliceKey = (s: StageSpec): string | null =>
  s.slice ? `${s.slice.kind}:${s.slice.kind === 'mlp' ? s.slice.layer : ''}:${s.slice.parts}` : null;

/** The smallest budget at which every sub-layer stage can fit: the largest mixer alone (with its mirror), or the thinnest slice. */
export function unitMinBudgetBytes(d: HymbaDims, r: Resolved): number {
  let need = 0;
  for (let i = 0; i < d.L; i++)
    need = Math.max(
      need,
      stagePlan(d, packedSpec(d, grow(null, { kind: 'mixer', layer: i }, 2 * i)), r).estimatedBytes,
    );
  const thinnest: SubUnit[] = [
    { kind: 'embed' },
    { kind: 'head' },
    ...Array.from({ length: d.L }, (_, layer): SubUnit => ({ kind: 'mlp', layer })),
  ];
  for (const u of thinnest)
    for (const s of sliceSpecs(d, u, MAX_SLICES)) need = Math.max(need, stagePlan(d, s, r).estimatedBytes);
  return need;
}
