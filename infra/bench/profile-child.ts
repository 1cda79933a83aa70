// Child process of the engine benchmark: run one layer graph with ORT's profiler on and let ORT print its
// events (JSON, one per line, to stdout in this build). The parent parses them between the markers.
// usage: node --import tsx infra/bench/profile-child.ts <graph file> <runs>

import { readFileSync } from 'node:fs';
import { ort } from '../../engine/run/ort.js';
import { initNodeOrt } from '../node-ort.js';
import { layerModel, runAll, workloads } from './layer-graph.js';

export const PHASES = ['decode', 'decodeBatch', 'prefill128'] as const;

async function main(): Promise<void> {
  const [file, runsArg] = process.argv.slice(2);
  if (!file) throw new Error('usage: profile-child.ts <graph file> <runs>');
  const runs = Number(runsArg ?? 5);
  initNodeOrt();
  const graph = readFileSync(file);
  const d = layerModel().dims;
  const work = workloads(d);
  for (const phase of PHASES) {
    const s = await ort.InferenceSession.create(graph, {
      executionProviders: ['wasm'],
      graphOptimizationLevel: 'all',
      enableProfiling: true,
    });
    const feeds = work[phase]();
    process.stdout.write(`@@begin ${phase}\n`);
    for (let i = 0; i < runs + 1; i++) await runAll(s, feeds); // the first run is dropped by the parent
    s.endProfiling();
    await s.release();
    process.stdout.write(`@@end ${phase}\n`);
  }
}

await main();
