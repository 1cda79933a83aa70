// JSON Schema keywords: which ones are implemented, which are refused, and the checks of their values.
//
// Every refusal is a SchemaError naming the keyword's path, so a caller can point at the offending part.

import { MAX_INTEGER } from './json-text.js';

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

export type JsonObject = Record<string, unknown>;
export type JsonType = 'string' | 'number' | 'integer' | 'boolean' | 'null' | 'object' | 'array';

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

export function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The keyword path one level down ('' is the root). */
export function at(path: string, key: string | number): string {
  return path === '' ? String(key) : `${path}.${key}`;
}

/** Refuse the keywords this module cannot honour, naming the first one found. */
export function refuseUnsupported(schema: JsonObject, path: string): void {
  for (const key of Object.keys(schema)) {
    if (UNSUPPORTED.has(key) && !(key === 'uniqueItems' && schema[key] === false)) {
      throw new SchemaError(`unsupported keyword "${key}"`, at(path, key));
    }
  }
}

/** A keyword combined with other assertions would need an intersection of grammars: refuse it. */
export function requireAlone(schema: JsonObject, keyword: string, path: string): void {
  for (const key of Object.keys(schema)) {
    if (key !== keyword && ASSERTIONS.has(key)) {
      throw new SchemaError(`"${keyword}" together with "${key}" is not supported`, at(path, key));
    }
  }
}

/** The types a schema generates: `type` checked, or the types its keywords imply when `type` is absent. */
export function schemaTypes(schema: JsonObject, path: string): JsonType[] {
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

/** The size and range keywords that apply to a value's type; structural ones are refused with enum/const. */
export function withinBounds(schema: JsonObject, v: unknown, path: string): boolean {
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

export function lengthBounds(
  schema: JsonObject,
  minKey: string,
  maxKey: string,
  path: string,
): { min: number; max: number } {
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
export function hasNumericBounds(schema: JsonObject): boolean {
  return ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'].some((k) => typeof schema[k] === 'number');
}

/** The integers a bounded integer/number may take, within 15 digits. */
export function integerBounds(schema: JsonObject, path: string): { lo: number; hi: number } {
  const b = numericBounds(schema, path);
  let lo = b.exclusiveMin ? Math.floor(b.min) + 1 : Math.ceil(b.min);
  let hi = b.exclusiveMax ? Math.ceil(b.max) - 1 : Math.floor(b.max);
  lo = Math.max(lo, -MAX_INTEGER);
  hi = Math.min(hi, MAX_INTEGER);
  if (lo > hi) throw new SchemaError('no integer of at most 15 digits lies within the bounds', path);
  return { lo, hi };
}

export function hasType(v: unknown, t: JsonType): boolean {
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
export function sameJson(x: unknown, y: unknown): boolean {
  if (x === y) return true;
  if (Array.isArray(x) && Array.isArray(y)) return x.length === y.length && x.every((v, i) => sameJson(v, y[i]));
  if (isObject(x) && isObject(y)) {
    const kx = Object.keys(x);
    return kx.length === Object.keys(y).length && kx.every((k) => Object.hasOwn(y, k) && sameJson(x[k], y[k]));
  }
  return false;
}
