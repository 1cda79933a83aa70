import { beforeAll, describe, expect, it } from 'vitest';
import Ajv2020 from 'ajv/dist/2020.js';
import { anyText, lit, seq, startMatch, type Grammar, type MatchState } from '../../engine/constrain/grammar.js';
import { anyJsonObjectGrammar, jsonSchemaGrammar } from '../../engine/constrain/json-schema.js';
import { createRng, sample } from '../../engine/generate/sampling.js';
import { GrammarConstraint, VocabIndex } from '../../engine/constrain/token-mask.js';
import { HymbaTokenizer } from '../../engine/text/tokenizer.js';
import { buildTokenizerFiles } from '../../infra/test-model/tokenizer-files.js';

const ajv = new Ajv2020({ strict: false, validateFormats: false });
const EOS = 2;

let tok: HymbaTokenizer;
let index: VocabIndex;

beforeAll(() => {
  const files = buildTokenizerFiles();
  tok = new HymbaTokenizer(files.tokenizerJson, files.tokenizerConfig);
  index = VocabIndex.of(tok);
});

const id = (piece: string): number => {
  const found = tok.pieceToId(piece);
  if (found === undefined) throw new Error(`no piece ${piece}`);
  return found;
};

/** The ids allowed after `state`, by trying every id's text on its own. */
function bruteForce(state: MatchState, first: boolean): number[] {
  const out: number[] = [];
  for (let i = 0; i < index.size; i++) {
    let text = index.textOf(i);
    if (text !== null && first && text.startsWith(' ')) text = text.slice(1);
    if (text && state.advance(text) !== null) out.push(i);
  }
  return out;
}

const sorted = (ids: Int32Array): number[] => Array.from(ids).sort((a, b) => a - b);

/** A MatchState that is not the grammar module's own, to exercise the generic walk. */
class Wrapped implements MatchState {
  constructor(private readonly inner: MatchState) {}
  advance(text: string): MatchState | null {
    const next = this.inner.advance(text);
    return next && new Wrapped(next);
  }
  get complete(): boolean {
    return this.inner.complete;
  }
  get closed(): boolean {
    return this.inner.closed;
  }
}

const PERSON = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 12 },
    age: { type: 'integer', minimum: -40, maximum: 130 },
    role: { enum: ['admin', 'user', 'guest'] },
    tags: { type: 'array', items: { type: 'string', maxLength: 6 }, maxItems: 3 },
    active: { type: 'boolean' },
  },
  required: ['name', 'age', 'role'],
  additionalProperties: false,
};

describe('VocabIndex', () => {
  it('token texts: pieces with spaces, ASCII bytes only, no special tokens', () => {
    expect(index.size).toBe(32001);
    expect(index.textOf(id('▁the'))).toBe(' the');
    expect(index.textOf(id('<0x0A>'))).toBe('\n');
    expect(index.textOf(id('<0x7B>'))).toBe('{');
    expect(index.textOf(id('<0xE6>'))).toBeNull(); // a lone byte of a multi-byte character
    for (const special of [0, 1, 2, 32000]) expect(index.textOf(special)).toBeNull();
    expect(VocabIndex.of(tok)).toBe(index); // cached per tokenizer
  });

  it('the trie walk finds exactly the ids whose text advances the state (brute force over all ids)', () => {
    const person = jsonSchemaGrammar(PERSON);
    const states: [string, MatchState, boolean][] = [
      ['object start, first token', startMatch(person), true],
      ['object start, not first', startMatch(person), false],
      ['after {', startMatch(person).advance('{')!, false],
      ['in a string', startMatch(person).advance('{"name": "Jo')!, false],
      ['string near maxLength', startMatch(person).advance('{"name":"abcdefghij')!, false],
      ['in an integer range', startMatch(person).advance('{"name":"x","age":1')!, false],
      ['after a negative sign', startMatch(person).advance('{"name":"x","age":-')!, false],
      ['in an enum', startMatch(person).advance('{"name":"x","age":1,"role":"')!, false],
      ['after a comma', startMatch(person).advance('{"name":"x","age":1,"role":"user",')!, false],
      ['json_object, first', startMatch(anyJsonObjectGrammar()), true],
      ['json_object value', startMatch(anyJsonObjectGrammar()).advance('{"a": ')!, false],
      ['free text, first', startMatch(anyText()), true],
    ];
    for (const [name, state, first] of states) {
      const want = bruteForce(state, first);
      expect({ name, ids: sorted(index.allowed(state, first)) }).toEqual({ name, ids: want });
    }
    const [, inString] = states[3]!;
    expect(sorted(index.allowed(new Wrapped(inString), false))).toEqual(bruteForce(inString, false));
    expect(sorted(index.allowed(new Wrapped(startMatch(person)), true))).toEqual(bruteForce(startMatch(person), true));
  });

  it('works with any vocabulary (constructor for other tokenizers)', () => {
    const small = new VocabIndex(['a', 'ab', null, '', ' a', 'b', 'abc', ' ']);
    const g = seq(lit('ab'), lit('c'));
    expect(sorted(small.allowed(startMatch(g), false))).toEqual([0, 1, 6]);
    expect(sorted(small.allowed(startMatch(g), true))).toEqual([0, 1, 4, 6]); // ' a' loses its space
    expect(sorted(small.allowed(startMatch(g).advance('a')!, false))).toEqual([5]);
  });
});

