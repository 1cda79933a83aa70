// One stage's estimate under the plan's options (budget, context, hot sessions, run tokens), and the shapes
// of a plan: the options the CLI passes in, a stage's estimate and the whole plan that come out.

import type { HymbaDims } from '../model/config.js';
import type { StageSpec } from './stage-spec.js';
import type { ModelDtype } from '../convert/quantize.js';
import {
  contentActivationBytes,
  contentStateBytes,
  execDtype,
  maxContext,
  MB,
  ORT_BASELINE_BYTES,
  ORT_FACTORS,
  RUN_STATE_COPIES,
  stageContent,
  stageWeightBytes,
} from './memory.js';

export const DEFAULT_BUDGET_MB = 128;

/** Context lengths (text tokens) at which the plan reports how many sessions' state fit beside the weights. */
export const REPORT_CONTEXTS = [1024, 4096, 8192] as const;

export interface PlanOptions {
  dtype: ModelDtype;
  /** memory per isolate in MB (default 128) */
  budgetMb?: number;
  /** text tokens of a session's state that each stage must hold (default: the model's whole context) */
  contextTokens?: number;
  /** sessions whose state each stage keeps in memory at `contextTokens` (default 1) */
  hotSessions?: number;
  /** ORT heap per executed weight byte (default ORT_FACTORS[dtype]) */
  factor?: number;
  /** bytes before any weight (default ORT_BASELINE_BYTES) */
  baselineBytes?: number;
  /**
   * tokens per graph run (the converter's maxRunTokens), which sets the activation peak. planStages default:
   * the largest of RUN_TOKEN_CHOICES whose plan fits; estimateStages default: DEFAULT_MAX_RUN_TOKENS.
   */
  runTokens?: number;
  /** 'layers': whole layers only, as before sub-layer stages existed; default: sub-layer units when needed */
  granularity?: 'layers' | 'auto';
}

/** The options with their defaults filled in, at one number of run tokens. */
export interface Resolved {
  dtype: ModelDtype;
  budgetBytes: number;
  contextTokens: number;
  hotSessions: number;
  factor: number;
  baselineBytes: number;
  runTokens: number;
}

/** A stage with its estimates (a type, not an interface: StageSpec is a union). */
export type StagePlan = StageSpec & {
  /** weight bytes as stored in the stage graph (the manifest's weightBytes) */
  weightBytes: number;
  /** weight bytes ORT runs (q4: its int8 form) */
  execBytes: number;
  /** activation peak of one run of the plan's run tokens through this stage */
  activationBytes: number;
  /** baseline + factor x execBytes + activation peak: the stage before any session state */
  ortBytes: number;
  /** what a run at the plan's context adds: RUN_STATE_COPIES x stateBytesPerSession */
  runStateBytes: number;
  /** fp32 state of this stage's layers (and mirrored K/V) for one session at the plan's context */
  stateBytesPerSession: number;
  /** ortBytes + runStateBytes + hot sessions x stateBytesPerSession */
  estimatedBytes: number;
  overBudget: boolean;
  /** sequential step of a token's pass (sibling slices share one) */
  step: number;
  /**
   * how many sessions' state fit beside the weights, at the REPORT_CONTEXTS (clamped to the model's); null
   * for a stage without session state (any number fits)
   */
  sessionsThatFit: { context: number; sessions: number | null }[];
};

export interface ModelPlan {
  dtype: ModelDtype;
  budgetMb: number;
  contextTokens: number;
  hotSessions: number;
  factor: number;
  baselineBytes: number;
  /** tokens per graph run the activation estimate assumes: the maxRunTokens to convert with */
  runTokens: number;
  /** the activation peak of a stage with a mixer at runTokens */
  activationBytes: number;
  /** whole layers per stage, or sub-layer units (mixer / MLP blocks, slices, mirrors) */
  granularity: 'layers' | 'units';
  stages: StagePlan[];
  /** the stage specs to convert with (`convertCheckpoint`'s `stages`), one per stage */
  specs: StageSpec[];
  /** sequential steps of one token's pass (parallel slices count once) */
  steps: number;
  /** stage calls per token (each slice is a call of its own) */
  hops: number;
  /** why stages are over budget, one sentence each (empty when every stage fits) */
  problems: string[];
  /** the smallest budget (MB) at which every stage of such a plan could fit (at these run tokens and context) */
  minBudgetMb: number;
  fits: boolean;
  totals: { weightBytes: number; execBytes: number; estimatedBytes: number; stateBytesPerSession: number };
}

export function resolve(d: HymbaDims, o: PlanOptions, runTokens: number): Resolved {
  const budgetMb = o.budgetMb ?? DEFAULT_BUDGET_MB;
  if (!(budgetMb > 0)) throw new RangeError(`the budget must be positive, got ${budgetMb} MB`);
  if (!(runTokens >= 0)) throw new RangeError(`run tokens must not be negative, got ${runTokens}`);
  return {
    dtype: o.dtype,
    budgetBytes: budgetMb * MB,
    contextTokens: Math.min(o.contextTokens ?? maxContext(d), maxContext(d)),
    hotSessions: o.hotSessions ?? 1,
    factor: o.factor ?? ORT_FACTORS[o.dtype],
    baselineBytes: o.baselineBytes ?? ORT_BASELINE_BYTES,
    runTokens,
  };
}

/** The estimate of one stage: its bytes, its state, and the sessions that fit beside it. */
export function stagePlan(d: HymbaDims, s: StageSpec, r: Resolved, step = 0): StagePlan {
  const c = stageContent(d, s);
  const weightBytes = stageWeightBytes(d, s, r.dtype);
  const execBytes = stageWeightBytes(d, s, execDtype(r.dtype));
  const activation = contentActivationBytes(d, c, r.runTokens);
  const ortBytes = r.baselineBytes + r.factor * execBytes + activation;
  const stateBytesPerSession = contentStateBytes(d, c, r.contextTokens);
  const runStateBytes = RUN_STATE_COPIES * stateBytesPerSession;
  const estimatedBytes = ortBytes + runStateBytes + r.hotSessions * stateBytesPerSession;
  const contexts = [...new Set(REPORT_CONTEXTS.map((k) => Math.min(k, maxContext(d))))];
  // at each context: the sessions kept in memory, after the room a run at that context needs
  const fit = (state: number): number | null =>
    state === 0 ? null : Math.max(0, Math.floor((r.budgetBytes - ortBytes) / state - RUN_STATE_COPIES));
  return {
    ...s,
    weightBytes,
    execBytes,
    activationBytes: activation,
    ortBytes,
    runStateBytes,
    stateBytesPerSession,
    estimatedBytes,
    overBudget: estimatedBytes > r.budgetBytes,
    step,
    sessionsThatFit: contexts.map((context) => ({ context, sessions: fit(contentStateBytes(d, c, context)) })),
  };
}
