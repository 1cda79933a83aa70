import { describe, expect, it } from 'vitest';
import Ajv2020 from 'ajv/dist/2020.js';
import { startMatch, type Grammar, type MatchState } from '../../engine/constrain/grammar.js';
import {
  anyJsonObjectGrammar,
  anyJsonValueGrammar,
  integerRangeGrammar,
  jsonSchemaGrammar,
  SchemaError,
} from '../../engine/constrain/json-schema.js';
import { createRng, type Rng } from '../../engine/generate/sampling.js';

const ajv = new Ajv2020({ strict: false, validateFormats: false });

/** Advance one character at a time (a surrogate pair as two code units); null once a character fails. */
function feedChars(g: Grammar, text: string): MatchState | null {
  let s: MatchState | null = startMatch(g);
  for (let i = 0; i < text.length && s; i++) s = s.advance(text[i]!);
  return s;
}

const accepts = (g: Grammar, text: string): boolean => feedChars(g, text)?.complete === true;

// Candidate characters for random walks: printable ASCII plus a few non-ASCII ones (one astral).
const ALPHABET = [
  ...Array.from({ length: 0x7f - 0x20 }, (_, i) => String.fromCharCode(0x20 + i)),
  'é',
  'ß',
  '日',
  '€',
  '😀',
  '\n',
  '\t',
];
const CLOSERS = new Set(['"', ']', '}']);

/**
 * A random text the grammar accepts: from the start, pick a random allowed next character until the state is
 * closed, or complete and a coin says stop. Past half the step budget, closing characters are preferred so
 * that nested values wind down. Null when the budget ran out first.
 */
function randomWalk(g: Grammar, rng: Rng, maxSteps = 3000): string | null {
  let s = startMatch(g);
  let text = '';
  for (let step = 0; step < maxSteps; step++) {
    if (s.closed || (s.complete && rng.nextFloat() < 0.3)) return s.complete ? text : null;
    const options: [string, MatchState][] = [];
    for (const c of ALPHABET) {
      const next = s.advance(c);
      if (next) options.push([c, next]);
    }
    if (options.length === 0) throw new Error(`dead end after ${JSON.stringify(text)}`);
    const closing = options.filter(([c]) => CLOSERS.has(c));
    const pool = step > maxSteps / 2 && closing.length > 0 && rng.nextFloat() < 0.7 ? closing : options;
    const [c, next] = pool[Math.floor(rng.nextFloat() * pool.length)]!;
    text += c;
    s = next;
  }
  return null;
}

/** Every completed walk parses and validates; returns how many completed. */
function checkWalks(schema: object | boolean, g: Grammar, walks: number, seed: number): number {
  const validate = ajv.compile(schema);
  const rng = createRng(seed);
  let completed = 0;
  for (let i = 0; i < walks; i++) {
    const text = randomWalk(g, rng);
    if (text === null) continue;
    completed++;
    let value: unknown;
    expect(() => (value = JSON.parse(text)), text).not.toThrow();
    const ok = validate(value);
    expect({ text, ok, errors: validate.errors }).toMatchObject({ text, ok: true });
  }
  return completed;
}

interface Case {
  name: string;
  schema: object | boolean;
  valid: string[];
  invalid: string[];
  /** the same schema in the form ajv (draft 2020-12) reads, when `schema` uses an older draft's form */
  ajvSchema?: object;
}

const TREE = {
  $defs: {
    node: {
      type: 'object',
      properties: {
        value: { type: 'integer', minimum: 0, maximum: 99 },
        children: { type: 'array', items: { $ref: '#/$defs/node' }, maxItems: 2 },
      },
      required: ['value'],
      additionalProperties: false,
    },
  },
  $ref: '#/$defs/node',
};

