// Small argument helpers over node:util parseArgs, with errors that name the flag.

import { parseArgs, type ParseArgsConfig } from 'node:util';

export class CliError extends Error {}

export function parse<T extends NonNullable<ParseArgsConfig['options']>>(
  argv: string[],
  options: T,
  positionals: number,
) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new CliError(e instanceof Error ? e.message : String(e));
  }
  if (parsed.positionals.length !== positionals)
    throw new CliError(`expected ${positionals} positional argument(s), got ${parsed.positionals.length}`);
  return parsed;
}

export function intFlag(value: string | undefined, flag: string, min = 0): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new CliError(`--${flag} must be an integer >= ${min}, got "${value}"`);
  return n;
}

export function numberFlag(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new CliError(`--${flag} must be a number >= 0, got "${value}"`);
  return n;
}

export function idsFlag(value: string): number[] {
  const ids = value.split(',').map((s) => s.trim());
  if (ids.some((s) => !/^\d+$/.test(s))) throw new CliError(`--ids must be comma-separated token ids, got "${value}"`);
  return ids.map(Number);
}
