// `hymba convert <hf_dir> <out_dir> [--dtype f32|f16|int8|q4] [--budget-mb N [--context N] [--sessions N]
// [--max-run-tokens T]]`: with a budget, the stages (whole layers, or mixer / MLP blocks, slices and K/V
// mirrors) and the run length come from the planner, one graph per stage, and the manifest records the plan.

import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MANIFEST_FILE, parseManifest, type ManifestPlan } from '../../engine/convert/manifest.js';
import type { ModelPlan } from '../../engine/stages/estimate.js';
import { planStages } from '../../engine/stages/plan.js';
import { isModelDtype, MODEL_DTYPES } from '../../engine/convert/quantize.js';
import { convertDir, readModelDir } from '../model-dir.js';
import { CliError, parse } from './args.js';
import { formatPlan, PLAN_FLAGS, planOptions } from './plan.js';

/** What the manifest keeps of a plan: enough to check a deployment against its budget. */
export function manifestPlan(plan: ModelPlan): ManifestPlan {
  return {
    budgetMb: plan.budgetMb,
    contextTokens: plan.contextTokens,
    hotSessions: plan.hotSessions,
    stages: plan.stages.map((s) => ({
      first: s.first,
      last: s.last,
      estimatedBytes: Math.round(s.estimatedBytes),
      stateBytesPerSession: s.stateBytesPerSession,
    })),
  };
}

/** The manifest bytes with the plan added (an optional field: older readers and manifests are unaffected). */
function withPlan(bytes: Uint8Array, plan: ManifestPlan): Uint8Array {
  // every key the converter wrote is kept as written; the result must still parse
  const manifest = { ...(JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown>), plan };
  const text = JSON.stringify(manifest, null, 2);
  parseManifest(text);
  return new TextEncoder().encode(text);
}

export async function runConvert(argv: string[]): Promise<void> {
  const { values, positionals } = parse(
    argv,
    { ...PLAN_FLAGS, 'budget-mb': { type: 'string' }, dtype: { type: 'string', default: 'f32' } },
    2,
  );
  const dtype = values.dtype;
  if (!isModelDtype(dtype)) throw new CliError(`--dtype must be one of ${MODEL_DTYPES.join(', ')}, got "${dtype}"`);
  const [hfDir, outDir] = positionals as [string, string];
  let plan: ModelPlan | null = null;
  if (values['budget-mb'] !== undefined) {
    const info = await readModelDir(hfDir);
    if (info.manifest) throw new CliError(`${hfDir} is already converted; convert its Hugging Face checkpoint`);
    const opts = planOptions(values, dtype);
    plan = planStages(info.model.dims, opts);
    process.stdout.write(formatPlan(plan, info.model.dims, `plan for ${hfDir}`, opts) + '\n\n');
    // nothing is written when a stage cannot fit: the problems say what would have to be split
    if (!plan.fits)
      throw new Error(`the model does not fit a ${plan.budgetMb} MB budget at ${dtype}: ${plan.problems[0]}`);
  }
  const recorded = plan ? manifestPlan(plan) : null;
  // the planned stage specs and the run length the activation estimate assumed
  const opts = { dtype, ...(plan ? { stages: plan.specs, maxRunTokens: plan.runTokens } : {}) };
  await mkdir(outDir, { recursive: true });
  const written: string[] = [];
  await convertDir(hfDir, opts, async (name, bytes) => {
    const out = name === MANIFEST_FILE && recorded ? withPlan(bytes, recorded) : bytes;
    await writeFile(join(outDir, name), out);
    written.push(`${name} (${out.length} bytes)`);
  });
  process.stdout.write(`converted ${hfDir} -> ${outDir}\n  ${written.join('\n  ')}\n`);
}