const CASES: Case[] = [
  {
    name: 'object with required and optional properties',
    schema: {
      type: 'object',
      properties: {
        name: { type: 'string', minLength: 1, maxLength: 5, description: 'ignored' },
        age: { type: 'integer', minimum: 0, maximum: 120 },
        email: { type: 'string', format: 'email' },
        ok: { type: 'boolean' },
      },
      required: ['name', 'age'],
      additionalProperties: false,
    },
    valid: [
      '{"name":"Bob","age":42}',
      '{"name": "Bob", "age": 42}',
      '{"name":"日本😀","age":0,"ok":true}',
      '{"name":"\\u00e9\\n","age":120,"email":"a@b","ok":false}',
      '{"name":"abcde","age":7, "email":""}',
    ],
    invalid: [
      '{"age":42,"name":"Bob"}', // order
      '{"name":"Bob"}', // missing required
      '{"name":"","age":1}', // minLength
      '{"name":"abcdef","age":1}', // maxLength
      '{"name":"😀😀😀😀😀😀","age":1}', // 6 code points
      '{"name":"Bob","age":121}',
      '{"name":"Bob","age":042}',
      '{"name":"Bob","age":4.5}',
      '{"name":"Bob","age":1,"x":1}',
      '{"name":"Bob","age":1,}',
      '{"name":"Bob" ,"age":1}',
      '{"name":"Bob",  "age":1}',
      ' {"name":"Bob","age":1}',
      '{"name":"B\nb","age":1}', // raw control character
      '{"name":"\\x","age":1}', // bad escape
      '{"name":"\\ud83d\\ude00","age":1}', // surrogate escapes are not generated
    ],
  },
  {
    name: 'nested arrays',
    schema: {
      type: 'array',
      items: { type: 'array', items: { type: 'number' }, maxItems: 3 },
      minItems: 1,
      maxItems: 3,
    },
    valid: ['[[]]', '[[1,-2.5,3e10],[0.125]]', '[[1], [2, 3], []]', '[[-0.0e-5,1E+2]]'],
    invalid: ['[]', '[[],[],[],[]]', '[[1,2,3,4]]', '[[01]]', '[[1.]]', '[[.5]]', '[[1e]]', '[[+1]]', '[ []]'],
  },
  {
    name: 'enum and const',
    schema: {
      type: 'object',
      properties: {
        color: { enum: ['red', 'green', 'blue "dark"', 3, null, { a: [1] }] },
        version: { const: '1.0' },
        level: { type: 'integer', enum: [1, 2, 'x', 2.5] },
      },
      required: ['color', 'version'],
    },
    valid: [
      '{"color":"red","version":"1.0"}',
      '{"color":"blue \\"dark\\"","version":"1.0","level":2}',
      '{"color":null,"version":"1.0"}',
      '{"color":{"a":[1]}, "version":"1.0"}',
      '{"color":3,"version":"1.0","level":1}',
    ],
    invalid: [
      '{"color":"Red","version":"1.0"}',
      '{"color":"red","version":"1.1"}',
      '{"color":"red","version":"1.0","level":"x"}', // not an integer
      '{"color":"red","version":"1.0","level":2.5}',
      '{"color":{"a": [1]},"version":"1.0"}', // only the compact form of a const
    ],
  },
  {
    name: 'anyOf and oneOf',
    schema: {
      anyOf: [
        { type: 'string', maxLength: 3 },
        { type: 'object', properties: { x: { type: 'integer' } }, required: ['x'] },
        { oneOf: [{ type: 'null' }, { type: 'boolean' }] },
        false,
      ],
    },
    valid: ['"abc"', '{"x":-5}', 'null', 'true'],
    invalid: ['"abcd"', '{}', '{"x":1.5}', '1'],
  },
  {
    name: 'integer ranges, negative included',
    schema: {
      type: 'object',
      properties: {
        a: { type: 'integer', minimum: -1234, maximum: -17 },
        b: { type: 'integer', exclusiveMinimum: -5, exclusiveMaximum: 250 },
        c: { type: 'number', minimum: -2.5, maximum: 7.5 },
        d: { type: 'integer', minimum: 100 },
        e: { type: 'integer', maximum: -3 },
      },
      required: ['a', 'b', 'c'],
    },
    valid: [
      '{"a":-17,"b":-4,"c":-2}',
      '{"a":-1234,"b":249,"c":7}',
      '{"a":-999,"b":0,"c":0,"d":100}',
      '{"a":-100,"b":10,"c":5,"d":999999999999999,"e":-3}',
    ],
    invalid: [
      '{"a":-16,"b":0,"c":0}',
      '{"a":-1235,"b":0,"c":0}',
      '{"a":-17,"b":-5,"c":0}',
      '{"a":-17,"b":250,"c":0}',
      '{"a":-17,"b":0,"c":-3}',
      '{"a":-17,"b":0,"c":1.5}',
      '{"a":-17,"b":0,"c":8}',
      '{"a":-17,"b":-0,"c":0}',
      '{"a":-17,"b":0,"c":0,"d":99}',
      '{"a":-17,"b":0,"c":0,"d":1000000000000000}',
      '{"a":-17,"b":0,"c":0,"e":-2}',
    ],
  },
  {
    name: '$ref recursion (a tree)',
    schema: TREE,
    valid: [
      '{"value":1}',
      '{"value":1,"children":[]}',
      '{"value":1,"children":[{"value":2},{"value":3,"children":[{"value":4}]}]}',
    ],
    invalid: ['{"value":1,"children":[{}]}', '{"value":1,"children":[{"value":2},{"value":3},{"value":4}]}'],
  },
  {
    name: 'recursion through "#" and definitions',
    schema: {
      type: 'object',
      properties: {
        name: { $ref: '#/definitions/name' },
        next: { anyOf: [{ $ref: '#' }, { type: 'null' }] },
      },
      required: ['name', 'next'],
      definitions: { name: { type: 'string', maxLength: 4 } },
    },
    valid: ['{"name":"a","next":null}', '{"name":"a","next":{"name":"b","next":null}}'],
    invalid: ['{"name":"a"}', '{"name":"abcde","next":null}', '{"name":"a","next":{"next":null}}'],
  },
  {
    name: 'type arrays with null',
    schema: {
      type: 'object',
      properties: {
        s: { type: ['string', 'null'], maxLength: 4 },
        n: { type: ['integer', 'null'], minimum: 1, maximum: 9 },
        k: { type: ['number', 'integer', 'boolean'] },
      },
    },
    valid: ['{}', '{"s":null}', '{"s":"abcd","n":null}', '{"n":9,"k":true}', '{"k":1.5}', '{"s":"x", "k":false}'],
    invalid: ['{"s":"abcde"}', '{"n":0}', '{"n":10}', '{"k":null}', '{"n":"1"}'],
  },
  {
    name: 'prefixItems, items false',
    schema: {
      type: 'array',
      prefixItems: [
        { type: 'string', maxLength: 3 },
        { type: 'integer', minimum: 0, maximum: 9 },
      ],
      items: false,
      minItems: 1,
    },
    valid: ['["a"]', '["abc",5]', '["", 0]'],
    invalid: ['[]', '["a",5,6]', '[5]', '["a","b"]'],
  },
  {
    name: 'prefixItems then items',
    schema: { type: 'array', prefixItems: [{ const: 'head' }], items: { type: 'boolean' }, maxItems: 4 },
    valid: ['[]', '["head"]', '["head",true,false,true]'],
    invalid: ['[true]', '["head",true,false,true,false]', '["head","head"]'],
  },
  {
    name: 'additionalProperties schema, no properties',
    schema: { type: 'object', additionalProperties: { type: 'integer', minimum: 0, maximum: 3 } },
    valid: ['{}', '{"a":1}', '{"a":1, "b":3,"a":0}'],
    invalid: ['{"a":4}', '{"a":"1"}', '{1:1}'],
  },
  {
    name: 'additionalProperties false, no properties',
    schema: { type: 'object', additionalProperties: false },
    valid: ['{}'],
    invalid: ['{"a":1}'],
  },
  {
    name: 'strings with code point lengths',
    schema: { type: 'string', minLength: 2, maxLength: 3 },
    valid: ['"ab"', '"😀😀"', '"a\\"b"', '"\\u0041\\t"', '"日本語"'],
    invalid: ['"a"', '"😀"', '"abcd"', '"\\u004"', '"\\uD83D\\uDE00"'],
  },
  {
    name: 'without type: keywords pick the type',
    schema: { properties: { a: { minimum: 1, maximum: 3 }, b: { maxLength: 1 }, c: { items: { const: 1 } } } },
    valid: ['{}', '{"a":2,"b":"x","c":[1,1]}'],
    invalid: ['[]', '{"a":1.5}', '{"a":"x"}', '{"b":1}', '{"c":[2]}'],
  },
  {
    name: 'draft-4 boolean exclusive bounds',
    schema: { type: 'integer', minimum: 0, exclusiveMinimum: true, maximum: 10, exclusiveMaximum: true },
    valid: ['1', '9'],
    invalid: ['0', '10'],
    ajvSchema: { type: 'integer', exclusiveMinimum: 0, exclusiveMaximum: 10 },
  },
  {
    name: 'any JSON value (true and {})',
    schema: true,
    valid: ['1', '"x"', 'null', '[1, {"a": [true, false]}]', '{"a":{"b":{}}}', '-0.5E-10'],
    invalid: ['', 'nul', '[1,]', '{"a"}', "{'a':1}", '[1 ,2]', 'NaN', '1e100'],
  },
];

