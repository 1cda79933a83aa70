// The `hymba` CLI end to end, as a user runs it: separate processes, files on disk, JSON on stdout.

import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseManifest } from '../../engine/convert/manifest.js';
import { presetConfig, pyJson } from '../../infra/test-model/presets.js';

const run = promisify(execFile);
const BIN = join(import.meta.dirname, '../../bin/hymba.js');

async function hymba(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run('node', [BIN, ...args], { maxBuffer: 256 << 20 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

let root: string;
let hf: string;
let converted: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'hymba-cli-'));
  hf = join(root, 'hf');
  converted = join(root, 'converted');
  expect((await hymba('make-test-model', hf, '--preset', 'tiny', '--seed', '4')).code).toBe(0);
  expect((await hymba('convert', hf, converted)).code).toBe(0);
});
afterAll(() => rm(root, { recursive: true, force: true }));

describe('hymba CLI', () => {
  it('generates deterministically at temperature 0, from the converted and the Hugging Face directory alike', async () => {
    const args = ['--ids', '1,450,4996,338', '--max-tokens', '10', '--temperature', '0'];
    const a = await hymba('generate', converted, ...args);
    const b = await hymba('generate', converted, ...args);
    const c = await hymba('generate', hf, ...args);
    expect(a.code).toBe(0);
    const out = JSON.parse(a.stdout) as { ids: number[]; text: string };
    expect(out.ids.length).toBeGreaterThan(0);
    expect(out.ids.length).toBeLessThanOrEqual(10);
    expect(typeof out.text).toBe('string');
    expect(b.stdout).toBe(a.stdout);
    expect(c.stdout).toBe(a.stdout);
  });

  it('encodes a text prompt with the checkpoint tokenizer', async () => {
    const r = await hymba('generate', converted, '--prompt', 'Hello world', '--max-tokens', '3');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).ids).toHaveLength(3);
  });

  it('prints one logits row per input position', async () => {
    const r = await hymba('logits', converted, '--ids', '1,2,3,4,5');
    expect(r.code).toBe(0);
    const { logits } = JSON.parse(r.stdout) as { logits: number[][] };
    expect(logits).toHaveLength(5);
    expect(logits[0]).toHaveLength(32001);
    expect(logits.flat().every(Number.isFinite)).toBe(true);
  });

  it('works on a checkpoint with only config.json and model.safetensors', async () => {
    const bare = join(root, 'bare');
    await run('mkdir', ['-p', bare]);
    await run('cp', [join(hf, 'config.json'), join(hf, 'model.safetensors'), bare]);
    const a = await hymba('logits', bare, '--ids', '1,2,3');
    const b = await hymba('logits', hf, '--ids', '1,2,3');
    expect(a.code).toBe(0);
    expect(a.stdout).toBe(b.stdout);
    const g = await hymba('generate', bare, '--ids', '1,2,3', '--max-tokens', '4', '--temperature', '0');
    expect(JSON.parse(g.stdout)).not.toHaveProperty('text');
  });

  it('fails with a one-line explanation and a non-zero exit', async () => {
    const cases = [
      await hymba('logits', join(root, 'nope'), '--ids', '1'),
      await hymba('logits', converted, '--ids', '1,x'),
      await hymba('logits', converted, '--ids', '1,99999'),
      await hymba('generate', converted, '--max-tokens', '2'),
      await hymba('frobnicate'),
    ];
    for (const c of cases) {
      expect(c.code).not.toBe(0);
      expect(c.stderr.trim().split('\n')).toHaveLength(1);
      expect(c.stderr).toMatch(/^hymba: /);
    }
    expect(cases[2]!.stderr).toMatch(/token id 99999 is outside/);
  });

  it('names the problem in a broken checkpoint', async () => {
    const broken = join(root, 'broken');
    await run('cp', ['-r', hf, broken]);
    const cfg = JSON.parse(await (await import('node:fs/promises')).readFile(join(broken, 'config.json'), 'utf8'));
    await writeFile(join(broken, 'config.json'), JSON.stringify({ ...cfg, num_experts: 4 }));
    const r = await hymba('logits', broken, '--ids', '1');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/num_experts = 4/);
  });
});

