import { generate } from '../../engine/generate/generate.js';
import { openModelDir } from '../model-dir.js';
import { CliError, idsFlag, intFlag, numberFlag, parse } from './args.js';

export async function runGenerate(argv: string[]): Promise<void> {
  const { values, positionals } = parse(
    argv,
    {
      ids: { type: 'string' },
      prompt: { type: 'string' },
      'max-tokens': { type: 'string', default: '16' },
      temperature: { type: 'string', default: '0' },
      seed: { type: 'string' },
      'ignore-eos': { type: 'boolean', default: false },
    },
    1,
  );
  if ((values.ids === undefined) === (values.prompt === undefined))
    throw new CliError('give exactly one of --ids or --prompt');
  const engine = await openModelDir(positionals[0]!);
  const tok = engine.tokenizer;
  let prompt: number[];
  if (values.ids !== undefined) prompt = idsFlag(values.ids);
  else if (tok) prompt = tok.encode(values.prompt!, { addBos: tok.addBosToken });
  else throw new CliError('--prompt needs a model with tokenizer files; use --ids');
  const state = engine.newState();
  const it = generate(
    engine.runner.stepper(state),
    prompt,
    {
      maxTokens: intFlag(values['max-tokens'], 'max-tokens')!,
      temperature: numberFlag(values.temperature, 'temperature')!,
      seed: intFlag(values.seed, 'seed'),
      stopTokenIds: values['ignore-eos'] ? [] : engine.manifest.generation.eosTokenIds,
    },
    tok ? () => tok.incrementalDecoder({ skipSpecial: true }) : undefined,
  );
  const ids: number[] = [];
  let text = '';
  let r = await it.next();
  for (; !r.done; r = await it.next()) {
    ids.push(r.value.id);
    text += r.value.text;
  }
  // like Hugging Face generate, an ending EOS is part of the output ids (not of the text)
  if (r.value.stopTokenId !== undefined) ids.push(r.value.stopTokenId);
  text += r.value.tail;
  const out: Record<string, unknown> = { ids };
  if (tok) out.text = text;
  out.finish_reason = r.value.finishReason;
  process.stdout.write(JSON.stringify(out) + '\n');
  await engine.release();
}
