// `hymba bench --grammar`: the cost of constrained decoding per token on the real 32001-piece vocabulary —
// the token mask in typical grammar states (inside a free JSON string is the worst case: almost every token
// is allowed, so the whole vocabulary trie is walked), and whole constrained generations over random logits.

import { createRng } from '../../engine/generate/sampling.js';
import { generate } from '../../engine/generate/generate.js';
import { anyJsonObjectGrammar, jsonSchemaGrammar } from '../../engine/constrain/json-schema.js';
import { GrammarConstraint, VocabIndex } from '../../engine/constrain/token-mask.js';
import { toolCallGrammar } from '../../engine/text/tool-calls.js';
import { HymbaTokenizer } from '../../engine/text/tokenizer.js';
import { buildTokenizerFiles } from '../test-model/tokenizer-files.js';
import { fmt, machine, time, type Timing } from './stats.js';

const PERSON = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 40 },
    age: { type: 'integer', minimum: 0, maximum: 120 },
    tags: { type: 'array', items: { type: 'string', maxLength: 12 }, maxItems: 4 },
  },
  required: ['name', 'age', 'tags'],
};

const WEATHER_TOOL = {
  name: 'get_weather',
  parameters: {
    type: 'object',
    properties: { city: { type: 'string', maxLength: 30 }, days: { type: 'integer', minimum: 1, maximum: 7 } },
    required: ['city', 'days'],
  },
};

export async function runGrammarBench(): Promise<Record<string, Timing>> {
  const files = buildTokenizerFiles();
  const tok = new HymbaTokenizer(files.tokenizerJson, files.tokenizerConfig);
  const V = tok.vocabSize;
  const results: Record<string, Timing> = {};
  const print = (what: string, t: Timing, note = ''): void => {
    results[what] = t;
    console.log(`  ${what.padEnd(46)} ${fmt(t, 2).padStart(22)} ms  ${note}`);
  };
  console.log(`\nConstrained decoding (vocabulary ${V}); median (min-max) of 9 runs`);
  console.log(`machine: ${JSON.stringify(machine())}`);

  const index = VocabIndex.of(tok);
  const texts = Array.from({ length: V }, (_, id) => index.textOf(id));
  print('vocabulary index build (once per tokenizer)', await time(async () => new VocabIndex(texts), 3, 0));

  const logits = new Float32Array(V);
  const stop = new Set([tok.eosId]);
  const maskAfter = async (what: string, grammar: ReturnType<typeof jsonSchemaGrammar>, prefix: string) => {
    const c = new GrammarConstraint(index, grammar);
    for (const id of tok.encode(prefix, { addBos: false })) c.accept(id);
    const t = await time(async () => c.mask(logits.fill(0), stop), 9, 2);
    const allowed = logits.reduce((n, x) => (x === -Infinity ? n : n + 1), 0);
    print(what, t, `${allowed} tokens allowed`);
  };
  await maskAfter('mask: schema object start', jsonSchemaGrammar(PERSON), '');
  await maskAfter('mask: inside a free string (worst case)', jsonSchemaGrammar(PERSON), '{"name": "Ada');
  await maskAfter('mask: integer in [0, 120]', jsonSchemaGrammar(PERSON), '{"name": "Ada", "age": 1');
  await maskAfter('mask: json_object, inside a value string', anyJsonObjectGrammar(), '{"a": "b');
  const lazy = toolCallGrammar([WEATHER_TOOL], { parallel: true, lazy: true });
  await maskAfter('mask: tool_choice auto, free text', lazy, 'Sure, the');

  // whole generations: random logits, so the grammar decides everything the model would not
  const rng = createRng(1);
  const stepper = {
    feed: async () => {
      const row = new Float32Array(V);
      for (let i = 0; i < V; i++) row[i] = rng.nextFloat() * 4;
      return row;
    },
  };
  let tokens = 0;
  const gen = await time(
    async () => {
      const g = generate(stepper, [1], {
        maxTokens: 200,
        temperature: 1,
        seed: 5,
        stopTokenIds: [tok.eosId],
        constraint: new GrammarConstraint(index, jsonSchemaGrammar(PERSON)),
      });
      tokens = 0;
      for (let r = await g.next(); !r.done; r = await g.next()) tokens++;
    },
    5,
    1,
  );
  print('a whole schema answer (random logits)', gen, `${tokens} tokens, ${(gen.median / tokens).toFixed(2)} ms/token`);
  return results;
}
