// `hymba upload <converted_dir> [--local [--persist-to DIR] | --remote] [--bucket hymba-models] [--prefix P]`:
// put a converted model into the R2 model store (wrangler), the manifest last; print the MODEL_PREFIX to serve it.

import { DEFAULT_BUCKET, LOCAL_PERSIST, uploadModel } from '../upload.js';
import { CliError, parse } from './args.js';

export async function runUpload(argv: string[]): Promise<void> {
  const { values, positionals } = parse(
    argv,
    {
      local: { type: 'boolean', default: false },
      remote: { type: 'boolean', default: false },
      bucket: { type: 'string', default: DEFAULT_BUCKET },
      prefix: { type: 'string' },
      'persist-to': { type: 'string' },
    },
    1,
  );
  if (values.local && values.remote) throw new CliError('give at most one of --local and --remote');
  if (values['persist-to'] !== undefined && !values.local) throw new CliError('--persist-to needs --local');
  const target = values.local ? 'local' : 'remote';
  const plan = await uploadModel(positionals[0]!, {
    target,
    bucket: values.bucket,
    ...(values.prefix !== undefined ? { prefix: values.prefix } : {}),
    ...(values['persist-to'] !== undefined ? { persistTo: values['persist-to'] } : {}),
    log: (line) => process.stderr.write(`[hymba upload] ${line}\n`),
  });
  const where = target === 'local' ? `wrangler's local R2 (${values['persist-to'] ?? LOCAL_PERSIST})` : 'R2';
  process.stdout.write(
    `uploaded ${plan.steps.length} files to ${plan.bucket}/${plan.prefix} in ${where}\n` +
      `serve it with MODEL_PREFIX=${plan.prefix} (wrangler.toml [vars], or wrangler dev --var MODEL_PREFIX:${plan.prefix})\n`,
  );
}