describe('hymba plan and convert --budget-mb', () => {
  interface PlanJson {
    dtype: string;
    budgetMb: number;
    fits: boolean;
    problems: string[];
    stages: { first: number; last: number; embed: boolean; head: boolean; weightBytes: number; overBudget: boolean }[];
  }

  it('plans from config.json alone and prints JSON', async () => {
    const r = await hymba('plan', hf, '--json');
    expect(r.code).toBe(0);
    const plan = JSON.parse(r.stdout) as PlanJson;
    expect(plan).toMatchObject({ dtype: 'f32', budgetMb: 128, fits: true, problems: [] });
    expect(plan.stages).toHaveLength(1);
    // a converted model is estimated as converted: its stages, its recorded weight bytes
    const c = JSON.parse((await hymba('plan', converted, '--json')).stdout) as PlanJson;
    const manifest = parseManifest(await readFile(join(converted, 'hymba-manifest.json'), 'utf8'));
    expect(c.stages.map((s) => s.weightBytes)).toEqual(manifest.stages.map((s) => s.weightBytes));
  });

  it('prints a readable table and names what does not fit, exiting 0', async () => {
    const cfgOnly = join(root, 'hymba-1.5b-config');
    await mkdir(cfgOnly, { recursive: true });
    await writeFile(join(cfgOnly, 'config.json'), pyJson(presetConfig('hymba-1.5b')));
    const r = await hymba('plan', cfgOnly, '--dtype', 'int8', '--budget-mb', '128');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/68 stage\(s\) at int8, budget 128 MB/);
    expect(r.stdout).toMatch(/per token 66 sequential step\(s\), 68 stage call\(s\); runs of up to 16 tokens/);
    expect(r.stdout).toMatch(/\n2 +1 +0\.mixer .* OVER BUDGET/);
    expect(r.stdout).toMatch(/the mixers of layers 0, 15, 31 need ~\d+ MB each at int8 .*: over the 128 MB budget/);
    expect(r.stdout).toMatch(/every stage fits up to --context 14\d\d/);
    // at 1K tokens of context it fits; --json carries the stage specs convert takes
    const j = await hymba('plan', cfgOnly, '--dtype', 'int8', '--budget-mb', '128', '--context', '1024', '--json');
    const plan = JSON.parse(j.stdout) as PlanJson & { specs: { units?: object; slice?: { kind: string } }[] };
    expect(plan).toMatchObject({ fits: true, granularity: 'units', runTokens: 16, steps: 66, hops: 68 });
    expect(plan.specs.map((s) => s.slice?.kind ?? 'units')).toEqual([
      'embed',
      'embed',
      ...new Array<string>(64).fill('units'),
      'head',
      'head',
    ]);
    // and --max-run-tokens holds the run length
    const t = await hymba('plan', cfgOnly, '--dtype', 'int8', '--context', '1024', '--max-run-tokens', '32', '--json');
    expect(JSON.parse(t.stdout)).toMatchObject({ runTokens: 32, fits: false });
  });

  it('converts into the planned stages, records the plan, and generates as the one-stage model does', async () => {
    const staged = join(root, 'staged');
    const plan = JSON.parse((await hymba('plan', hf, '--budget-mb', '80', '--json')).stdout) as PlanJson;
    expect(plan.fits).toBe(true);
    expect(plan.stages.length).toBeGreaterThan(1);
    const r = await hymba('convert', hf, staged, '--budget-mb', '80');
    expect(r.code).toBe(0);
    const manifest = parseManifest(await readFile(join(staged, 'hymba-manifest.json'), 'utf8'));
    expect(manifest.stages.map((s) => [s.first, s.last])).toEqual(plan.stages.map((s) => [s.first, s.last]));
    expect(manifest.plan).toMatchObject({ budgetMb: 80, hotSessions: 1, contextTokens: 8184 });
    expect(manifest.plan!.stages.every((s) => s.estimatedBytes <= 80e6)).toBe(true);
    const args = ['--ids', '1,450,4996,338', '--max-tokens', '6', '--temperature', '0'];
    const [a, b] = [await hymba('generate', staged, ...args), await hymba('generate', converted, ...args)];
    expect(a.code).toBe(0);
    expect(a.stdout).toBe(b.stdout);
  });

  it('converts a sub-layer plan (vocabulary slices) and generates as the one-stage model does', async () => {
    const staged = join(root, 'sliced');
    const args = ['--budget-mb', '40', '--context', '1024', '--max-run-tokens', '64'];
    const plan = JSON.parse((await hymba('plan', hf, ...args, '--json')).stdout) as PlanJson & {
      specs: { slice?: { kind: string } }[];
    };
    expect(plan.fits).toBe(true);
    expect(plan.specs.some((s) => s.slice?.kind === 'embed')).toBe(true);
    const r = await hymba('convert', hf, staged, ...args);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const manifest = parseManifest(await readFile(join(staged, 'hymba-manifest.json'), 'utf8'));
    expect(manifest.maxRunTokens).toBe(64);
    expect(manifest.stages.map((s) => s.slice ?? s.units)).toEqual(
      plan.specs.map((s) => (s as { slice?: object; units?: object }).slice ?? (s as { units?: object }).units),
    );
    expect(manifest.stages.map((s) => s.weightBytes)).toEqual(plan.stages.map((s) => s.weightBytes));
    const gen = ['--ids', '1,450,4996,338', '--max-tokens', '6', '--temperature', '0'];
    const [a, b] = [await hymba('generate', staged, ...gen), await hymba('generate', converted, ...gen)];
    expect(a.code).toBe(0);
    expect(a.stdout).toBe(b.stdout);
  });

  it('refuses to convert when a unit cannot fit the budget, writing nothing', async () => {
    const out = join(root, 'too-small');
    const r = await hymba('convert', hf, out, '--budget-mb', '30');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/^hymba: the model does not fit a 30 MB budget at f32: /);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stdout).toMatch(/OVER BUDGET/);
    expect(await readdir(out).catch(() => [])).toEqual([]);
  });
});
