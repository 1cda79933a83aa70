// JSON Schema -> Grammar, for response_format json_schema / json_object and forced tool calls.
//
// The grammar accepts compact JSON whose every complete match validates against the schema (it may accept
// fewer texts than the schema allows, never more). Whitespace: only an optional single ' ' after ':' and
// after ',' (what Python's json.dumps writes); nowhere else.
//
// Supported: type (a name or an array of names), properties (generated in the schema's order; required ones
// always, optional ones may be skipped; never any other key), required, additionalProperties (used only
// when there is no `properties`), items, prefixItems, minItems, maxItems, minLength, maxLength (in code
// points: an escape or a surrogate pair is one), minimum, maximum, exclusiveMinimum, exclusiveMaximum (also
// the draft-4 boolean forms), enum, const, anyOf, oneOf (generated as anyOf: a value matching two branches
// is not excluded), allOf with exactly one subschema, and $ref to any "#..." JSON pointer in the same
// document ("#", "#/$defs/X", "#/definitions/X"), recursion included. Annotations are ignored, and so are
// keywords this module does not know (JSON Schema treats unknown keywords as annotations).
//
// Choices that keep output valid and generation finite: integers have at most 15 digits; numbers at most 15
// fraction digits and 2 exponent digits (3 would reach 1e999 = Infinity); a number with bounds generates
// only integers within them (SchemaError when none fits); without `type`, the keywords present pick the
// types generated (`properties` -> object, `items` -> array, `minLength` -> string, `minimum` -> number);
// `\u` escapes of surrogates are not generated (astral characters are written directly). Strings and arrays
// without maxLength / maxItems are unbounded: the caller's token limit bounds them.
//
// Unsupported (SchemaError naming the keyword and its path): pattern, patternProperties, multipleOf, not,
// if/then/else, dependentRequired, dependentSchemas, dependencies, uniqueItems (true), contains, min/
// maxContains, propertyNames, min/maxProperties, unevaluatedProperties/Items, $dynamicRef, $recursiveRef,
// `items` as an array (use prefixItems), $ref outside the document, and $ref / anyOf / oneOf / allOf next to
// other assertion keywords (their intersection is not computed).

import {
  alt,
  charIn,
  chars,
  GrammarError,
  lit,
  optional,
  ref,
  repeat,
  seq,
  startMatch,
  type Grammar,
  type MatchState,
} from './grammar.js';

/**
 * A schema this module cannot turn into a grammar. `path` says where, as keys joined by '.' (e.g.
 * "properties.city.type"; '' = the root); the message does not repeat it.
 */
