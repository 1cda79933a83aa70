// `hymba upload`: the wrangler commands (manifest last, keys under the prefix, size limit for remote uploads)
// and a real upload into wrangler's local R2 simulation in a temporary state directory.

import { execFile } from 'node:child_process';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MANIFEST_FILE } from '../../engine/convert/manifest.js';
import {
  DEFAULT_BUCKET,
  normalizePrefix,
  planUpload,
  REMOTE_MAX_FILE_BYTES,
  uploadModel,
  WRANGLER,
} from '../../infra/upload.js';

const run = promisify(execFile);
const BIN = join(import.meta.dirname, '../../bin/hymba.js');
const FINGERPRINT = 'ab'.repeat(32);

/** A converted directory as far as upload cares: a valid manifest and the files it names. */
async function fakeModel(dir: string): Promise<void> {
  const manifest = {
    format: 'hymba-edge-model',
    version: 1,
    graphVersion: 2,
    fingerprint: FINGERPRINT,
    dtype: 'f32',
    config: {},
    maxRunTokens: 128,
    stages: [
      { first: 0, last: 1, embed: true, head: false, graph: 'stage-0.onnx', weightBytes: 4 },
      { first: 1, last: 2, embed: false, head: true, graph: 'stage-1.onnx', weightBytes: 4 },
    ],
    prefixState: 'prefix.state',
    tokenizer: false,
    generation: { bosTokenId: 1, eosTokenIds: [2] },
  };
  await writeFile(join(dir, MANIFEST_FILE), JSON.stringify(manifest));
  await writeFile(join(dir, 'stage-0.onnx'), 'graph zero');
  await writeFile(join(dir, 'stage-1.onnx'), 'graph one');
  await writeFile(join(dir, 'prefix.state'), 'prefix');
}

let root: string;
let model: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'hymba-upload-'));
  model = join(root, 'model');
  await run('mkdir', ['-p', model]);
  await fakeModel(model);
});
afterAll(() => rm(root, { recursive: true, force: true }));

describe('planUpload', () => {
  it('puts every file under models/<fingerprint>/ with the manifest last', async () => {
    const plan = await planUpload(model, { target: 'local', persistTo: '/state' });
    expect(plan.bucket).toBe(DEFAULT_BUCKET);
    expect(plan.prefix).toBe(`models/${FINGERPRINT}/`);
    expect(plan.steps.map((s) => s.name)).toEqual(['prefix.state', 'stage-0.onnx', 'stage-1.onnx', MANIFEST_FILE]);
    expect(plan.steps[1]!.args).toEqual([
      WRANGLER,
      'r2',
      'object',
      'put',
      `hymba-models/models/${FINGERPRINT}/stage-0.onnx`,
      '--file',
      join(model, 'stage-0.onnx'),
      '--local',
      '--persist-to',
      '/state',
    ]);
    const remote = await planUpload(model, { target: 'remote', bucket: 'b', prefix: '/custom/p' });
    expect(remote.prefix).toBe('custom/p/');
    expect(remote.steps.at(-1)!.args.slice(4)).toEqual([
      'b/custom/p/hymba-manifest.json',
      '--file',
      join(model, MANIFEST_FILE),
      '--remote',
    ]);
  });

  it('runs the commands in that order', async () => {
    const seen: string[] = [];
    await uploadModel(model, { target: 'local', exec: async (args) => void seen.push(args[4]!) });
    expect(seen.at(-1)).toBe(`hymba-models/models/${FINGERPRINT}/${MANIFEST_FILE}`);
    expect(seen).toHaveLength(4);
  });

  it('refuses what is not a complete converted model, before uploading anything', async () => {
    await expect(planUpload(root, { target: 'local' })).rejects.toThrow(/not a converted model/);
    const partial = join(root, 'partial');
    await run('cp', ['-r', model, partial]);
    await rm(join(partial, 'stage-1.onnx'));
    await expect(planUpload(partial, { target: 'local' })).rejects.toThrow(/lacks stage-1.onnx/);
  });

  it('checks wrangler’s 300 MiB limit for remote uploads only', async () => {
    const big = join(root, 'big');
    await run('cp', ['-r', model, big]);
    const f = await open(join(big, 'stage-0.onnx'), 'w');
    await f.truncate(REMOTE_MAX_FILE_BYTES + 1); // sparse: no disk used
    await f.close();
    await expect(planUpload(big, { target: 'remote' })).rejects.toThrow(
      /at most 300 MiB per file.*stage-0.onnx is larger/,
    );
    await expect(planUpload(big, { target: 'local' })).resolves.toBeTruthy();
  });

  it('normalises prefixes', () => {
    expect(normalizePrefix('models/x')).toBe('models/x/');
    expect(normalizePrefix('/models/x/')).toBe('models/x/');
    expect(() => normalizePrefix('/')).toThrow(/empty/);
  });
});

describe('hymba upload --local', () => {
  it('fills wrangler’s local R2 simulation and prints the MODEL_PREFIX', async () => {
    const persist = join(root, 'state');
    const { stdout } = await run('node', [
      BIN,
      'upload',
      model,
      '--local',
      '--persist-to',
      persist,
      '--prefix',
      'models/t/',
    ]);
    expect(stdout).toMatch(/uploaded 4 files to hymba-models\/models\/t\//);
    expect(stdout).toMatch(/MODEL_PREFIX=models\/t\//);
    // read one object back through wrangler itself
    const got = await run('node', [
      WRANGLER,
      'r2',
      'object',
      'get',
      'hymba-models/models/t/stage-1.onnx',
      '--local',
      '--persist-to',
      persist,
      '--pipe',
    ]);
    expect(got.stdout).toBe('graph one');
  }, 60_000);
});
