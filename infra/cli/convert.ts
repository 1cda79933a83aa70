import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isModelDtype, MODEL_DTYPES } from '../../engine/quantize.js';
import { convertDir } from '../model-dir.js';
import { CliError, parse } from './args.js';

export async function runConvert(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, { dtype: { type: 'string', default: 'f32' } }, 2);
  const dtype = values.dtype;
  if (!isModelDtype(dtype)) throw new CliError(`--dtype must be one of ${MODEL_DTYPES.join(', ')}, got "${dtype}"`);
  const [hfDir, outDir] = positionals as [string, string];
  await mkdir(outDir, { recursive: true });
  const written: string[] = [];
  await convertDir(hfDir, { dtype }, async (name, bytes) => {
    await writeFile(join(outDir, name), bytes);
    written.push(`${name} (${bytes.length} bytes)`);
  });
  process.stdout.write(`converted ${hfDir} -> ${outDir}\n  ${written.join('\n  ')}\n`);
}