describe('jsonSchemaGrammar', () => {
  for (const c of CASES) {
    describe(c.name, () => {
      const g = jsonSchemaGrammar(c.schema);
      const validate = ajv.compile(c.ajvSchema ?? c.schema);

      it('accepts valid compact JSON character by character', () => {
        for (const text of c.valid) {
          expect({ text, accepted: accepts(g, text) }).toEqual({ text, accepted: true });
          expect({ text, valid: validate(JSON.parse(text)) }).toEqual({ text, valid: true });
        }
      });

      it('rejects invalid texts', () => {
        for (const text of c.invalid) expect({ text, accepted: accepts(g, text) }).toEqual({ text, accepted: false });
      });

      it('every random walk it completes is valid JSON for the schema', () => {
        const completed = checkWalks(c.ajvSchema ?? c.schema, g, 150, c.name.length * 7919);
        expect(completed).toBeGreaterThan(100);
      });
    });
  }

  it('{} is any JSON value', () => {
    const g = jsonSchemaGrammar({
      title: 'anything',
      description: 'x',
      $schema: 'https://json-schema.org/draft/2020-12/schema',
    });
    for (const t of ['1', '[]', '{"a":"b"}', 'false']) expect(accepts(g, t)).toBe(true);
  });

  it('anyJsonObjectGrammar: any object, nothing else', () => {
    const g = anyJsonObjectGrammar();
    for (const t of ['{}', '{"a": [1, 2, {"b": null}], "c": "d"}', '{"":{}}']) expect(accepts(g, t)).toBe(true);
    for (const t of ['[]', '"x"', '1', '{"a":1} ', '{"a":1}{}']) expect(accepts(g, t)).toBe(false);
    expect(checkWalks({ type: 'object' }, g, 150, 99)).toBeGreaterThan(100);
    expect(checkWalks(true, anyJsonValueGrammar(), 150, 98)).toBeGreaterThan(100);
  });

  it('integer ranges: a digit is allowed only when some completion lands in range', () => {
    const ranges: [number, number][] = [
      [0, 0],
      [5, 50],
      [-50, -5],
      [-7, 13],
      [10, 99],
      [123, 4567],
      [-999_999_999_999_999, 999_999_999_999_999],
      [99, 101],
    ];
    for (const [lo, hi] of ranges) {
      const g = integerRangeGrammar(lo, hi);
      // every prefix that can still reach a value in range, and nothing else, is alive
      const span = [...new Set([lo, hi, lo + 1, hi - 1, 0, 1, -1, 9, 10, 11, -10, 100, 99, -99, 4568, 122])];
      for (const v of span) {
        const text = String(v);
        expect({ v, accepted: accepts(g, text) }).toEqual({ v, accepted: v >= lo && v <= hi });
      }
      if (hi - lo < 5000) {
        for (let v = lo - 20; v <= hi + 20; v++) {
          for (let cut = 1; cut <= String(v).length; cut++) {
            const prefix = String(v).slice(0, cut);
            const alive = feedChars(g, prefix) !== null;
            const reachable = hasCompletionInRange(prefix, lo, hi);
            expect({ lo, hi, prefix, alive }).toEqual({ lo, hi, prefix, alive: reachable });
          }
        }
      }
    }
    expect(accepts(integerRangeGrammar(-5, 5), '-0')).toBe(false);
    expect(accepts(integerRangeGrammar(0, 5), '00')).toBe(false);
  });
});

