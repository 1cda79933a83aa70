// 6. The arithmetic of mixer slices (a layer's attention heads / SSM channels split over 2 objects), which
// the engine does not implement: from the measured mixer time and the profiler's matmul share, the per-token
// latency of the int8 plan with every mixer halved, and the memory of the over-budget stages in slices.

import type { HymbaDims } from '../../../engine/model/config.js';
import type { ModelPlan } from '../../../engine/stages/estimate.js';
import { MB, ORT_BASELINE_BYTES } from '../../../engine/stages/memory.js';
import { stageLabel } from '../../../engine/stages/report.js';
import type { Shares } from '../profile.js';
import { BUDGET_MB, DTYPES, type BenchDtype } from './bench-model.js';
import { stepTimes, type BlockCosts } from './decode.js';
import { HOP_SENSITIVITY_MS } from './hops.js';
import type { LatencyRow } from './latency.js';
import { mb, ms, sum, type Report } from './report.js';

/** exchanges inside a mixer split into slices: x_proj's dt/B/C and the branch norms (out_proj is summed by the session) */
const MIXER_SLICE_EXCHANGES = 2;

interface SliceLatency {
  hopMs: number;
  unsplit: number | undefined;
  slicedRestWhole: number;
  slicedAllHalves: number;
  exchanges: number;
}

interface OverBudgetGroup {
  label: string;
  est: number;
  /** slices it needs to fit the budget */
  n: number;
  count: number;
}

export interface SliceResults {
  matmulShare: number;
  mixerMs: number;
  perHop: SliceLatency[];
  memory: OverBudgetGroup[];
}

/** Per hop latency: the unsplit plan beside it sliced, the mixer's rest whole or everything halved. */
function sliceLatency(
  full: HymbaDims,
  plan: ModelPlan,
  c8: BlockCosts,
  share: number,
  unsplit: LatencyRow,
): { rows: string[][]; perHop: SliceLatency[] } {
  const scaleRest = 1 - share / 2;
  const exchanges = (h: number): number => full.L * MIXER_SLICE_EXCHANGES * h;
  const slicedMs = (scale: number, h: number): number =>
    sum(stepTimes(full, plan, c8, 1, true, scale)) + plan.steps * h + exchanges(h);
  const rows = [
    ['hop ms', 'unsplit ms/token', 'sliced ms/token (rest whole)', 'sliced (all halves)', 'of which exchanges'],
  ];
  const perHop: SliceLatency[] = [];
  for (const h of HOP_SENSITIVITY_MS) {
    const a = slicedMs(scaleRest, h);
    const b = slicedMs(0.5, h);
    rows.push([String(h), ms(unsplit.totalAtMs[h]!, 0), ms(a, 0), ms(b, 0), ms(exchanges(h), 0)]);
    perHop.push({
      hopMs: h,
      unsplit: unsplit.totalAtMs[h],
      slicedRestWhole: a,
      slicedAllHalves: b,
      exchanges: exchanges(h),
    });
  }
  return { rows, perHop };
}

/**
 * Over-budget stages grouped by dtype and size, with the slices each needs: everything but the baseline divides
 * by the number of slices (weights, activations, state by heads).
 */
function overBudgetGroups(plans: Record<BenchDtype, ModelPlan>): OverBudgetGroup[] {
  const overMixers = new Map<string, OverBudgetGroup>();
  for (const dtype of DTYPES)
    for (const st of plans[dtype].stages.filter((x) => x.overBudget)) {
      const n = Math.ceil((st.estimatedBytes - ORT_BASELINE_BYTES) / (BUDGET_MB * MB - ORT_BASELINE_BYTES));
      const key = `${dtype} ${mb(st.estimatedBytes, 0)}`;
      const g = overMixers.get(key);
      if (g) g.count++;
      else overMixers.set(key, { label: `${dtype} ${stageLabel(st)}`, est: st.estimatedBytes, n, count: 1 });
    }
  return [...overMixers.values()];
}

/** Section 6; returns the estimate's numbers. */
export function reportSlices(
  r: Report,
  full: HymbaDims,
  plans: Record<BenchDtype, ModelPlan>,
  c8: BlockCosts,
  shares: Record<string, Shares>,
  unsplit: LatencyRow,
): SliceResults {
  r.section(
    "6. Mixer slices (a layer's attention heads / SSM channels split over 2 objects): NOT implemented in the engine; ESTIMATE only",
  );
  r.line(
    '  the planner already cuts layers into mixer and MLP blocks and slices MLPs, embedding and head (section 1); what it names as missing',
  );
  r.line(
    '  is slicing the mixer block. Splitting every mixer of the int8 plan in 2 (the same steps, the halves in parallel):',
  );
  const share = shares.decode?.byKind['weight matmuls'] ?? 0;
  const mix = c8.mixer(1, true);
  const scaleRest = 1 - share / 2;
  r.line(
    `  measured: int8 mixer block ${ms(mix)} ms per token (layer ${ms(c8.layer(1, true))} ms x ${(100 * (1 - c8.mlpShare)).toFixed(0)}%); weight matmuls are ${(100 * share).toFixed(0)}% of a layer's decode kernel time (ORT profiler)`,
  );
  r.line(
    `  each half runs half the matmuls: ${ms(mix * scaleRest)} ms if the rest of the mixer stays whole in each half, ${ms(mix / 2)} ms if everything halves`,
  );
  r.line(
    `  extra: ${MIXER_SLICE_EXCHANGES} exchanges inside each mixer (x_proj's dt/B/C need every channel; the branch norms need every channel's square), one hop each;`,
  );
  r.line(
    "  out_proj's partial sums come back to the session and are added there, as the MLP slices' are (no extra hop)",
  );
  const { rows, perHop } = sliceLatency(full, plans.int8, c8, share, unsplit);
  r.table(rows);
  const memory = overBudgetGroups(plans);
  for (const g of memory)
    r.line(
      `  memory: ${g.label} (and ${g.count - 1} alike) needs ~${mb(g.est, 0)} MB: in ${g.n} slices ~${mb(ORT_BASELINE_BYTES + (g.est - ORT_BASELINE_BYTES) / g.n, 0)} MB each ` +
        '(everything but the baseline divided: weights, activations, K/V by heads)',
    );
  return { matmulShare: share, mixerMs: mix, perHop, memory };
}
