// Runs in Node before the workerd tests: writes the tiny test model, converts it, and computes the logits
// that Node gets from it, so the workerd tests can check the same model gives the same numbers there.

import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { HymbaEngine } from '../../engine/model.js';
import { convertDir, dirModelSource } from '../../infra/model-dir.js';
import { initNodeOrt } from '../../infra/node-ort.js';
import { makeTestModel } from '../../infra/test-model/make-test-model.js';
import { tokenSequence } from '../helpers/tiny-model.js';

const ROOT = join(process.cwd(), 'node_modules', '.cache', 'hymba-workerd-test');
const SEED = 7;
const IDS = 20;

declare module 'vitest' {
  export interface ProvidedContext {
    /** the converted tiny model: file name -> bytes */
    tinyModelFiles: Record<string, Uint8Array>;
    /** the input ids of the logits check */
    tinyIds: number[];
    /** Node's logits for tinyIds, row-major [ids, V] */
    tinyLogits: Float32Array;
    tinyFingerprint: string;
  }
}

export default async function setup(project: TestProject): Promise<void> {
  const t0 = performance.now();
  const hfDir = join(ROOT, 'hf');
  const convertedDir = join(ROOT, 'converted');
  await rm(ROOT, { recursive: true, force: true });
  await makeTestModel(hfDir, { preset: 'tiny', seed: SEED });
  await mkdir(convertedDir, { recursive: true });
  await convertDir(hfDir, { dtype: 'f32' }, (name, bytes) => writeFile(join(convertedDir, name), bytes));

  const files: Record<string, Uint8Array> = {};
  for (const name of await readdir(convertedDir))
    files[name] = new Uint8Array(await readFile(join(convertedDir, name)));

  initNodeOrt();
  const engine = await HymbaEngine.load(dirModelSource(convertedDir));
  try {
    const ids = tokenSequence(IDS, engine.model.dims.V, 5);
    const { logits } = await engine.runner.forward(engine.newState(), ids, 'all');
    project.provide('tinyModelFiles', files);
    project.provide('tinyIds', ids);
    project.provide('tinyLogits', logits);
    project.provide('tinyFingerprint', engine.fingerprint);
  } finally {
    await engine.release();
  }
  console.log(
    `[workerd setup] tiny model written, converted and run in Node in ${(performance.now() - t0).toFixed(0)} ms`,
  );
}
