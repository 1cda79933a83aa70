// The stages benchmark's report: lines of text gathered while the sections are written, printed at the end,
// and the number formats and aligned tables every section uses.

import { MB } from '../../../engine/stages/memory.js';
import type { Timing } from '../stats.js';

/** bytes as MB with `digits` decimals */
export const mb = (bytes: number, digits = 1): string => (bytes / MB).toFixed(digits);
/** milliseconds with `digits` decimals */
export const ms = (x: number, digits = 1): string => x.toFixed(digits);
export const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

/** Median, min and max of samples taken by hand (stats.time takes its own). */
export function summarize(samples: number[]): Timing {
  const s = [...samples].sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)]!, min: s[0]!, max: s[s.length - 1]!, runs: s.length };
}

/** Rows as columns two spaces apart, indented two: the first `leftColumns` padded right, the rest left. */
export function table(rows: string[][], leftColumns = 1): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows
    .map((r) =>
      r
        .map((cell, c) => (c < leftColumns ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!)))
        .join('  ')
        .trimEnd(),
    )
    .map((l) => `  ${l}`)
    .join('\n');
}

/** What the bench is doing now, on stderr (stdout carries only the report). */
export const progress = (what: string): void => void process.stderr.write(`[bench --stages] ${what}\n`);

/** The report's lines: a section is a blank line and its title. */
export class Report {
  private readonly out: string[] = [];

  section(title: string): void {
    this.out.push('', title);
  }

  line(text = ''): void {
    this.out.push(text);
  }

  table(rows: string[][], leftColumns = 1): void {
    this.out.push(table(rows, leftColumns));
  }

  text(): string {
    return this.out.join('\n');
  }
}
