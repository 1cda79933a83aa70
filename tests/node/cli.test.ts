// The `hymba` CLI end to end, as a user runs it: separate processes, files on disk, JSON on stdout.

import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

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
