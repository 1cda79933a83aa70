// `hymba plan <model_dir> [--budget-mb 128] [--dtype f32|f16|int8|q4] [--context N] [--sessions N]
// [--max-run-tokens T] [--json] [--measure]`: the stage plan of a model from its config alone (whole layers
// when they fit, else mixer / MLP blocks, slices and K/V mirrors); --measure converts the planned stages and
// loads each in a fresh process to compare the estimate with what ORT really holds.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { HymbaDims } from '../../engine/model/config.js';
import { MB, RUN_STATE_COPIES } from '../../engine/stages/memory.js';
import type { ModelPlan, PlanOptions } from '../../engine/stages/estimate.js';
import { stageLabel } from '../../engine/stages/report.js';
import { estimateStages, maxContextThatFits, planStages, RUN_TOKEN_CHOICES } from '../../engine/stages/plan.js';
import { isModelDtype, MODEL_DTYPES, type ModelDtype } from '../../engine/convert/quantize.js';
import { convertDir, readModelDir, type ModelDirInfo } from '../model-dir.js';
import { measureStage, type StageMeasurement } from '../plan/measure.js';
import { CliError, intFlag, numberFlag, parse } from './args.js';

export const PLAN_FLAGS = {
  'budget-mb': { type: 'string', default: '128' },
  dtype: { type: 'string' },
  context: { type: 'string' },
  sessions: { type: 'string', default: '1' },
  'max-run-tokens': { type: 'string' },
} as const;

/** The planner's options from the shared flags (also used by `hymba convert --budget-mb`). */
export function planOptions(
  values: { 'budget-mb'?: string; dtype?: string; context?: string; sessions?: string; 'max-run-tokens'?: string },
  fallbackDtype: ModelDtype,
): PlanOptions {
  const dtype = values.dtype ?? fallbackDtype;
  if (!isModelDtype(dtype)) throw new CliError(`--dtype must be one of ${MODEL_DTYPES.join(', ')}, got "${dtype}"`);
  const budgetMb = numberFlag(values['budget-mb'], 'budget-mb');
  if (budgetMb !== undefined && budgetMb <= 0) throw new CliError('--budget-mb must be positive');
  const context = intFlag(values.context, 'context', 1);
  const sessions = intFlag(values.sessions, 'sessions', 0);
  const runTokens = intFlag(values['max-run-tokens'], 'max-run-tokens', 1);
  return {
    dtype,
    ...(budgetMb !== undefined ? { budgetMb } : {}),
    ...(context !== undefined ? { contextTokens: context } : {}),
    ...(sessions !== undefined ? { hotSessions: sessions } : {}),
    ...(runTokens !== undefined ? { runTokens } : {}),
  };
}

