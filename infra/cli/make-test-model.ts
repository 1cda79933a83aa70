import { makeTestModel } from '../test-model/make-test-model.js';
import { PRESET_NAMES, type PresetName } from '../test-model/presets.js';
import { CliError, intFlag, parse } from './args.js';

export async function runMakeTestModel(argv: string[]): Promise<void> {
  const { values, positionals } = parse(
    argv,
    { preset: { type: 'string', default: 'tiny' }, layers: { type: 'string' }, seed: { type: 'string' } },
    1,
  );
  const preset = values.preset as PresetName;
  if (!PRESET_NAMES.includes(preset)) throw new CliError(`--preset must be one of ${PRESET_NAMES.join(', ')}`);
  const layers = intFlag(values.layers, 'layers', 1);
  const seed = intFlag(values.seed, 'seed') ?? 0;
  await makeTestModel(positionals[0]!, { preset, seed, ...(layers !== undefined ? { layers } : {}) });
  process.stdout.write(`wrote ${preset} test checkpoint to ${positionals[0]}\n`);
}