export class SchemaError extends Error {
  override name = 'SchemaError';
  constructor(
    message: string,
    readonly path: string,
  ) {
    super(message);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Fixed pieces of JSON

const MAX_INTEGER = 999_999_999_999_999; // 15 digits
const DIGIT = chars([[0x30, 0x39]]);
const WS = optional(lit(' '));
const COMMA = seq(lit(','), WS);
const COLON = seq(lit(':'), WS);

/** \uXXXX without the surrogate range D800-DFFF, so that every string unit is one code point. */
const HEX = chars([
  [0x30, 0x39],
  [0x41, 0x46],
  [0x61, 0x66],
]);
const HEX_NOT_D = chars([
  [0x30, 0x39],
  [0x41, 0x43],
  [0x45, 0x46],
  [0x61, 0x63],
  [0x65, 0x66],
]);
const UNICODE_ESCAPE = seq(
  lit('u'),
  alt(seq(HEX_NOT_D, HEX, HEX, HEX), seq(charIn('dD'), chars([[0x30, 0x37]]), HEX, HEX)),
);

/** One code point of a JSON string: a plain character, a surrogate pair, or an escape. */
const STRING_UNIT = alt(
  chars([
    [0x20, 0x21], // no '"' (0x22)
    [0x23, 0x5b], // no '\' (0x5c)
    [0x5d, 0xd7ff],
    [0xe000, 0xffff],
  ]),
  seq(chars([[0xd800, 0xdbff]]), chars([[0xdc00, 0xdfff]])),
  seq(lit('\\'), alt(charIn('"\\/bfnrt'), UNICODE_ESCAPE)),
);

function stringGrammar(minLength: number, maxLength: number): Grammar {
  return seq(lit('"'), repeat(STRING_UNIT, minLength, maxLength), lit('"'));
}

const ANY_STRING = stringGrammar(0, Infinity);

const NUMBER = seq(
  optional(lit('-')),
  alt(lit('0'), seq(chars([[0x31, 0x39]]), repeat(DIGIT, 0, 14))),
  optional(seq(lit('.'), repeat(DIGIT, 1, 15))),
  optional(seq(charIn('eE'), optional(charIn('+-')), repeat(DIGIT, 1, 2))),
);

/** Decimal integers lo..hi (|values| < 10^15), no leading zeros, no "-0". */
export function integerRangeGrammar(lo: number, hi: number): Grammar {
  const parts: Grammar[] = [];
  if (hi >= 0) parts.push(naturalRange(Math.max(lo, 0), hi));
  if (lo < 0) parts.push(seq(lit('-'), naturalRange(Math.max(1, -hi), -lo)));
  return alt(...parts);
}

function naturalRange(lo: number, hi: number): Grammar {
  const parts: Grammar[] = [];
  for (let d = String(lo).length; d <= String(hi).length; d++) {
    const first = d === 1 ? 0 : 10 ** (d - 1);
    parts.push(sameLengthRange(String(Math.max(lo, first)), String(Math.min(hi, 10 ** d - 1))));
  }
  return alt(...parts);
}

/** Digit strings of one length from a to b (a <= b): the usual split at the first differing digit. */
function sameLengthRange(a: string, b: string): Grammar {
  if (a === b) return lit(a);
  const n = a.length - 1;
  if (/^0*$/.test(a) && /^9*$/.test(b)) return repeat(DIGIT, n + 1, n + 1);
  const a0 = a.charCodeAt(0);
  const b0 = b.charCodeAt(0);
  if (a0 === b0) return seq(lit(a[0]!), sameLengthRange(a.slice(1), b.slice(1)));
  if (n === 0) return chars([[a0, b0]]);
  const parts = [seq(lit(a[0]!), sameLengthRange(a.slice(1), '9'.repeat(n)))];
  if (b0 - a0 > 1) parts.push(seq(chars([[a0 + 1, b0 - 1]]), repeat(DIGIT, n, n)));
  parts.push(seq(lit(b[0]!), sameLengthRange('0'.repeat(n), b.slice(1))));
  return alt(...parts);
}

function objectOf(value: Grammar): Grammar {
  const member = seq(ANY_STRING, COLON, value);
  return seq(lit('{'), optional(seq(member, repeat(seq(COMMA, member), 0, Infinity))), lit('}'));
}

function arrayOf(value: Grammar): Grammar {
  return seq(lit('['), optional(seq(value, repeat(seq(COMMA, value), 0, Infinity))), lit(']'));
}

let anyValue: { value: Grammar; object: Grammar } | undefined;

function anyJson(): { value: Grammar; object: Grammar } {
  if (anyValue) return anyValue;
  const inner = ref(() => value);
  const object = objectOf(inner);
  const value = alt(object, arrayOf(inner), ANY_STRING, NUMBER, lit('true'), lit('false'), lit('null'));
  anyValue = { value, object };
  return anyValue;
}

/** Any JSON value (compact, with the whitespace rule above). */
export function anyJsonValueGrammar(): Grammar {
  return anyJson().value;
}

/** Any JSON object (response_format json_object). */
export function anyJsonObjectGrammar(): Grammar {
  return anyJson().object;
}

// ---------------------------------------------------------------------------------------------------------
// Schemas

type JsonObject = Record<string, unknown>;
type JsonType = 'string' | 'number' | 'integer' | 'boolean' | 'null' | 'object' | 'array';

const TYPES: readonly JsonType[] = ['object', 'array', 'string', 'number', 'integer', 'boolean', 'null'];

/** Keywords that constrain values and that this module implements. */
const ASSERTIONS = new Set([
  'type',
  'properties',
  'required',
  'additionalProperties',
  'items',
  'prefixItems',
  'minItems',
  'maxItems',
  'minLength',
  'maxLength',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
  'enum',
  'const',
  'anyOf',
  'oneOf',
  'allOf',
  '$ref',
]);

const UNSUPPORTED = new Set([
  'pattern',
  'patternProperties',
  'multipleOf',
  'not',
  'if',
  'then',
  'else',
  'dependentRequired',
  'dependentSchemas',
  'dependencies',
  'uniqueItems',
  'contains',
  'minContains',
  'maxContains',
  'propertyNames',
  'minProperties',
  'maxProperties',
  'unevaluatedProperties',
  'unevaluatedItems',
  '$dynamicRef',
  '$recursiveRef',
]);

/** Keywords that imply a type when `type` is absent. */
const TYPE_HINTS: readonly [JsonType, readonly string[]][] = [
  ['object', ['properties', 'required', 'additionalProperties']],
  ['array', ['items', 'prefixItems', 'minItems', 'maxItems']],
  ['string', ['minLength', 'maxLength']],
  ['number', ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum']],
];

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function at(path: string, key: string | number): string {
  return path === '' ? String(key) : `${path}.${key}`;
}

/**
 * JSON text matching `schema` (compact JSON, see the whitespace rule). Throws SchemaError for invalid or
 * unsupported schemas, and for schemas that no finite JSON value can satisfy.
 */
export function jsonSchemaGrammar(schema: unknown): Grammar {
  const g = new SchemaCompiler(schema).compileRoot();
  let start: MatchState;
  try {
    start = startMatch(g);
  } catch (err) {
    // The compiler refuses left recursion with a path first; this is a backstop.
    if (err instanceof GrammarError) throw new SchemaError('$ref recursion that consumes no input', '');
    throw err;
  }
  // A required property that recurses forever (a node that must contain a node) leaves nothing to generate.
  if (!start.complete && start.closed) throw new SchemaError('no finite JSON value satisfies the schema', '');
  return g;
}

class SchemaCompiler {
  /** Compiled $ref targets by JSON pointer. */
  private readonly done = new Map<string, Grammar>();
  /**
   * What the compiler is inside of, innermost last: a $ref target's pointer, or null for the inside of an
   * object or array (input consumed since). A $ref back to an open target with no null in between would
   * recurse without consuming anything.
   */
  private readonly frames: (string | null)[] = [];

  constructor(private readonly root: unknown) {}

  compileRoot(): Grammar {
    return this.target('', '');
  }

  private compile(schema: unknown, path: string): Grammar {
    if (schema === true) return anyJsonValueGrammar();
    if (schema === false) throw new SchemaError('schema false admits no value', path);
    if (!isObject(schema)) throw new SchemaError('a schema must be an object or a boolean', path);
    for (const key of Object.keys(schema)) {
      if (UNSUPPORTED.has(key) && !(key === 'uniqueItems' && schema[key] === false)) {
        throw new SchemaError(`unsupported keyword "${key}"`, at(path, key));
      }
    }
    if ('$ref' in schema) return this.reference(schema, path);
    if ('allOf' in schema) {
      this.alone(schema, 'allOf', path);
      const all = schema.allOf;
      if (!Array.isArray(all) || all.length !== 1) {
        throw new SchemaError('"allOf" is supported with exactly one subschema', at(path, 'allOf'));
      }
      return this.compile(all[0], at(at(path, 'allOf'), 0));
    }
    if ('anyOf' in schema || 'oneOf' in schema) return this.union(schema, path);
    const types = this.types(schema, path);
    if ('enum' in schema || 'const' in schema) return this.values(schema, types, path);
    return alt(...types.map((t) => this.typed(t, schema, path)));
  }

  /** A keyword combined with other assertions would need an intersection of grammars: refuse it. */
  private alone(schema: JsonObject, keyword: string, path: string): void {
    for (const key of Object.keys(schema)) {
      if (key !== keyword && ASSERTIONS.has(key)) {
        throw new SchemaError(`"${keyword}" together with "${key}" is not supported`, at(path, key));
      }
    }
  }

  private union(schema: JsonObject, path: string): Grammar {
    if ('anyOf' in schema && 'oneOf' in schema) {
      throw new SchemaError('"anyOf" together with "oneOf" is not supported', at(path, 'oneOf'));
    }
    const keyword = 'anyOf' in schema ? 'anyOf' : 'oneOf';
    this.alone(schema, keyword, path);
    const branches = schema[keyword];
    const where = at(path, keyword);
    if (!Array.isArray(branches) || branches.length === 0) {
      throw new SchemaError(`"${keyword}" must be a non-empty array`, where);
    }
    const options = branches.flatMap((b, i) => (b === false ? [] : [this.compile(b, at(where, i))]));
    if (options.length === 0) throw new SchemaError(`every branch of "${keyword}" is false`, where);
    return alt(...options);
  }

  private reference(schema: JsonObject, path: string): Grammar {
    this.alone(schema, '$ref', path);
    const r = schema.$ref;
    const where = at(path, '$ref');
    if (typeof r !== 'string' || !r.startsWith('#')) {
      throw new SchemaError(`unsupported $ref ${JSON.stringify(r)} (only "#..." in the same schema)`, where);
    }
    if (r.length > 1 && r[1] !== '/') throw new SchemaError(`unsupported $ref ${JSON.stringify(r)} (anchors)`, where);
    let segments: string[];
    try {
      segments =
        r === '#'
          ? []
          : r
              .slice(2)
              .split('/')
              .map((s) => decodeURIComponent(s).replace(/~1/g, '/').replace(/~0/g, '~'));
    } catch {
      throw new SchemaError(`malformed $ref ${JSON.stringify(r)}`, where);
    }
    return this.target(segments.join('/'), where, segments);
  }

  /** The grammar of the schema at a JSON pointer, compiled once; a recursive reference becomes a ref. */
  private target(pointer: string, where: string, segments: readonly string[] = []): Grammar {
    const done = this.done.get(pointer);
    if (done) return done;
    const open = this.frames.lastIndexOf(pointer);
    if (open >= 0) {
      if (!this.frames.slice(open + 1).includes(null)) {
        throw new SchemaError('$ref recursion that consumes no input (left recursion)', where);
      }
      return ref(() => {
        const g = this.done.get(pointer);
        if (!g) throw new GrammarError(`unresolved $ref #/${pointer}`);
        return g;
      });
    }
    let node: unknown = this.root;
    for (const s of segments) {
      node = Array.isArray(node) ? node[Number(s)] : isObject(node) && Object.hasOwn(node, s) ? node[s] : undefined;
      if (node === undefined) throw new SchemaError(`$ref #/${pointer} does not resolve`, where);
    }
    this.frames.push(pointer);
    try {
      const g = this.compile(node, segments.join('.'));
      this.done.set(pointer, g);
      return g;
    } finally {
      this.frames.pop();
    }
  }

  /** Compile a schema for a value inside an object or array (after input was consumed). */
  private nested(schema: unknown, path: string): Grammar {
    this.frames.push(null);
    try {
      return this.compile(schema, path);
    } finally {
      this.frames.pop();
    }
  }

  private types(schema: JsonObject, path: string): JsonType[] {
    const t = schema.type;
    const where = at(path, 'type');
    if (t === undefined) {
      const hinted = TYPE_HINTS.filter(([, keys]) => keys.some((k) => k in schema)).map(([type]) => type);
      return hinted.length > 0 ? hinted : TYPES.filter((x) => x !== 'integer');
    }
    const list: unknown[] = Array.isArray(t) ? t : [t];
    if (list.length === 0) throw new SchemaError('"type" must not be an empty array', where);
    const out: JsonType[] = [];
    for (const x of list) {
      if (!TYPES.includes(x as JsonType)) throw new SchemaError(`unknown type ${JSON.stringify(x)}`, where);
      if (out.includes(x as JsonType)) throw new SchemaError(`duplicate type ${JSON.stringify(x)}`, where);
      out.push(x as JsonType);
    }
    // number covers integer: both generate the same integers when bounded
    return out.includes('number') ? out.filter((x) => x !== 'integer') : out;
  }

  private typed(type: JsonType, schema: JsonObject, path: string): Grammar {
    switch (type) {
      case 'string': {
        const { min, max } = lengthBounds(schema, 'minLength', 'maxLength', path);
        return stringGrammar(min, max);
      }
      case 'integer': {
        const b = integerBounds(schema, path);
        return integerRangeGrammar(b.lo, b.hi);
      }
      case 'number': {
        if (!hasNumericBounds(schema)) return NUMBER;
        const b = integerBounds(schema, path);
        return integerRangeGrammar(b.lo, b.hi);
      }
      case 'boolean':
        return alt(lit('true'), lit('false'));
      case 'null':
        return lit('null');
      case 'object':
        return this.object(schema, path);
      case 'array':
        return this.array(schema, path);
    }
  }

  private object(schema: JsonObject, path: string): Grammar {
    const props = schema.properties;
    const required = schema.required ?? [];
    const ap = schema.additionalProperties;
    if (props !== undefined && !isObject(props))
      throw new SchemaError('"properties" must be an object', at(path, 'properties'));
    if (!Array.isArray(required) || !required.every((r) => typeof r === 'string')) {
      throw new SchemaError('"required" must be an array of strings', at(path, 'required'));
    }
    if (ap !== undefined && typeof ap !== 'boolean' && !isObject(ap)) {
      throw new SchemaError('"additionalProperties" must be a schema', at(path, 'additionalProperties'));
    }
    for (const name of required as string[]) {
      if (!props || !Object.hasOwn(props, name)) {
        throw new SchemaError(`required property ${JSON.stringify(name)} is not in "properties"`, at(path, 'required'));
      }
    }
    if (props === undefined) {
      if (ap === false) return lit('{}');
      return objectOf(
        ap === undefined || ap === true ? anyJsonValueGrammar() : this.nested(ap, at(path, 'additionalProperties')),
      );
    }
    const members: { member: Grammar; required: boolean }[] = [];
    for (const [name, sub] of Object.entries(props)) {
      const isRequired = (required as string[]).includes(name);
      const where = at(at(path, 'properties'), name);
      if (sub === false) {
        if (isRequired) throw new SchemaError(`required property ${JSON.stringify(name)} has schema false`, where);
        continue;
      }
      members.push({ member: seq(lit(JSON.stringify(name)), COLON, this.nested(sub, where)), required: isRequired });
    }
    return seq(lit('{'), memberList(members), lit('}'));
  }

  private array(schema: JsonObject, path: string): Grammar {
    const { min, max: maxItems } = lengthBounds(schema, 'minItems', 'maxItems', path);
    let max = maxItems;
    const prefix = schema.prefixItems ?? [];
    const items = schema.items;
    if (!Array.isArray(prefix)) throw new SchemaError('"prefixItems" must be an array', at(path, 'prefixItems'));
    if (Array.isArray(items)) {
      throw new SchemaError('"items" as an array is not supported: use "prefixItems"', at(path, 'items'));
    }
    const prefixGrammars: Grammar[] = [];
    for (const [i, sub] of prefix.entries()) {
      if (sub === false) {
        max = Math.min(max, i); // no array can have an item here
        break;
      }
      prefixGrammars.push(this.nested(sub, at(at(path, 'prefixItems'), i)));
    }
    let rest: Grammar | null = null;
    if (items === false) max = Math.min(max, prefixGrammars.length);
    else rest = items === undefined || items === true ? anyJsonValueGrammar() : this.nested(items, at(path, 'items'));
    if (min > max)
      throw new SchemaError('no array length satisfies "minItems" and the items allowed', at(path, 'minItems'));
    return seq(lit('['), itemList(prefixGrammars, rest, min, max), lit(']'));
  }

  /** enum / const: exactly those values (serialised compactly) that also satisfy the type and bounds. */
  private values(schema: JsonObject, types: JsonType[], path: string): Grammar {
    let values: unknown[] | undefined;
    if ('const' in schema) values = [schema.const];
    if ('enum' in schema) {
      const e = schema.enum;
      if (!Array.isArray(e) || e.length === 0)
        throw new SchemaError('"enum" must be a non-empty array', at(path, 'enum'));
      values = values ? values.filter((v) => e.some((x) => sameJson(x, v))) : e;
    }
    const kept = (values ?? []).filter((v) => types.some((t) => hasType(v, t)) && this.withinBounds(schema, v, path));
    if (kept.length === 0) throw new SchemaError('no value of "enum"/"const" satisfies the schema', path);
    const texts = [...new Set(kept.map((v) => JSON.stringify(v)))];
    return alt(...texts.map((t) => lit(t)));
  }

  /** The size and range keywords that apply to a value's type; structural ones are refused with enum/const. */
  private withinBounds(schema: JsonObject, v: unknown, path: string): boolean {
    for (const key of ['properties', 'required', 'additionalProperties', 'items', 'prefixItems']) {
      if (key in schema) throw new SchemaError(`"enum"/"const" together with "${key}" is not supported`, at(path, key));
    }
    if (typeof v === 'string') {
      const { min, max } = lengthBounds(schema, 'minLength', 'maxLength', path);
      const n = [...v].length;
      return n >= min && n <= max;
    }
    if (Array.isArray(v)) {
      const { min, max } = lengthBounds(schema, 'minItems', 'maxItems', path);
      return v.length >= min && v.length <= max;
    }
    if (typeof v === 'number') {
      const b = numericBounds(schema, path);
      return (b.exclusiveMin ? v > b.min : v >= b.min) && (b.exclusiveMax ? v < b.max : v <= b.max);
    }
    return true;
  }
}

/** Object members in order, with commas only between those present. */
function memberList(members: readonly { member: Grammar; required: boolean }[]): Grammar {
  // Built from the end: `afterFirst` follows a member already written (so each needs a comma before it),
  // `none` is the list when nothing has been written yet.
  let afterFirst: Grammar = lit('');
  let none: Grammar = lit('');
  for (let i = members.length - 1; i >= 0; i--) {
    const { member, required } = members[i]!;
    const withComma = seq(COMMA, member, afterFirst);
    const first = seq(member, afterFirst);
    afterFirst = required ? withComma : alt(withComma, afterFirst);
    none = required ? first : alt(first, none);
  }
  return none;
}

/** Array items: the prefix schemas in order, then `rest` (null: none), min..max of them in all. */
function itemList(prefix: readonly Grammar[], rest: Grammar | null, min: number, max: number): Grammar {
  const item = (i: number): Grammar => prefix[i] ?? rest!;
  /** The items after the first i (i >= 1). */
  const after = (i: number): Grammar => {
    if (i >= max) return lit('');
    if (i >= prefix.length) return repeat(seq(COMMA, rest!), Math.max(0, min - i), max - i);
    const more = seq(COMMA, item(i), after(i + 1));
    return i >= min ? optional(more) : more;
  };
  if (max === 0) return lit('');
  const some = seq(item(0), after(1));
  return min === 0 ? optional(some) : some;
}

function lengthBounds(schema: JsonObject, minKey: string, maxKey: string, path: string): { min: number; max: number } {
  const count = (key: string, fallback: number): number => {
    const v = schema[key];
    if (v === undefined) return fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
      throw new SchemaError(`"${key}" must be a non-negative integer`, at(path, key));
    }
    return v;
  };
  const min = count(minKey, 0);
  const max = count(maxKey, Infinity);
  if (min > max) throw new SchemaError(`"${minKey}" is greater than "${maxKey}"`, at(path, minKey));
  return { min, max };
}

interface NumericBounds {
  min: number;
  max: number;
  exclusiveMin: boolean;
  exclusiveMax: boolean;
}

/** minimum/maximum/exclusive* as one interval; draft-4 boolean exclusives make minimum/maximum exclusive. */
function numericBounds(schema: JsonObject, path: string): NumericBounds {
  const num = (key: string): number | undefined => {
    const v = schema[key];
    if (v === undefined || (typeof v === 'boolean' && key.startsWith('exclusive'))) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new SchemaError(`"${key}" must be a number`, at(path, key));
    return v;
  };
  const b: NumericBounds = { min: -Infinity, max: Infinity, exclusiveMin: false, exclusiveMax: false };
  const minimum = num('minimum');
  const maximum = num('maximum');
  const exMin = num('exclusiveMinimum');
  const exMax = num('exclusiveMaximum');
  if (minimum !== undefined) b.min = minimum;
  if (maximum !== undefined) b.max = maximum;
  b.exclusiveMin = minimum !== undefined && schema.exclusiveMinimum === true;
  b.exclusiveMax = maximum !== undefined && schema.exclusiveMaximum === true;
  // An exclusive bound at or inside the inclusive one is the stricter of the two.
  if (exMin !== undefined && exMin >= b.min) [b.min, b.exclusiveMin] = [exMin, true];
  if (exMax !== undefined && exMax <= b.max) [b.max, b.exclusiveMax] = [exMax, true];
  return b;
}

/** Whether any numeric bound is given (a number with bounds generates integers only). */
function hasNumericBounds(schema: JsonObject): boolean {
  return ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'].some((k) => typeof schema[k] === 'number');
}

/** The integers a bounded integer/number may take, within 15 digits. */
function integerBounds(schema: JsonObject, path: string): { lo: number; hi: number } {
  const b = numericBounds(schema, path);
  let lo = b.exclusiveMin ? Math.floor(b.min) + 1 : Math.ceil(b.min);
  let hi = b.exclusiveMax ? Math.ceil(b.max) - 1 : Math.floor(b.max);
  lo = Math.max(lo, -MAX_INTEGER);
  hi = Math.min(hi, MAX_INTEGER);
  if (lo > hi) throw new SchemaError('no integer of at most 15 digits lies within the bounds', path);
  return { lo, hi };
}

function hasType(v: unknown, t: JsonType): boolean {
  switch (t) {
    case 'string':
      return typeof v === 'string';
    case 'number':
      return typeof v === 'number';
    case 'integer':
      return typeof v === 'number' && Number.isInteger(v);
    case 'boolean':
      return typeof v === 'boolean';
    case 'null':
      return v === null;
    case 'object':
      return isObject(v);
    case 'array':
      return Array.isArray(v);
  }
}

/** Deep equality of JSON values (object key order ignored), as enum/const compare. */
function sameJson(x: unknown, y: unknown): boolean {
  if (x === y) return true;
  if (Array.isArray(x) && Array.isArray(y)) return x.length === y.length && x.every((v, i) => sameJson(v, y[i]));
  if (isObject(x) && isObject(y)) {
    const kx = Object.keys(x);
    return kx.length === Object.keys(y).length && kx.every((k) => Object.hasOwn(y, k) && sameJson(x[k], y[k]));
  }
  return false;
}
