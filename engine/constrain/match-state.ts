// Matcher states: the interned terms a grammar becomes, and what each knows about its language.
//
// The matcher works by Brzozowski derivatives: the state after some text is itself a term, the language of
// the text's possible continuations. A term's flags (nullable, productive, extensible) answer complete /
// closed, and its derivatives are memoised per character class, so masking a 32k-token vocabulary (a trie
// walk that meets the same few states over and over) is nearly always one array lookup per step.
//
// Recursion must be guarded: a ref reached again before any character is consumed (left recursion) throws
// GrammarError when the matcher is built.

import type { Matcher } from './matcher.js';

export interface MatchState {
  /** The state after `text` (any number of characters), or null when the text cannot continue a match. */
  advance(text: string): MatchState | null;
  /** The text so far is a complete match. */
  readonly complete: boolean;
  /** No further character can be accepted (so after it only an end-of-sequence token makes sense). */
  readonly closed: boolean;
}

/** A grammar that cannot be matched (left recursion, or a ref that resolves to nothing usable). */
export class GrammarError extends Error {
  override name = 'GrammarError';
}

export interface LazyInfo {
  readonly id: number;
  readonly trigger: string;
  /** KMP failure function of the trigger. */
  readonly fail: Int32Array;
  readonly then: Term;
}

export type Shape =
  | { readonly kind: 'empty' }
  | { readonly kind: 'eps' }
  | { readonly kind: 'any' }
  | { readonly kind: 'chars'; readonly ranges: readonly number[]; readonly negate: boolean }
  | { readonly kind: 'lit'; readonly text: string }
  | { readonly kind: 'seq'; readonly a: Term; readonly b: Term }
  | { readonly kind: 'alt'; readonly options: readonly Term[] }
  | { readonly kind: 'repeat'; readonly body: Term; readonly min: number; readonly max: number }
  | { readonly kind: 'lazy'; readonly info: LazyInfo; readonly k: number }
  | { readonly kind: 'ref'; body: Term | null };

/**
 * A matcher state (and a grammar term: the language of what may follow). States from one startMatch are
 * canonical: two states with the same future are the same object, so identity is a cache key.
 */
export class GrammarState implements MatchState {
  /** The language contains the empty text. */
  nullable = false;
  /** The language is not empty. */
  productive = false;
  /** The language contains a non-empty text. */
  extensible = false;
  /** Derivatives by character class, filled on demand. */
  private next: (GrammarState | undefined)[] | null = null;

  constructor(
    private readonly matcher: Matcher,
    readonly id: number,
    readonly shape: Shape,
  ) {}

  get complete(): boolean {
    return this.nullable;
  }

  get closed(): boolean {
    return !this.extensible;
  }

  advance(text: string): GrammarState | null {
    if (text.length === 0) return this;
    let s = this.step(text.charCodeAt(0));
    for (let i = 1; i < text.length && s !== null; i++) s = s.step(text.charCodeAt(i));
    return s;
  }

  /** The state after one UTF-16 code unit, or null. */
  step(code: number): GrammarState | null {
    return this.stepClass(this.matcher.classOf(code));
  }

  /** The state after any character of class `cls` (memoised), or null. */
  stepClass(cls: number): GrammarState | null {
    let next = this.next?.[cls];
    if (next === undefined) {
      next = this.matcher.derive(this, cls);
      (this.next ??= new Array<GrammarState | undefined>(this.matcher.classCount))[cls] = next;
    }
    return next.productive ? next : null;
  }
}

export type Term = GrammarState;

/** Recompute a term's flags from its parts; true when they changed. */
export function setFlags(t: Term): boolean {
  const [n, p, e] = flagsOf(t.shape);
  const changed = n !== t.nullable || p !== t.productive || e !== t.extensible;
  t.nullable = n;
  t.productive = p;
  t.extensible = e;
  return changed;
}

/** [nullable, productive, extensible]. Extensible implies productive, which the seq rule relies on. */
function flagsOf(s: Shape): [boolean, boolean, boolean] {
  switch (s.kind) {
    case 'empty':
      return [false, false, false];
    case 'eps':
      return [true, true, false];
    case 'any':
    case 'lazy':
      return [true, true, true];
    case 'chars': {
      const nonEmpty = s.negate || s.ranges.length > 0;
      return [false, nonEmpty, nonEmpty];
    }
    case 'lit':
      return [s.text.length === 0, true, s.text.length > 0];
    case 'seq': {
      const { a, b } = s;
      return [
        a.nullable && b.nullable,
        a.productive && b.productive,
        (a.extensible && b.productive) || (a.nullable && b.extensible),
      ];
    }
    case 'alt':
      return [
        s.options.some((o) => o.nullable),
        s.options.some((o) => o.productive),
        s.options.some((o) => o.extensible),
      ];
    case 'repeat':
      return [s.min === 0 || s.body.nullable, s.min === 0 || s.body.productive, s.max > 0 && s.body.extensible];
    case 'ref':
      return s.body ? [s.body.nullable, s.body.productive, s.body.extensible] : [false, false, false];
  }
}

/**
 * Throws when a ref can reach itself without consuming a character: its derivative would recurse forever.
 * A depth-first search over "may start with" edges, with refs as the only possible cycle points.
 */
export function checkLeftRecursion(terms: readonly Term[]): void {
  const state = new Map<Term, 'open' | 'done'>();
  const visit = (t: Term): void => {
    const mark = state.get(t);
    if (mark === 'done') return;
    if (mark === 'open') throw new GrammarError('left-recursive grammar: a ref reaches itself before any character');
    state.set(t, 'open');
    const s = t.shape;
    if (s.kind === 'seq') {
      visit(s.a);
      if (s.a.nullable) visit(s.b);
    } else if (s.kind === 'alt') {
      for (const o of s.options) visit(o);
    } else if (s.kind === 'repeat') {
      visit(s.body);
    } else if (s.kind === 'ref' && s.body) {
      visit(s.body);
    }
    state.set(t, 'done');
  };
  for (const t of terms) visit(t);
}
