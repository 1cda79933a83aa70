// How far f16, int8 and q4 weights move the logits from f32: mean and max |difference|, cosine similarity and
// top-1 agreement over 256 positions of a fixed token sequence, on the tiny preset (through `hymba convert`)
// and on one Hymba-1.5B-shaped layer with the real vocabulary and width. Thresholds sit below the measured
// values (in the comments below) with a margin; random-weight models have flat logits (the top two are ~1 apart
// at a logit std of 4), so top-1 agreement here is a pessimistic measure of what a trained model keeps.

import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadWeights, openCheckpoint } from '../../engine/convert/checkpoint.js';
import { emitGraph } from '../../engine/onnx/emit.js';
import { buildStageGraph } from '../../engine/stages/stage-graph.js';
import { expandQ4Graph } from '../../engine/onnx/q4-expand.js';
import type { ModelDtype } from '../../engine/convert/quantize.js';
import { loadGraph } from '../../engine/run/ort.js';
import { HymbaRunner } from '../../engine/run/runner.js';
import { dirCheckpointSource } from '../../infra/node-files.js';
import { initNodeOrt } from '../../infra/node-ort.js';
import { makeTestModel } from '../../infra/test-model/make-test-model.js';
import { makeConvertedModel, tokenSequence } from '../helpers/tiny-model.js';

const POSITIONS = 256;
const DTYPES: ModelDtype[] = ['f32', 'f16', 'int8', 'q4'];

interface Quality {
  meanAbs: number;
  maxAbs: number;
  cosMean: number;
  cosMin: number;
  top1: number;
}

/** Compare [rows, V] logits with the f32 ones, row by row. */
function quality(ref: Float32Array, got: Float32Array, V: number): Quality {
  const rows = ref.length / V;
  let sumAbs = 0;
  let maxAbs = 0;
  let cosSum = 0;
  let cosMin = 1;
  let agree = 0;
  for (let r = 0; r < rows; r++) {
    let dot = 0;
    let nr = 0;
    let ng = 0;
    let br = 0;
    let bg = 0;
    for (let v = 0; v < V; v++) {
      const a = ref[r * V + v]!;
      const b = got[r * V + v]!;
      const d = Math.abs(a - b);
      sumAbs += d;
      if (d > maxAbs) maxAbs = d;
      dot += a * b;
      nr += a * a;
      ng += b * b;
      if (a > ref[r * V + br]!) br = v;
      if (b > got[r * V + bg]!) bg = v;
    }
    const cos = dot / Math.sqrt(nr * ng);
    cosSum += cos;
    cosMin = Math.min(cosMin, cos);
    if (br === bg) agree++;
  }
  return { meanAbs: sumAbs / ref.length, maxAbs, cosMean: cosSum / rows, cosMin, top1: agree / rows };
}

function table(title: string, rows: Map<ModelDtype, { q: Quality; bytes: number }>): string {
  const lines = [
    `${title}: logits vs f32 over ${POSITIONS} positions`,
    'dtype  graph bytes   mean|d|    max|d|   cos mean   cos min    top-1',
  ];
  for (const [dtype, { q, bytes }] of rows)
    lines.push(
      `${dtype.padEnd(5)} ${String(bytes).padStart(12)}  ${q.meanAbs.toExponential(2).padStart(8)}  ${q.maxAbs
        .toFixed(3)
        .padStart(8)}  ${q.cosMean.toFixed(5)}  ${q.cosMin.toFixed(5)}  ${q.top1.toFixed(3)}`,
    );
  return lines.join('\n');
}

/** Lower bounds for each dtype: top-1 agreement, mean cosine (measured values beside each call). */
type Floors = Record<'f16' | 'int8' | 'q4', { top1: number; cos: number }>;

