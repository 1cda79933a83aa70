// `hymba <command>`: convert, plan and upload Hymba checkpoints, run them, make test checkpoints, benchmark.

import { runConvert } from './convert.js';
import { runGenerate } from './generate.js';
import { runLogits } from './logits.js';
import { runMakeTestModel } from './make-test-model.js';
import { CliError } from './args.js';
import { runEngineBench } from '../bench/engine-bench.js';
import { runDev } from './dev.js';
import { runPlan } from './plan.js';
import { runUpload } from './upload.js';

const COMMANDS: Record<string, (argv: string[]) => Promise<void>> = {
  convert: runConvert,
  plan: runPlan,
  upload: runUpload,
  logits: runLogits,
  generate: runGenerate,
  'make-test-model': runMakeTestModel,
  bench: runEngineBench,
  dev: runDev,
};

const USAGE = `usage: hymba <command> [options]
  make-test-model <dir> --preset tiny|hymba-125m|hymba-350m|hymba-1.5b [--layers N] [--seed S]
  convert <hf_dir> <out_dir> [--dtype f32|f16|int8|q4] [--budget-mb N [--context N] [--sessions N] [--max-run-tokens T]]
  plan <model_dir> [--budget-mb 128] [--dtype f32|f16|int8|q4] [--context N] [--sessions N] [--max-run-tokens T] [--json] [--measure]
  upload <converted_dir> [--local [--persist-to DIR] | --remote] [--bucket hymba-models] [--prefix models/<fingerprint>/]
  logits <model_dir> --ids 1,2,3
  generate <model_dir> (--ids 1,2,3 | --prompt "text") --max-tokens N [--temperature T] [--seed S]
  bench [--engine | --sessions | --stages | --grammar] [--json <file>]
  dev [--model <dir>] [--port 8787]     (npm start)`;

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h') {
    process.stdout.write(USAGE + '\n');
    return;
  }
  const run = COMMANDS[command];
  if (!run) throw new CliError(`unknown command "${command}"\n${USAGE}`);
  await run(rest);
}

main(process.argv.slice(2)).catch((e: unknown) => {
  const message = e instanceof Error ? e.message : String(e);
  process.stderr.write(`hymba: ${message.split('\n')[0]}\n`);
  if (process.env.HYMBA_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`);
  process.exitCode = e instanceof CliError ? 2 : 1;
});
