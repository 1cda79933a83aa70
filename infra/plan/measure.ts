// `hymba plan --measure`: load each stage of a converted model in a fresh Node process and read what it costs,
// next to the planner's estimate. One process per stage because WASM memory never shrinks.

import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';

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

function runChild(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', CHILD, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(Buffer.concat(out).toString('utf8'));
      else reject(new Error(`stage memory child exited ${code}: ${Buffer.concat(err).toString('utf8').slice(-1000)}`));
    });
  });
}

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