function checkFloors(results: Map<ModelDtype, { q: Quality; bytes: number }>, floors: Floors): void {
  for (const dtype of ['f16', 'int8', 'q4'] as const) {
    const { q } = results.get(dtype)!;
    expect(q.top1, `${dtype} top-1`).toBeGreaterThanOrEqual(floors[dtype].top1);
    expect(q.cosMean, `${dtype} cosine`).toBeGreaterThanOrEqual(floors[dtype].cos);
    expect(Number.isFinite(q.maxAbs)).toBe(true);
  }
  // each format is smaller than the one before it
  const bytes = DTYPES.map((d) => results.get(d)!.bytes);
  for (let i = 1; i < bytes.length; i++) expect(bytes[i]).toBeLessThan(bytes[i - 1]!);
}

describe('tiny preset, converted per dtype', () => {
  const results = new Map<ModelDtype, { q: Quality; bytes: number }>();

  beforeAll(async () => {
    let ref: Float32Array | null = null;
    for (const dtype of DTYPES) {
      const m = await makeConvertedModel({ preset: 'tiny', seed: 7, dtype });
      try {
        const ids = tokenSequence(POSITIONS, m.model.dims.V, 5);
        const { logits } = await m.engine.runner.forward(m.engine.newState(), ids, 'all');
        ref ??= logits;
        const bytes = (await readFile(join(m.convertedDir, 'stage-0.onnx'))).length;
        results.set(dtype, { q: quality(ref, logits, m.model.dims.V), bytes });
        expect(m.engine.manifest.dtype).toBe(dtype);
      } finally {
        await m.cleanup();
      }
    }
    console.log(table('tiny (8 layers, H 64, V 32001)', results));
  });

  it('keeps f16 exact, int8 and q4 above their floors', () => {
    // measured: f16 1.000 / 1.00000, int8 0.855 / 0.9978, q4 0.22 / 0.868
    checkFloors(results, {
      f16: { top1: 0.99, cos: 0.99999 },
      int8: { top1: 0.75, cos: 0.995 },
      q4: { top1: 0.12, cos: 0.82 },
    });
  });
});

describe('one Hymba-1.5B-shaped layer (H 1600, V 32001)', () => {
  const results = new Map<ModelDtype, { q: Quality; bytes: number }>();
  let root = '';

  beforeAll(async () => {
    initNodeOrt();
    root = await mkdtemp(join(tmpdir(), 'hymba-quality-'));
    await makeTestModel(join(root, 'hf'), { preset: 'hymba-1.5b', layers: 1, seed: 7, tokenizer: false });
    const ckpt = await openCheckpoint(dirCheckpointSource(join(root, 'hf')));
    const weights = await loadWeights(ckpt);
    await ckpt.close();
    const model = { config: ckpt.config, dims: ckpt.dims };
    const spec = { first: 0, last: 1, embed: true, head: true };
    const ids = tokenSequence(POSITIONS, model.dims.V, 5);
    let ref: Float32Array | null = null;
    for (const dtype of DTYPES) {
      // what convertCheckpoint builds, run in memory (q4 expanded in JS, as a Worker would load it)
      const graph = emitGraph(buildStageGraph(model, weights, spec, { dtype })).graph;
      const loaded = await loadGraph(dtype === 'q4' ? expandQ4Graph(graph) : graph);
      try {
        const runner = new HymbaRunner(model, [{ spec, graph: loaded }], 128);
        const { logits } = await runner.forward(await runner.metaPrefix(), ids, 'all');
        ref ??= logits;
        results.set(dtype, { q: quality(ref, logits, model.dims.V), bytes: graph.length });
      } finally {
        await loaded.session.release();
      }
    }
    console.log(table('Hymba-1.5B shapes, 1 layer', results));
  });
  afterAll(() => rm(root, { recursive: true, force: true }));

  it('keeps f16 exact, int8 and q4 above their floors', () => {
    // measured: f16 1.000 / 1.00000, int8 0.949 / 0.9988, q4 0.74 / 0.961
    checkFloors(results, {
      f16: { top1: 0.99, cos: 0.99999 },
      int8: { top1: 0.88, cos: 0.995 },
      q4: { top1: 0.6, cos: 0.93 },
    });
  });
});
