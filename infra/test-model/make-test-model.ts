// Random-initialised Hymba checkpoints in the exact Hugging Face layout, for tests and benchmarks:
// config.json, generation_config.json, model.safetensors (bf16, lm_head tied and omitted) and tokenizer files.
//
// CLI: tsx infra/test-model/make-test-model.ts <dir> [--preset tiny] [--layers N] [--seed S] [--no-tokenizer]

import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { loadConfig, type HymbaDims } from '../../engine/model/config.js';
import type { SafetensorsDtype } from '../../engine/convert/safetensors.js';
import { SafetensorsWriter, type TensorSpec } from '../../engine/convert/safetensors-writer.js';
import { expectedTensors } from '../../engine/model/weights.js';
import { fileSink } from '../node-files.js';
import { generationConfig, presetConfig, pyJson, PRESET_NAMES, type ConfigValue, type PresetName } from './presets.js';
import { Rng } from './random.js';

export interface TestModelOptions {
  preset: PresetName;
  /** keep only the first N layers */
  layers?: number;
  /** PRNG seed (default 0); the same seed gives byte-identical files */
  seed?: number;
  /** write the tokenizer files (default true) */
  tokenizer?: boolean;
  /** dtype of the weights (default BF16, as released) */
  dtype?: SafetensorsDtype;
  /** config.json keys replacing the preset's (tests of other model shapes) */
  overrides?: Record<string, ConfigValue>;
}

/** Everything about a test model except the weight values. */
export interface TestModelPlan {
  config: Record<string, ConfigValue>;
  generationConfig: Record<string, ConfigValue>;
  dims: HymbaDims;
  /** the tensors of model.safetensors (lm_head omitted: tied) */
  tensors: TensorSpec[];
}

export function planTestModel(opts: TestModelOptions): TestModelPlan {
  const config = { ...presetConfig(opts.preset, opts.layers), ...(opts.overrides ?? {}) };
  // the generated config must load with the engine's own parser
  const { dims } = loadConfig(JSON.parse(pyJson(config)));
  const dtype = opts.dtype ?? 'BF16';
  const tensors = [...expectedTensors(dims)].map(([name, shape]) => ({ name, dtype, shape }));
  return { config, generationConfig: generationConfig(), dims, tensors };
}

/** Logit std through the tied head: RMSNorm'd rows (rms ~1) times embedding rows of std sigma -> sigma*sqrt(H). */
const TARGET_LOGIT_STD = 4;

const softplusInverse = (y: number): number => y + Math.log(-Math.expm1(-y));

/**
 * The fp32 values of one tensor (before rounding to the stored dtype). Deterministic in (seed, name):
 * every tensor has its own PRNG stream, so a model cut to fewer layers keeps the same values.
 */
export function initTensor(name: string, shape: readonly number[], dims: HymbaDims, seed = 0): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  const rng = new Rng(seed, name);
  if (name === 'model.embed_tokens.weight' || name === 'model.memory_tokens' || name === 'lm_head.weight')
    return rng.fillNormal(out, 0, TARGET_LOGIT_STD / Math.sqrt(dims.H));
  if (/layernorm\d?\.weight$/.test(name)) {
    rng.fillNormal(out, 1, 0.05);
    for (let i = 0; i < n; i++) out[i] = Math.abs(out[i]!);
    return out;
  }
  if (name.endsWith('.conv1d.weight')) {
    const bound = 1 / Math.sqrt(dims.dConv);
    return rng.fillUniform(out, -bound, bound);
  }
  if (name.endsWith('.conv1d.bias')) return rng.fillUniform(out, -0.1, 0.1);
  if (name.endsWith('.A_log.0')) {
    // Mamba init: A[c, n] = -(n + 1)
    const N = shape[1]!;
    for (let i = 0; i < n; i++) out[i] = Math.log((i % N) + 1);
    return out;
  }
  if (name.endsWith('.D.0')) return out.fill(1);
  if (name.endsWith('.dt_proj.0.bias')) {
    // dt log-uniform in [1e-3, 1e-1], stored as softplus^-1(dt) so that softplus(bias) = dt
    const lo = Math.log(1e-3);
    const hi = Math.log(1e-1);
    for (let i = 0; i < n; i++) out[i] = softplusInverse(Math.exp(lo + (hi - lo) * rng.uniform()));
    return out;
  }
  if (shape.length === 2) return rng.fillNormal(out, 0, 1 / Math.sqrt(shape[1]!)); // linear [out, in]
  throw new Error(`initTensor: no initialisation rule for ${name} ${JSON.stringify(shape)}`);
}

/**
 * Write a random-initialised checkpoint into `dir` (created if needed). model.safetensors is streamed
 * tensor by tensor, so even hymba-1.5b holds one tensor in memory at a time.
 */
export async function makeTestModel(dir: string, opts: TestModelOptions): Promise<void> {
  const seed = opts.seed ?? 0;
  const plan = planTestModel(opts);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'config.json'), pyJson(plan.config));
  await writeFile(join(dir, 'generation_config.json'), pyJson(plan.generationConfig));

  // written under a temporary name, so a crash never leaves a plausible-looking truncated model
  const final = join(dir, 'model.safetensors');
  const partial = `${final}.partial`;
  const sink = await fileSink(partial);
  try {
    const writer = new SafetensorsWriter(plan.tensors, sink.write, { metadata: { format: 'pt' } });
    for (const entry of writer.layout.entries)
      await writer.write(entry.name, initTensor(entry.name, entry.shape, plan.dims, seed));
    await writer.finish();
  } catch (e) {
    await sink.close();
    await rm(partial, { force: true });
    throw e;
  }
  await sink.close();
  await rename(partial, final);

  if (opts.tokenizer ?? true) {
    const { writeTokenizerFiles } = await import('./tokenizer-files.js');
    await writeTokenizerFiles(dir);
  }
}

function usage(): string {
  return `usage: make-test-model <dir> [--preset ${PRESET_NAMES.join('|')}] [--layers N] [--seed S] [--no-tokenizer]`;
}

/** CLI entry: returns the process exit code. */
export async function main(argv: string[]): Promise<number> {
  let dir: string | undefined;
  const opts: TestModelOptions = { preset: 'tiny' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value\n${usage()}`);
      return v;
    };
    const int = (): number => {
      const v = value();
      if (!/^-?\d+$/.test(v)) throw new Error(`${a} needs an integer, got ${v}`);
      return Number(v);
    };
    if (a === '--preset') {
      const p = value();
      if (!(PRESET_NAMES as readonly string[]).includes(p)) throw new Error(`unknown preset ${p}\n${usage()}`);
      opts.preset = p as PresetName;
    } else if (a === '--layers') opts.layers = int();
    else if (a === '--seed') opts.seed = int();
    else if (a === '--no-tokenizer') opts.tokenizer = false;
    else if (a === '--help' || a === '-h') {
      console.log(usage());
      return 0;
    } else if (a.startsWith('-') || dir !== undefined) throw new Error(`unexpected argument ${a}\n${usage()}`);
    else dir = a;
  }
  if (dir === undefined) throw new Error(usage());
  const t0 = performance.now();
  await makeTestModel(dir, opts);
  const s = ((performance.now() - t0) / 1000).toFixed(2);
  console.log(`wrote ${opts.preset}${opts.layers === undefined ? '' : ` (${opts.layers} layers)`} to ${dir} in ${s} s`);
  return 0;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      console.error(e instanceof Error ? e.message : e);
      process.exit(1);
    },
  );
}
