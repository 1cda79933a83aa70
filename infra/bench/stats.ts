// Timing helpers for benchmarks: medians with min and max over repeated runs, and a description of the machine.

import { cpus, totalmem } from 'node:os';
import { ort } from '../../engine/run/ort.js';

export interface Timing {
  median: number;
  min: number;
  max: number;
  runs: number;
}

/** Run `fn` `warmup` times untimed, then `runs` times; milliseconds per run. */
export async function time(fn: () => Promise<unknown>, runs = 5, warmup = 1): Promise<Timing> {
  for (let i = 0; i < warmup; i++) await fn();
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    await fn();
    samples.push(performance.now() - t);
  }
  samples.sort((a, b) => a - b);
  return {
    median: samples[Math.floor(samples.length / 2)]!,
    min: samples[0]!,
    max: samples[samples.length - 1]!,
    runs,
  };
}

export function machine(): Record<string, string | number> {
  const cpu = cpus();
  return {
    cpu: cpu[0]?.model ?? 'unknown',
    cores: cpu.length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    onnxruntimeWeb: ort.env.versions.web ?? 'unknown',
    threads: 1,
  };
}

export const fmt = (t: Timing, digits = 1): string =>
  `${t.median.toFixed(digits)} (${t.min.toFixed(digits)}-${t.max.toFixed(digits)})`;
