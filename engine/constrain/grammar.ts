// Character-level grammars: the expressions constrained decoding matches text against.
//
// A Grammar is an immutable tree built with lit / chars / seq / alt / repeat / anyText / lazy, and ref for
// recursion (a JSON value inside a JSON array). Characters are UTF-16 code units (a surrogate pair is two).
// startMatch (matcher.ts) turns a grammar into an incremental matcher; it is re-exported here so that one
// import gives both the builders and the matcher.

export { GrammarError, type MatchState } from './match-state.js';
export { startMatch } from './matcher.js';

interface LitNode {
  readonly kind: 'lit';
  readonly text: string;
}
interface CharsNode {
  readonly kind: 'chars';
  /** Sorted, disjoint inclusive ranges as [lo0, hi0, lo1, hi1, ...]. */
  readonly ranges: readonly number[];
  readonly negate: boolean;
}
interface SeqNode {
  readonly kind: 'seq';
  readonly parts: readonly Grammar[];
}
interface AltNode {
  readonly kind: 'alt';
  readonly options: readonly Grammar[];
}
interface RepeatNode {
  readonly kind: 'repeat';
  readonly body: Grammar;
  readonly min: number;
  readonly max: number;
}
interface AnyNode {
  readonly kind: 'any';
}
interface LazyNode {
  readonly kind: 'lazy';
  readonly trigger: string;
  readonly then: Grammar;
}
interface RefNode {
  readonly kind: 'ref';
  readonly resolve: () => Grammar;
}

/** A grammar over characters. Treat it as opaque and immutable: build it with the functions below. */
export type Grammar = LitNode | CharsNode | SeqNode | AltNode | RepeatNode | AnyNode | LazyNode | RefNode;

/** Exactly `text` ('' matches the empty text). */
export function lit(text: string): Grammar {
  return { kind: 'lit', text };
}

/** One character (UTF-16 code unit) in one of the inclusive [lo, hi] ranges, or in none of them with negate. */
export function chars(ranges: readonly (readonly [number, number])[], negate = false): Grammar {
  const sorted = ranges
    .map(([lo, hi]): [number, number] => {
      if (!(Number.isInteger(lo) && Number.isInteger(hi) && lo >= 0 && lo <= hi && hi <= 0xffff)) {
        throw new RangeError(`bad character range [${lo}, ${hi}]`);
      }
      return [lo, hi];
    })
    .sort((x, y) => x[0] - y[0]);
  const flat: number[] = [];
  for (const [lo, hi] of sorted) {
    const last = flat.length - 1;
    if (last > 0 && lo <= flat[last]! + 1) flat[last] = Math.max(flat[last]!, hi);
    else flat.push(lo, hi);
  }
  return { kind: 'chars', ranges: flat, negate };
}

/** One of the characters of `set`. */
export function charIn(set: string): Grammar {
  return chars(Array.from({ length: set.length }, (_, i): [number, number] => [set.charCodeAt(i), set.charCodeAt(i)]));
}

export function seq(...parts: Grammar[]): Grammar {
  return parts.length === 1 ? parts[0]! : { kind: 'seq', parts };
}

/** Any one of the options (they may overlap, even in whole strings). No options: matches nothing. */
export function alt(...options: Grammar[]): Grammar {
  return options.length === 1 ? options[0]! : { kind: 'alt', options };
}

/** `g` repeated min..max times (integers, max may be Infinity). */
export function repeat(g: Grammar, min: number, max: number): Grammar {
  const okMax = max === Infinity || Number.isInteger(max);
  if (!(Number.isInteger(min) && min >= 0 && okMax && max >= min)) {
    throw new RangeError(`bad repeat bounds ${min}..${max}`);
  }
  return { kind: 'repeat', body: g, min, max };
}

/** `g` or nothing. */
export function optional(g: Grammar): Grammar {
  return repeat(g, 0, 1);
}

/** Any characters, any length (always complete, never closed). */
export function anyText(): Grammar {
  return { kind: 'any' };
}

/**
 * Free text until `trigger` first occurs, then `then` (and nothing after it): any text that does not contain
 * `trigger`, or such a text followed by `trigger` and a match of `then`. Text that stops inside a partial
 * trigger is complete (it does not contain the trigger). Meant for "free text, or a tool call once the model
 * starts one".
 */
export function lazy(trigger: string, then: Grammar): Grammar {
  if (trigger.length === 0) throw new RangeError('lazy needs a non-empty trigger');
  return { kind: 'lazy', trigger, then };
}

/** A grammar resolved on first use, so a grammar can refer to itself (resolved once per startMatch). */
export function ref(resolve: () => Grammar): Grammar {
  return { kind: 'ref', resolve };
}
