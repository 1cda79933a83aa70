// Child process of the stages benchmark (`npm run bench -- --stages`), one fresh process per job so that the
// parent's WASM heap stays small and two conversions can run at once on two cores.
// usage: node --import tsx infra/bench/stages/child.ts convert <hf_dir> <out_dir> <dtype> <stages json>
//        node --import tsx infra/bench/stages/child.ts decode <converted_dir> <context> <batch stages json> <batches json>
// `convert` writes a converted model with the given layer ranges. `decode` loads every stage of a converted
// model, brings one session to `context` text tokens (a real prefill through all stages), then times one
// decode step per stage: alone (batch 1), and for each B in `batches` at the stages listed in `batch stages`,
// B sessions as one ONNX run (StageRunner.runBatch, batching ON) and one run per session (OFF). Prints
// `@@decode {json}`.

import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HymbaEngine } from '../../../engine/run/loaded-model.js';
import { isModelDtype } from '../../../engine/convert/quantize.js';
import type { StageInput } from '../../../engine/run/stage-runner.js';
import { cloneState, type HymbaState } from '../../../engine/state/state.js';
import { convertDir, dirModelSource } from '../../model-dir.js';
import { initNodeOrt } from '../../node-ort.js';
import { time, type Timing } from '../stats.js';

export interface StageDecodeTiming {
  stage: number;
  first: number;
  last: number;
  embed: boolean;
  head: boolean;
  /** one session, one token: StageRunner.run */
  single: Timing;
  /** per B: B sessions in one runBatch (on) and B runs one after another (off), ms per step of all B */
  batches: { B: number; on: Timing; off: Timing }[];
}

export interface DecodeReport {
  context: number;
  position: number;
  prefillMs: number;
  stages: StageDecodeTiming[];
}

/** Session `state`'s layers [first, last), copied, with its position: what one stage object holds. */
function slice(state: HymbaState, first: number, last: number): HymbaState {
  return cloneState({
    position: state.position,
    layers: state.layers.map((l, i) => (i >= first && i < last ? l : undefined)),
  });
}

async function decode(dir: string, context: number, batchStages: number[], batches: number[]): Promise<void> {
  initNodeOrt();
  const engine = await HymbaEngine.load(dirModelSource(dir));
  const d = engine.model.dims;
  const base = engine.newState();
  const prompt = Array.from({ length: context }, (_, i) => 3 + ((i * 7919) % (d.V - 3)));
  const t0 = performance.now();
  await engine.runner.forward(base, prompt, 'none');
  const prefillMs = performance.now() - t0;
  // a hidden row of plausible magnitude for stages that take hidden states (values do not change the timing)
  const hidden = Float32Array.from({ length: d.H }, (_, i) => Math.sin(i * 0.37));
  const stages: StageDecodeTiming[] = [];
  for (const [k, runner] of engine.runner.stageRunners.entries()) {
    const { first, last, embed, head } = runner.stage.spec;
    const input = (j: number): StageInput => (embed ? { ids: [100 + j] } : { hidden });
    const one = slice(base, first, last);
    let j = 0;
    const single = await time(() => runner.run(one, input(j++), 0), 9, 2);
    const rows: StageDecodeTiming['batches'] = [];
    if (batchStages.includes(k))
      for (const B of batches) {
        const on = Array.from({ length: B }, () => slice(base, first, last));
        const off = Array.from({ length: B }, () => slice(base, first, last));
        const onT = await time(
          () => runner.runBatch(on.map((state, b) => ({ state, input: input(j + b) }))).then(() => j++),
          5,
          1,
        );
        const offT = await time(
          async () => {
            for (const [b, state] of off.entries()) await runner.run(state, input(j + b), 0);
            j++;
          },
          5,
          1,
        );
        rows.push({ B, on: onT, off: offT });
      }
    stages.push({ stage: k, first, last, embed, head, single, batches: rows });
  }
  await engine.release();
  const report: DecodeReport = { context, position: base.position, prefillMs, stages };
  process.stdout.write(`@@decode ${JSON.stringify(report)}\n`);
}

async function main(): Promise<void> {
  const [cmd, ...args] = process.argv.slice(2);
  if (cmd === 'convert') {
    const [hf, out, dtype, ranges] = args;
    if (!hf || !out || !dtype || !ranges || !isModelDtype(dtype))
      throw new Error('usage: convert <hf> <out> <dtype> <stages json>');
    await mkdir(out, { recursive: true });
    const stages = JSON.parse(ranges) as { first: number; last: number }[];
    await convertDir(hf, { dtype, stages }, (n, b) => writeFile(join(out, n), b));
    process.stdout.write('@@converted\n');
  } else if (cmd === 'decode') {
    const [dir, context, batchStages, batches] = args;
    if (!dir || !context || !batchStages || !batches)
      throw new Error('usage: decode <dir> <context> <stages json> <batches json>');
    await decode(dir, Number(context), JSON.parse(batchStages) as number[], JSON.parse(batches) as number[]);
  } else throw new Error(`unknown command ${cmd}`);
}

await main();
