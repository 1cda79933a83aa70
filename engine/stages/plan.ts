// The stage planner: which parts of the model run together in one Durable Object, so that each stage fits
// its isolate's memory budget. Pure arithmetic over the config (no weights, no Node APIs): the CLI
// (`hymba plan`, `hymba convert --budget-mb`) and the benchmarks share it.
//
// memory.ts counts the bytes, estimate.ts weighs one stage against the budget, packing.ts packs units into
// stages (whole layers, else sub-layer units with slices and mirrors), report.ts puts the plan into words.

import type { HymbaDims } from '../model/config.js';
import { DEFAULT_MAX_RUN_TOKENS } from '../model/scan.js';
import type { StageSpec } from './stage-spec.js';
import { activationBytes, maxContext, MB } from './memory.js';
import { resolve, stagePlan, type ModelPlan, type PlanOptions, type Resolved, type StagePlan } from './estimate.js';
import { layerMinBudgetBytes, layerSpecs, sliceKey, unitMinBudgetBytes, unitSpecs } from './packing.js';
import { layerProblems, unitProblems } from './report.js';

/** Tokens per run the planner tries, largest first, when none is given: the largest that fits is kept. */
export const RUN_TOKEN_CHOICES = [128, 64, 32, 16] as const;

/** Steps: consecutive sibling slices share one. */
function withSteps(d: HymbaDims, specs: StageSpec[], r: Resolved): StagePlan[] {
  let step = -1;
  let prev: string | null = null;
  return specs.map((s) => {
    const key = sliceKey(s);
    if (key === null || key !== prev || s.slice!.part === 0) step++;
    prev = key;
    return stagePlan(d, s, r, step);
  });
}

/** The plan of these stages: their estimates, steps and hops, totals, and why any is over budget. */
function finish(d: HymbaDims, specs: StageSpec[], r: Resolved, granularity: 'layers' | 'units'): ModelPlan {
  const stages = withSteps(d, specs, r);
  const sum = (f: (s: StagePlan) => number): number => stages.reduce((n, s) => n + f(s), 0);
  const sub = granularity === 'units' || specs.some((s) => s.units !== undefined || s.slice !== undefined);
  return {
    dtype: r.dtype,
    budgetMb: r.budgetBytes / MB,
    contextTokens: r.contextTokens,
    hotSessions: r.hotSessions,
    factor: r.factor,
    baselineBytes: r.baselineBytes,
    runTokens: r.runTokens,
    activationBytes: activationBytes(d, r.runTokens),
    granularity: sub ? 'units' : 'layers',
    stages,
    specs,
    steps: stages.length === 0 ? 0 : stages.at(-1)!.step + 1,
    hops: stages.length,
    problems: sub ? unitProblems(d, stages, r) : layerProblems(d, stages, r),
    minBudgetMb: Math.ceil((sub ? unitMinBudgetBytes(d, r) : layerMinBudgetBytes(d, r)) / MB),
    fits: stages.every((s) => !s.overBudget),
    totals: {
      weightBytes: sum((s) => s.weightBytes),
      execBytes: sum((s) => s.execBytes),
      estimatedBytes: sum((s) => s.estimatedBytes),
      stateBytesPerSession: sum((s) => s.stateBytesPerSession),
    },
  };
}

/** Whole layers when they fit (or when only whole layers are asked for), else sub-layer units. */
function planAt(d: HymbaDims, opts: PlanOptions, runTokens: number): ModelPlan {
  const r = resolve(d, opts, runTokens);
  const layers = finish(d, layerSpecs(d, r), r, 'layers');
  if (layers.fits || opts.granularity === 'layers') return layers;
  return finish(d, unitSpecs(d, r), r, 'units');
}

/**
 * The plan: whole layers (KV groups kept whole) when they fit, else sub-layer units with slices and mirrors.
 * Without `runTokens`, the largest of RUN_TOKEN_CHOICES whose plan fits (the smallest's plan when none does).
 */
export function planStages(d: HymbaDims, opts: PlanOptions): ModelPlan {
  const choices = opts.runTokens !== undefined ? [opts.runTokens] : RUN_TOKEN_CHOICES;
  let plan: ModelPlan | null = null;
  for (const t of choices) {
    plan = planAt(d, opts, t);
    if (plan.fits) return plan;
  }
  return plan!;
}

/**
 * The longest context (text tokens) at which planStages with these options fits, or 0 when none does. A
 * binary search: the state grows with the context, so a plan that fits at N fits below it.
 */
export function maxContextThatFits(d: HymbaDims, opts: PlanOptions): number {
  const fitsAt = (c: number): boolean => planStages(d, { ...opts, contextTokens: c }).fits;
  let [lo, hi] = [0, maxContext(d)];
  if (fitsAt(hi)) return hi;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (fitsAt(mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}

/** The same estimates for stages chosen elsewhere (a converted model's manifest). */
export function estimateStages(d: HymbaDims, specs: StageSpec[], opts: PlanOptions): ModelPlan {
  const r = resolve(d, opts, opts.runTokens ?? DEFAULT_MAX_RUN_TOKENS);
  const clean = specs.map(({ first, last, embed, head, units, slice, kvIn, kvOut }) => ({
    first,
    last,
    embed,
    head,
    ...(units ? { units } : {}),
    ...(slice ? { slice } : {}),
    ...(kvIn ? { kvIn } : {}),
    ...(kvOut ? { kvOut } : {}),
  }));
  return finish(d, clean, r, 'layers');
}
