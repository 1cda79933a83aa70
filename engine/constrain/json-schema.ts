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
//
// Layout: json-text.ts holds the grammars of JSON text, schema-keywords.ts the keyword vocabulary and the
// checks of keyword values; this file walks the schema ($ref targets, unions, one translation per type).

import { alt, GrammarError, lit, ref, seq, startMatch, type Grammar, type MatchState } from './grammar.js';
import {
  anyJsonValueGrammar,
  COLON,
  integerRangeGrammar,
  itemList,
  memberList,
  NUMBER,
  objectOf,
  stringGrammar,
} from './json-text.js';
import {
  at,
  hasNumericBounds,
  hasType,
  integerBounds,
  isObject,
  lengthBounds,
  refuseUnsupported,
  requireAlone,
  sameJson,
  SchemaError,
  schemaTypes,
  withinBounds,
  type JsonObject,
  type JsonType,
} from './schema-keywords.js';

export { anyJsonObjectGrammar, anyJsonValueGrammar, integerRangeGrammar } from './json-text.js';
export { SchemaError } from './schema-keywords.js';

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
    refuseUnsupported(schema, path);
    if ('$ref' in schema) return this.reference(schema, path);
    if ('allOf' in schema) {
      requireAlone(schema, 'allOf', path);
      const all = schema.allOf;
      if (!Array.isArray(all) || all.length !== 1) {
        throw new SchemaError('"allOf" is supported with exactly one subschema', at(path, 'allOf'));
      }
      return this.compile(all[0], at(at(path, 'allOf'), 0));
    }
    if ('anyOf' in schema || 'oneOf' in schema) return this.union(schema, path);
    const types = schemaTypes(schema, path);
    if ('enum' in schema || 'const' in schema) return this.values(schema, types, path);
    return alt(...types.map((t) => this.typed(t, schema, path)));
  }

  private union(schema: JsonObject, path: string): Grammar {
    if ('anyOf' in schema && 'oneOf' in schema) {
      throw new SchemaError('"anyOf" together with "oneOf" is not supported', at(path, 'oneOf'));
    }
    const keyword = 'anyOf' in schema ? 'anyOf' : 'oneOf';
    requireAlone(schema, keyword, path);
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
    requireAlone(schema, '$ref', path);
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
    const kept = (values ?? []).filter((v) => types.some((t) => hasType(v, t)) && withinBounds(schema, v, path));
    if (kept.length === 0) throw new SchemaError('no value of "enum"/"const" satisfies the schema', path);
    const texts = [...new Set(kept.map((v) => JSON.stringify(v)))];
    return alt(...texts.map((t) => lit(t)));
  }
}
