// Run a layer graph under ORT's profiler in a child process and aggregate its kernel times into shares.

import { runTsChild } from '../child-process.js';
import { fileURLToPath } from 'node:url';

const MATMUL_OPS = new Set([
  'MatMul',
  'FusedMatMul',
  'Gemm',
  'DynamicQuantizeMatMul',
  'MatMulIntegerToFloat',
  'MatMulInteger',
  'MatMulNBits',
]);
const NORM_OPS = new Set(['SimplifiedLayerNormalization', 'SkipSimplifiedLayerNormalization']);

export interface Shares {
  /** summed kernel microseconds per run (first run dropped) */
  kernelUsPerRun: number;
  runs: number;
  /** fractions of the summed kernel time */
  byScope: Record<string, number>;
  byKind: Record<string, number>;
}

interface Event {
  cat: string;
  name: string;
  dur: number;
  ts: number;
  args?: { op_name?: string };
}

/** Run `node --import tsx <script> ...args` and return its stdout. */
export function runChild(script: string, args: string[], nodeFlags: string[] = []): Promise<string> {
  return runTsChild(fileURLToPath(new URL(script, import.meta.url)), args, nodeFlags);
}

function aggregate(events: Event[], runs: number): Shares {
  // drop everything inside the first model_run (warm-up)
  const modelRuns = events.filter((e) => e.name === 'model_run').sort((a, b) => a.ts - b.ts);
  const firstEnd = modelRuns[0] ? modelRuns[0].ts + modelRuns[0].dur : 0;
  const nodes = events.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time') && e.ts >= firstEnd);
  const byScope: Record<string, number> = {};
  const byKind: Record<string, number> = { 'weight matmuls': 0, norms: 0, 'ssm excl. matmuls and norms': 0, other: 0 };
  let total = 0;
  for (const e of nodes) {
    total += e.dur;
    const parts = e.name.split('/');
    const scope = parts.length >= 3 ? parts[1]! : parts.length === 2 ? 'layer (in_proj, input norm)' : 'outside layer';
    byScope[scope] = (byScope[scope] ?? 0) + e.dur;
    const op = e.args?.op_name ?? '';
    const kind = MATMUL_OPS.has(op)
      ? 'weight matmuls'
      : NORM_OPS.has(op)
        ? 'norms'
        : scope === 'ssm'
          ? 'ssm excl. matmuls and norms'
          : 'other';
    byKind[kind] = (byKind[kind] ?? 0) + e.dur;
  }
  const frac = (r: Record<string, number>): Record<string, number> =>
    Object.fromEntries(Object.entries(r).map(([k, v]) => [k, total > 0 ? v / total : 0]));
  return { kernelUsPerRun: total / runs, runs, byScope: frac(byScope), byKind: frac(byKind) };
}

/** Profile decode and prefill-128 of the graph in `file`, `runs` runs each after one warm-up. */
export async function profileLayer(file: string, runs: number): Promise<Record<string, Shares>> {
  const out = await runChild('./profile-child.ts', [file, String(runs)]);
  const result: Record<string, Shares> = {};
  let phase: string | null = null;
  let events: Event[] = [];
  for (const line of out.split('\n')) {
    if (line.startsWith('@@begin ')) {
      phase = line.slice(8).trim();
      events = [];
    } else if (line.startsWith('@@end ')) {
      if (phase) result[phase] = aggregate(events, runs);
      phase = null;
    } else if (phase && line.startsWith('{')) {
      events.push(JSON.parse(line.replace(/,\s*$/, '')) as Event);
    }
  }
  return result;
}