describe('GrammarConstraint', () => {
  it('first token: a leading space is dropped, and a token that is only a space is not allowed', () => {
    const c = new GrammarConstraint(index, lit('{}'));
    const logits = new Float32Array(index.size).fill(1);
    c.mask(logits, new Set([EOS]));
    const allowed = [...logits.keys()].filter((i) => logits[i] !== -Infinity);
    expect(allowed).toContain(id('▁{'));
    expect(allowed).toContain(id('{'));
    expect(allowed).not.toContain(EOS); // not complete yet
    expect(tok.decode([id('▁{'), id('}')])).toBe('{}'); // the decoder drops the space, as the mask assumed

    const free = new GrammarConstraint(index, anyText());
    const row = new Float32Array(index.size).fill(1);
    free.mask(row, new Set([EOS]));
    expect(row[id('▁')]).toBe(-Infinity); // would add nothing
    expect(row[id('▁the')]).toBe(1);
    expect(row[EOS]).toBe(1); // complete
    free.accept(id('▁the'));
    const next = new Float32Array(index.size).fill(1);
    free.mask(next, new Set([EOS]));
    expect(next[id('▁')]).toBe(1); // mid-sequence a space is a space

    // after the first token, a leading space counts
    const later = new GrammarConstraint(index, lit('{}'));
    later.accept(id('▁{'));
    const row2 = new Float32Array(index.size).fill(1);
    later.mask(row2, new Set([EOS]));
    expect(row2[id('}')]).toBe(1);
    expect(row2[id('▁}')]).toBe(-Infinity);
    later.accept(id('}'));
    expect(later.complete).toBe(true);
    const row3 = new Float32Array(index.size).fill(1);
    later.mask(row3, new Set([EOS]));
    expect([...row3.keys()].filter((i) => row3[i] !== -Infinity)).toEqual([EOS]); // closed: only the stop
  });

  it('throws when nothing is allowed, and on a token the grammar rejects', () => {
    const privateUse = new GrammarConstraint(index, lit('\ue000')); // no piece holds it; its bytes are >= 0x80
    expect(() => privateUse.mask(new Float32Array(index.size), new Set([EOS]))).toThrow(/no token/);
    const done = new GrammarConstraint(index, lit('x'));
    done.accept(id('x'));
    expect(() => done.mask(new Float32Array(index.size), new Set())).toThrow(/no stop token/);
    const c = new GrammarConstraint(index, lit('{}'));
    expect(() => c.accept(id('}'))).toThrow(/cannot continue/);
    expect(() => c.accept(EOS)).toThrow(/cannot continue/);
  });

  const SCHEMAS: [string, object][] = [
    ['person', PERSON],
    [
      'nested arrays of numbers',
      {
        type: 'array',
        items: { type: 'array', items: { type: 'integer', minimum: -5, maximum: 500 }, maxItems: 3 },
        minItems: 1,
        maxItems: 3,
      },
    ],
    [
      'anyOf with null and enum',
      {
        type: 'object',
        properties: {
          kind: { const: 'point' },
          at: { anyOf: [{ type: 'null' }, { type: 'array', prefixItems: [{ type: 'integer' }], items: false }] },
          label: { type: ['string', 'null'], maxLength: 5 },
          unit: { enum: ['cm', 'mm', 'in', '日本'] },
        },
        required: ['kind', 'at', 'unit'],
      },
    ],
    [
      'bounded tree',
      {
        $defs: {
          node: {
            type: 'object',
            properties: {
              id: { type: 'integer', minimum: 0, maximum: 9 },
              kids: { type: 'array', items: { $ref: '#/$defs/node' }, maxItems: 2 },
            },
            required: ['id'],
          },
        },
        $ref: '#/$defs/node',
      },
    ],
  ];

  for (const [name, schema] of SCHEMAS) {
    it(`sampling under the mask gives valid JSON for the schema: ${name}`, () => {
      const validate = ajv.compile(schema);
      const grammar = jsonSchemaGrammar(schema);
      let completed = 0;
      for (let seed = 0; seed < 20; seed++) {
        const { ids, stopped } = sampleConstrained(grammar, seed, 400);
        if (!stopped) continue; // a recursive schema may run to the cap
        completed++;
        const text = tok.decode(ids);
        if (process.env.SHOW_SAMPLES) console.log(name, seed, text);
        let value: unknown;
        expect(() => (value = JSON.parse(text)), text).not.toThrow();
        expect({ seed, text, ok: validate(value), errors: validate.errors }).toMatchObject({ seed, text, ok: true });
      }
      expect(completed).toBeGreaterThanOrEqual(15);
    });
  }

  it('bounded schemas always end with the stop token', () => {
    for (let seed = 0; seed < 20; seed++)
      expect(sampleConstrained(jsonSchemaGrammar(PERSON), seed, 400).stopped).toBe(true);
  });
});

/** Random logits each step (seeded), masked, sampled at temperature 1, until the stop id or the cap. */
function sampleConstrained(grammar: Grammar, seed: number, cap: number): { ids: number[]; stopped: boolean } {
  const rng = createRng(seed);
  const c = new GrammarConstraint(index, grammar);
  const ids: number[] = [];
  const stops = new Set([EOS]);
  for (let step = 0; step < cap; step++) {
    const logits = new Float32Array(index.size);
    for (let i = 0; i < logits.length; i++) logits[i] = rng.nextFloat() * 8;
    c.mask(logits, stops);
    const next = sample(logits, { temperature: 1 }, rng);
    if (next === EOS) return { ids, stopped: true };
    c.accept(next);
    ids.push(next);
  }
  return { ids, stopped: false };
}
