import { openModelDir } from '../model-dir.js';
import { idsFlag, parse, CliError } from './args.js';

export async function runLogits(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, { ids: { type: 'string' } }, 1);
  if (!values.ids) throw new CliError('--ids is required');
  const ids = idsFlag(values.ids);
  const engine = await openModelDir(positionals[0]!);
  const { logits, rows } = await engine.runner.forward(engine.newState(), ids, 'all');
  const V = engine.model.dims.V;
  const out: number[][] = [];
  for (let r = 0; r < rows; r++) out.push(Array.from(logits.subarray(r * V, (r + 1) * V)));
  process.stdout.write(JSON.stringify({ logits: out }) + '\n');
  await engine.release();
}
