// `hymba plan --measure`: load each stage of a converted model in a fresh Node process and read what it costs,
// next to the planner's estimate. One process per stage because WASM memory never shrinks.

import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { runTsChild } from '../child-process.js';

const Snapshot = z.object({ rss: z.number(), jsHeap: z.number(), wasmHeap: z.number().nullable() });
const ChildReport = z.object({ init: Snapshot, created: Snapshot, decode: Snapshot, run: Snapshot });
export type ChildReport = z.infer<typeof ChildReport>;

export interface StageMeasurement {
  stage: number;
  /** WASM heap growth from an initialised ORT to the stage's session created */
  heapAfterLoad: number;
  /** the same after one decode run at the plan's context and one run of maxRunTokens fresh tokens */
  heapAfterRuns: number;
  /** process RSS growth over the same span as heapAfterRuns */
  rssAfterRuns: number;
  /** the whole report of the child */
  raw: ChildReport;
}

const CHILD = fileURLToPath(new URL('./stage-memory-child.ts', import.meta.url));

const runChild = (args: string[]): Promise<string> => runTsChild(CHILD, args, ['--expose-gc']);

/** Parse the child's `@@mem {json}` line. */
export function parseChildReport(stdout: string): ChildReport {
  const line = stdout.split('\n').find((l) => l.startsWith('@@mem '));
  if (!line) throw new Error('the stage memory child printed no @@mem line');
  return ChildReport.parse(JSON.parse(line.slice('@@mem '.length)));
}

const heap = (s: z.infer<typeof Snapshot>): number => s.wasmHeap ?? 0;

/** Measure stage `stage` of a converted directory in a fresh process. */
export async function measureStage(
  dir: string,
  stage: number,
  opts: { runTokens: number; context: number },
): Promise<StageMeasurement> {
  const raw = parseChildReport(await runChild([dir, String(stage), String(opts.runTokens), String(opts.context)]));
  return {
    stage,
    heapAfterLoad: heap(raw.created) - heap(raw.init),
    heapAfterRuns: heap(raw.run) - heap(raw.init),
    rssAfterRuns: raw.run.rss - raw.init.rss,
    raw,
  };
}
