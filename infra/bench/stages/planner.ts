// 1. The planner's stages for the full 32-layer Hymba-1.5B config at int8 and f16 in a 128 MB budget
// (engine/stages/plan.ts): arithmetic only, nothing is run.

import type { HymbaDims } from '../../../engine/model/config.js';
import type { ModelPlan, StagePlan } from '../../../engine/stages/estimate.js';
import { stageLabel } from '../../../engine/stages/report.js';
import { maxContextThatFits, planStages } from '../../../engine/stages/plan.js';
import { BUDGET_MB, DTYPES, type BenchDtype } from './bench-model.js';
import { mb, type Report } from './report.js';

export interface Plans {
  /** the planner's default: sub-layer units (mixer / MLP blocks, slices, K/V mirrors) */
  plans: Record<BenchDtype, ModelPlan>;
  /** the same with whole layers only (KV groups kept whole), as the planner did before sub-layer stages */
  layerPlans: Record<BenchDtype, ModelPlan>;
  /** the longest context per session at which the whole plan fits */
  fitsUpTo: Record<BenchDtype, number>;
}

const perDtype = <T>(f: (dtype: BenchDtype) => T): Record<BenchDtype, T> => ({ int8: f('int8'), f16: f('f16') });

export function planFullModel(full: HymbaDims): Plans {
  return {
    plans: perDtype((dtype) => planStages(full, { dtype, budgetMb: BUDGET_MB })),
    layerPlans: perDtype((dtype) => planStages(full, { dtype, budgetMb: BUDGET_MB, granularity: 'layers' })),
    fitsUpTo: perDtype((dtype) => maxContextThatFits(full, { dtype, budgetMb: BUDGET_MB })),
  };
}

/** Planned stages grouped by what they hold (numbers in the label as N) and their size: a compact plan table. */
function planGroups(plan: ModelPlan): string[][] {
  const groups = new Map<string, { example: string; count: number; s: StagePlan }>();
  for (const s of plan.stages) {
    const label = stageLabel(s);
    const key = `${label.replace(/\d+/g, 'N')}|${mb(s.weightBytes)}|${mb(s.estimatedBytes)}|${s.overBudget}`;
    const g = groups.get(key);
    if (g) g.count++;
    else groups.set(key, { example: label, count: 1, s });
  }
  const rows = [['holds (first of the kind)', 'stages', 'weight MB each', 'est. MB each', 'state MB/session', '']];
  for (const { example, count, s } of groups.values())
    rows.push([
      example,
      String(count),
      mb(s.weightBytes),
      mb(s.estimatedBytes),
      mb(s.stateBytesPerSession, 2),
      s.overBudget ? 'OVER BUDGET' : '',
    ]);
  return rows;
}

/** smallest-largest of byte counts, in MB */
const range = (xs: number[], digits = 1): string => `${mb(Math.min(...xs), digits)}-${mb(Math.max(...xs), digits)}`;

function reportPlan(r: Report, dtype: BenchDtype, { plans, layerPlans, fitsUpTo }: Plans): void {
  const p = plans[dtype];
  const lp = layerPlans[dtype];
  r.line();
  r.line(
    `  ${dtype}: ${p.stages.length} stages (${p.granularity === 'units' ? 'sub-layer units: mixer / MLP blocks, slices, K/V mirrors' : 'whole layers'}), ` +
      `${p.steps} sequential steps and ${p.hops} stage calls per token, runs of up to ${p.runTokens} tokens, state of ${p.hotSessions} session at ${p.contextTokens} tokens; ` +
      `${p.stages.filter((x) => x.overBudget).length} over budget; weight ${range(p.stages.map((x) => x.weightBytes))} MB, estimate ${range(
        p.stages.map((x) => x.estimatedBytes),
        0,
      )} MB per stage`,
  );
  r.table(planGroups(p), 1);
  for (const problem of p.problems) r.line(`    over budget: ${problem}`);
  r.line(
    `    the whole plan fits up to ${fitsUpTo[dtype]} tokens of context per session` +
      (fitsUpTo[dtype] > 0 ? '' : ' (none: it needs more than the budget even without state)'),
  );
  r.line(
    `    whole layers only (granularity 'layers'): ${lp.stages.length} stages of ${range(lp.stages.map((x) => x.weightBytes))} MB weights, estimate ${range(
      lp.stages.map((x) => x.estimatedBytes),
      0,
    )} MB, ` + `${lp.stages.filter((x) => x.overBudget).length} over budget (runs of ${lp.runTokens} tokens)`,
  );
}

export function reportPlans(r: Report, full: HymbaDims, plans: Plans): void {
  r.section(
    `1. Stages the planner (engine/stages/plan.ts) gives the full ${full.L}-layer Hymba-1.5B config, ${BUDGET_MB} MB per isolate`,
  );
  for (const dtype of DTYPES) reportPlan(r, dtype, plans);
}