const mb = (bytes: number, digits = 1): string => (bytes / MB).toFixed(digits);

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const line = (r: string[]): string =>
    r.map((cell, c) => (c < 3 || c === r.length - 1 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ');
  return rows.map((r) => line(r).trimEnd()).join('\n');
}

/** One row per stage, then the totals. */
function stageTable(plan: ModelPlan, d: HymbaDims): string {
  const contexts = plan.stages[0]!.sessionsThatFit.map((f) => f.context);
  const header = [
    'stage',
    'step',
    'holds',
    'weight MB',
    'est. ORT MB',
    'state MB/session',
    'est. total MB',
    `sessions @ ${contexts.join('/')} tokens`,
    '',
  ];
  const rows = plan.stages.map((s, k) => [
    String(k),
    String(s.step),
    stageLabel(s),
    mb(s.weightBytes),
    mb(s.ortBytes),
    mb(s.stateBytesPerSession, 2),
    mb(s.estimatedBytes),
    s.sessionsThatFit.map((f) => (f.sessions === null ? '-' : String(f.sessions))).join('/'),
    s.overBudget ? 'OVER BUDGET' : '',
  ]);
  const t = plan.totals;
  rows.push([
    'total',
    '',
    `${d.L} layers`,
    mb(t.weightBytes),
    '',
    mb(t.stateBytesPerSession, 2),
    mb(t.estimatedBytes),
    '',
    '',
  ]);
  return table([header, ...rows]);
}

/** What the plan is: stages, granularity, steps and hops, run tokens, and the estimate's formula. */
function summaryLines(plan: ModelPlan, title: string): string[] {
  const what =
    plan.granularity === 'layers'
      ? 'whole layers'
      : 'sub-layer units (mixer / MLP blocks, vocabulary and MLP slices in parallel, K/V mirrors)';
  return [
    `${title}: ${plan.stages.length} stage(s) at ${plan.dtype}, budget ${plan.budgetMb} MB per isolate, ` +
      `state of ${plan.hotSessions} session(s) at ${plan.contextTokens} tokens per stage`,
    `${what}; per token ${plan.steps} sequential step(s), ${plan.hops} stage call(s); ` +
      `runs of up to ${plan.runTokens} tokens (maxRunTokens)`,
    `estimate = ${mb(plan.baselineBytes)} MB ORT baseline + ${plan.factor} x weight bytes as run` +
      `${plan.dtype === 'q4' ? ' (q4 runs as int8)' : ''} + activation peak (${mb(plan.activationBytes)} MB with a mixer)` +
      ` + (${RUN_STATE_COPIES} in a run + ${plan.hotSessions} kept) x one session's state (fp32)`,
  ];
}

/** The problems and the budget (and, planned from options, the context) at which every stage would fit. */
function verdictLines(plan: ModelPlan, d: HymbaDims, opts?: PlanOptions): string[] {
  if (plan.problems.length === 0) return ['', `every stage fits the ${plan.budgetMb} MB budget`];
  const lines = [
    '',
    'over budget:',
    ...plan.problems.map((p) => `  ${p}`),
    `  (every stage would fit from --budget-mb ${plan.minBudgetMb} at these run tokens and context)`,
  ];
  if (opts) {
    const context = maxContextThatFits(d, opts);
    lines.push(
      context > 0
        ? `  (at ${plan.budgetMb} MB every stage fits up to --context ${context})`
        : `  (at ${plan.budgetMb} MB no context fits, even with runs of ${RUN_TOKEN_CHOICES.at(-1)} tokens)`,
    );
  }
  return lines;
}

/** The plan as a readable table, the totals and the problems. */
export function formatPlan(plan: ModelPlan, d: HymbaDims, title: string, opts?: PlanOptions): string {
  return [...summaryLines(plan, title), '', stageTable(plan, d), ...verdictLines(plan, d, opts)].join('\n');
}

/** A converted directory holding the stages to measure: the given one, or the plan converted into a temp dir. */
async function stagesToMeasure(
  info: ModelDirInfo,
  plan: ModelPlan,
): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  if (info.manifest) return { dir: info.dir, cleanup: async () => undefined };
  const dir = await mkdtemp(join(tmpdir(), 'hymba-plan-'));
  process.stderr.write(`[hymba plan] converting ${plan.stages.length} stage(s) to ${dir} to measure them...\n`);
  const opts = { dtype: plan.dtype, stages: plan.specs, maxRunTokens: plan.runTokens };
  await convertDir(info.dir, opts, (name, bytes) => writeFile(join(dir, name), bytes));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

function formatMeasured(plan: ModelPlan, measured: StageMeasurement[]): string {
  const rows = [
    [
      'stage',
      'holds',
      'est. heap after load MB',
      'measured MB',
      'est. heap after runs MB',
      'measured MB',
      'RSS growth MB',
    ],
  ];
  for (const m of measured) {
    const s = plan.stages[m.stage]!;
    const load = s.ortBytes - plan.baselineBytes - s.activationBytes;
    rows.push([
      String(m.stage),
      stageLabel(s),
      mb(load),
      mb(m.heapAfterLoad),
      mb(load + s.activationBytes + s.runStateBytes),
      mb(m.heapAfterRuns),
      mb(m.rssAfterRuns),
    ]);
  }
  return [
    '',
    '',
    'measured in a fresh Node process per stage: WASM heap growth over an initialised ORT after the session is',
    `created, then after a decode step at ${plan.contextTokens} tokens and a run of fresh tokens (RSS: over the same span)`,
    '',
    table(rows),
  ].join('\n');
}

/**
 * The plan of a model directory: a converted model's as it was converted (its dtype and its stages), else
 * planned from the flags; `opts` only for the latter (the context search applies to planned stages).
 */
function planOf(
  info: ModelDirInfo,
  values: Parameters<typeof planOptions>[0],
): { plan: ModelPlan; opts: PlanOptions | undefined } {
  const { dims } = info.model;
  if (info.manifest) {
    if (values.dtype !== undefined && values.dtype !== info.manifest.dtype)
      throw new CliError(`${info.dir} was converted at ${info.manifest.dtype}; --dtype ${values.dtype} does not apply`);
    const opts = { ...planOptions(values, info.manifest.dtype), runTokens: info.manifest.maxRunTokens };
    return { plan: estimateStages(dims, info.manifest.stages, opts), opts: undefined };
  }
  const opts = planOptions(values, 'f32');
  return { plan: planStages(dims, opts), opts };
}

/** Each stage of the plan loaded and run in a fresh process (converted first when the directory is not). */
async function measureStages(info: ModelDirInfo, plan: ModelPlan): Promise<StageMeasurement[]> {
  const { dir, cleanup } = await stagesToMeasure(info, plan);
  try {
    const measured: StageMeasurement[] = [];
    for (let k = 0; k < plan.stages.length; k++)
      measured.push(await measureStage(dir, k, { runTokens: plan.runTokens, context: plan.contextTokens }));
    return measured;
  } finally {
    await cleanup();
  }
}

export async function runPlan(argv: string[]): Promise<void> {
  const { values, positionals } = parse(
    argv,
    { ...PLAN_FLAGS, json: { type: 'boolean', default: false }, measure: { type: 'boolean', default: false } },
    1,
  );
  const info = await readModelDir(positionals[0]!);
  const { dims } = info.model;
  const { plan, opts } = planOf(info, values);
  const measured = values.measure ? await measureStages(info, plan) : null;
  if (values.json) {
    const out = measured ? { ...plan, measured: measured.map(({ raw: _raw, ...m }) => m) } : plan;
    process.stdout.write(JSON.stringify(out, null, 2) + '\n');
    return;
  }
  const title = `plan for ${info.dir}${info.manifest ? ' (converted)' : ''}`;
  process.stdout.write(formatPlan(plan, dims, title, opts) + (measured ? formatMeasured(plan, measured) : '') + '\n');
}