/** Whether some integer in [lo, hi] is written starting with `prefix` (brute force over the range). */
function hasCompletionInRange(prefix: string, lo: number, hi: number): boolean {
  for (let v = lo; v <= hi; v++) if (String(v).startsWith(prefix)) return true;
  return false;
}

describe('SchemaError', () => {
  const cases: [string, unknown, string, RegExp][] = [
    [
      'unsupported keyword',
      { type: 'object', properties: { city: { type: 'string', pattern: '^a' } } },
      'properties.city.pattern',
      /pattern/,
    ],
    ['invalid type', { type: 'object', properties: { city: { type: 'strin' } } }, 'properties.city.type', /strin/],
    ['multipleOf', { type: 'integer', multipleOf: 3 }, 'multipleOf', /multipleOf/],
    ['not', { not: { type: 'null' } }, 'not', /not/],
    ['if', { if: { type: 'string' }, then: { maxLength: 2 } }, 'if', /if/],
    ['uniqueItems', { type: 'array', uniqueItems: true }, 'uniqueItems', /uniqueItems/],
    ['required not in properties', { type: 'object', properties: { a: {} }, required: ['a', 'b'] }, 'required', /"b"/],
    ['required without properties', { type: 'object', required: ['a'] }, 'required', /"a"/],
    ['false schema', false, '', /false/],
    ['non-object schema', 'string', '', /object or a boolean/],
    ['non-object subschema', { type: 'array', items: 42 }, 'items', /object or a boolean/],
    ['number bounds without an integer', { type: 'number', minimum: 0.2, maximum: 0.8 }, '', /integer/],
    ['empty integer range', { type: 'integer', minimum: 5, maximum: 4 }, '', /integer/],
    ['minLength > maxLength', { type: 'string', minLength: 3, maxLength: 2 }, 'minLength', /maxLength/],
    ['negative maxItems', { type: 'array', maxItems: -1 }, 'maxItems', /non-negative/],
    ['unresolvable $ref', { $ref: '#/$defs/missing' }, '$ref', /does not resolve/],
    ['external $ref', { $ref: 'https://example.com/s.json' }, '$ref', /\$ref/],
    [
      'left-recursive $ref',
      { $defs: { a: { anyOf: [{ $ref: '#/$defs/a' }, { type: 'null' }] } }, $ref: '#/$defs/a' },
      '$defs.a.anyOf.0.$ref',
      /recursion/,
    ],
    [
      '$ref cycle',
      { $defs: { a: { $ref: '#/$defs/b' }, b: { $ref: '#/$defs/a' } }, $ref: '#/$defs/a' },
      '$defs.b.$ref',
      /recursion/,
    ],
    [
      'required infinite recursion',
      { type: 'object', properties: { next: { $ref: '#' } }, required: ['next'] },
      '',
      /finite/,
    ],
    ['allOf with two subschemas', { allOf: [{ type: 'string' }, { maxLength: 2 }] }, 'allOf', /exactly one/],
    ['anyOf next to type', { type: 'string', anyOf: [{ maxLength: 1 }] }, 'type', /anyOf/],
    ['$ref next to an assertion', { $defs: { a: {} }, $ref: '#/$defs/a', maxLength: 2 }, 'maxLength', /\$ref/],
    ['items as an array', { type: 'array', items: [{ type: 'string' }] }, 'items', /prefixItems/],
    ['empty enum', { enum: [] }, 'enum', /non-empty/],
    ['enum without a value of the type', { type: 'string', enum: [1, 2] }, '', /enum/],
    ['const outside the bounds', { type: 'integer', minimum: 5, const: 3 }, '', /const/],
    ['type as an empty array', { type: [] }, 'type', /empty/],
    [
      'required property with schema false',
      { type: 'object', properties: { a: false }, required: ['a'] },
      'properties.a',
      /false/,
    ],
    ['anyOf all false', { anyOf: [false] }, 'anyOf', /false/],
    [
      'minItems beyond items false',
      { type: 'array', prefixItems: [{}], items: false, minItems: 2 },
      'minItems',
      /minItems/,
    ],
    ['bad minimum', { type: 'integer', minimum: '1' }, 'minimum', /number/],
    [
      'nested path through $defs',
      { $defs: { P: { type: 'object', properties: { x: { type: 'integer', multipleOf: 2 } } } }, $ref: '#/$defs/P' },
      '$defs.P.properties.x.multipleOf',
      /multipleOf/,
    ],
  ];
  for (const [name, schema, path, message] of cases) {
    it(name, () => {
      let error: unknown;
      try {
        jsonSchemaGrammar(schema);
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(SchemaError);
      const e = error as SchemaError;
      expect({ path: e.path, message: e.message }).toMatchObject({ path, message: expect.stringMatching(message) });
    });
  }

  it('ignores annotations, unknown keywords and uniqueItems false; an optional false property is left out', () => {
    const g = jsonSchemaGrammar({
      type: 'object',
      title: 'T',
      $comment: 'c',
      'x-vendor': 1,
      nullable: true,
      properties: { a: { type: 'array', uniqueItems: false, examples: [[1]] }, b: false },
      required: ['a'],
      strict: true,
    });
    expect(accepts(g, '{"a":[]}')).toBe(true);
    expect(accepts(g, '{"a":[],"b":1}')).toBe(false);
  });
});
