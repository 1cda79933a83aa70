// Character-level grammars and an incremental matcher for them: the core of constrained decoding.
//
// A Grammar is an immutable tree built with lit / chars / seq / alt / repeat / anyText / lazy, and ref for
// recursion (a JSON value inside a JSON array). startMatch imports it into a matcher of its own and matches by
// Brzozowski derivatives: the state after some text is itself a term, the language of the text's possible
// continuations. Terms are interned, so states with the same future are the same object, and each step is
// memoised per state and character class. Masking a 32k-token vocabulary walks a trie of token texts from
// the current state; the walk meets the same few states over and over, so nearly every step is one array
// lookup. Characters are UTF-16 code units (a surrogate pair is two steps).
//
// Recursion must be guarded: a ref reached again before any character is consumed (left recursion) throws
// GrammarError from startMatch. A matcher (and every state reached from it) belongs to one startMatch call,
// so its memo tables are freed with the request that made it.

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

/** A grammar that cannot be matched (left recursion, or a ref that resolves to nothing usable). */
export class GrammarError extends Error {
  override name = 'GrammarError';
}

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

export interface MatchState {
  /** The state after `text` (any number of characters), or null when the text cannot continue a match. */
  advance(text: string): MatchState | null;
  /** The text so far is a complete match. */
  readonly complete: boolean;
  /** No further character can be accepted (so after it only an end-of-sequence token makes sense). */
  readonly closed: boolean;
}

/** Start matching `g`: the state before any text. Throws GrammarError for a left-recursive grammar. */
export function startMatch(g: Grammar): MatchState {
  return new Matcher(g).start;
}

// ---------------------------------------------------------------------------------------------------------
// Terms: the matcher's interned form of grammars and of every state derived from them.

interface LazyInfo {
  readonly id: number;
  readonly trigger: string;
  /** KMP failure function of the trigger. */
  readonly fail: Int32Array;
  readonly then: Term;
}

type Shape =
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

type Term = GrammarState;

/** The per-startMatch world: interned terms, character classes, derivative computation. */
class Matcher {
  readonly start: Term;
  readonly empty: Term;
  readonly eps: Term;
  readonly any: Term;
  classCount = 1;
  private readonly interned = new Map<string, Term>();
  private readonly imported = new Map<Grammar, Term>();
  /** Terms made while importing, whose flags the fixpoint settles. */
  private readonly early: Term[] = [];
  /** Importing: flags are not final yet, so no simplification may depend on them. */
  private ready = false;
  private nextId = 0;
  private lazyCount = 0;
  /** Class boundaries: class i holds code units bounds[i] .. bounds[i+1]-1. */
  private bounds: Int32Array = new Int32Array([0]);
  private readonly asciiClass = new Int32Array(128);

  constructor(root: Grammar) {
    this.empty = this.make('E', { kind: 'empty' });
    this.eps = this.make('e', { kind: 'eps' });
    this.any = this.make('*', { kind: 'any' });
    this.start = this.importGrammar(root);
    this.settleFlags();
    checkLeftRecursion(this.early);
    this.buildClasses();
    this.ready = true;
  }

  classOf(code: number): number {
    if (code < 128) return this.asciiClass[code]!;
    const b = this.bounds;
    let lo = 0;
    let hi = b.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (b[mid]! <= code) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** The derivative of `t` by any character of class `cls` (every character of a class behaves alike). */
  derive(t: Term, cls: number): Term {
    const c = this.bounds[cls]!;
    const s = t.shape;
    switch (s.kind) {
      case 'empty':
      case 'eps':
        return this.empty;
      case 'any':
        return this.any;
      case 'chars':
        return inRanges(s.ranges, c) !== s.negate ? this.eps : this.empty;
      case 'lit':
        return s.text.charCodeAt(0) === c ? this.lit(s.text.slice(1)) : this.empty;
      case 'seq': {
        const first = this.seq(this.stepClass(s.a, cls), s.b);
        return s.a.nullable ? this.alt([first, this.stepClass(s.b, cls)]) : first;
      }
      case 'alt':
        return this.alt(s.options.map((o) => this.stepClass(o, cls)));
      case 'repeat': {
        const rest = this.repeat(s.body, Math.max(0, s.min - 1), s.max - 1);
        return this.seq(this.stepClass(s.body, cls), rest);
      }
      case 'lazy': {
        const k = kmpStep(s.info, s.k, c);
        return k === s.info.trigger.length ? s.info.then : this.lazy(s.info, k);
      }
      case 'ref':
        return s.body === null ? this.empty : this.stepClass(s.body, cls);
    }
  }

  /** The memoised derivative; `empty` when nothing can follow. */
  private stepClass(t: Term, cls: number): Term {
    return t.stepClass(cls) ?? this.empty;
  }

  // -- smart constructors: canonical forms, so equal languages built the same way are one term -------------

  private lit(text: string): Term {
    return text.length === 0 ? this.eps : this.intern(`L${text}`, () => ({ kind: 'lit', text }));
  }

  private seq(a: Term, b: Term): Term {
    if (a === this.empty || b === this.empty) return this.empty;
    if (this.ready && !(a.productive && b.productive)) return this.empty;
    if (a === this.eps) return b;
    if (b === this.eps) return a;
    const sa = a.shape;
    if (sa.kind === 'seq') return this.seq(sa.a, this.seq(sa.b, b)); // right-nested: one form per sequence
    return this.intern(`S${a.id},${b.id}`, () => ({ kind: 'seq', a, b }));
  }

  private alt(options: readonly Term[]): Term {
    const flat: Term[] = [];
    for (const o of options) {
      const s = o.shape;
      if (s.kind === 'alt') flat.push(...s.options);
      else flat.push(o);
    }
    const kept = new Map<number, Term>();
    for (const o of flat) {
      if (o === this.empty || (this.ready && !o.productive)) continue;
      if (o === this.any) return this.any; // absorbs everything
      kept.set(o.id, o);
    }
    if (kept.size === 0) return this.empty;
    if (kept.size === 1) return kept.values().next().value!;
    const sorted = [...kept.values()].sort((x, y) => x.id - y.id);
    return this.intern(`A${sorted.map((o) => o.id).join(',')}`, () => ({ kind: 'alt', options: sorted }));
  }

  private repeat(body: Term, min: number, max: number): Term {
    if (max === 0 || body === this.eps) return this.eps;
    if (body === this.empty) return min === 0 ? this.eps : this.empty;
    if (min === 1 && max === 1) return body;
    return this.intern(`R${body.id},${min},${max}`, () => ({ kind: 'repeat', body, min, max }));
  }

  private lazy(info: LazyInfo, k: number): Term {
    return this.intern(`Z${info.id},${k}`, () => ({ kind: 'lazy', info, k }));
  }

  private intern(key: string, shape: () => Shape): Term {
    return this.interned.get(key) ?? this.make(key, shape());
  }

  private make(key: string, shape: Shape): Term {
    const t = new GrammarState(this, this.nextId++, shape);
    setFlags(t);
    this.interned.set(key, t);
    if (!this.ready) this.early.push(t);
    return t;
  }

  // -- import -----------------------------------------------------------------------------------------------

  private importGrammar(g: Grammar): Term {
    const done = this.imported.get(g);
    if (done) return done;
    if (g.kind === 'ref') {
      // Registered before its body is imported, so a self-reference finds it.
      const t = this.make(`F${this.nextId}`, { kind: 'ref', body: null });
      this.imported.set(g, t);
      const body = this.importGrammar(g.resolve());
      if (t.shape.kind === 'ref') t.shape.body = body;
      return t;
    }
    const t = this.importShape(g);
    this.imported.set(g, t);
    return t;
  }

  private importShape(g: Exclude<Grammar, RefNode>): Term {
    switch (g.kind) {
      case 'lit':
        return this.lit(g.text);
      case 'chars':
        return this.intern(`C${g.negate ? '!' : ''}${g.ranges.join(',')}`, () => g);
      case 'seq':
        return g.parts.reduceRight<Term>((rest, part) => this.seq(this.importGrammar(part), rest), this.eps);
      case 'alt':
        return this.alt(g.options.map((o) => this.importGrammar(o)));
      case 'repeat':
        return this.repeat(this.importGrammar(g.body), g.min, g.max);
      case 'any':
        return this.any;
      case 'lazy': {
        const then = this.importGrammar(g.then);
        const info: LazyInfo = { id: this.lazyCount++, trigger: g.trigger, fail: kmpFailure(g.trigger), then };
        return this.lazy(info, 0);
      }
    }
  }

  /** Least fixpoint of the flags over the imported terms (refs start false, as recursion demands). */
  private settleFlags(): void {
    for (let changed = true; changed;) {
      changed = false;
      for (const t of this.early) changed = setFlags(t) || changed;
    }
  }

  /** Character classes: code units that every char set, literal and trigger of the grammar treats alike. */
  private buildClasses(): void {
    const cuts = new Set<number>([0]);
    const cut = (lo: number, hi: number): void => {
      cuts.add(lo);
      if (hi < 0xffff) cuts.add(hi + 1);
    };
    const cutText = (text: string): void => {
      for (let i = 0; i < text.length; i++) cut(text.charCodeAt(i), text.charCodeAt(i));
    };
    for (const t of this.early) {
      const s = t.shape;
      if (s.kind === 'chars') for (let i = 0; i < s.ranges.length; i += 2) cut(s.ranges[i]!, s.ranges[i + 1]!);
      else if (s.kind === 'lit') cutText(s.text);
      else if (s.kind === 'lazy') cutText(s.info.trigger);
    }
    this.bounds = Int32Array.from([...cuts].sort((x, y) => x - y));
    this.classCount = this.bounds.length;
    for (let c = 0; c < 128; c++) this.asciiClass[c] = this.classOfSlow(c);
  }

  private classOfSlow(code: number): number {
    let cls = 0;
    while (cls + 1 < this.bounds.length && this.bounds[cls + 1]! <= code) cls++;
    return cls;
  }
}

function inRanges(ranges: readonly number[], c: number): boolean {
  for (let i = 0; i < ranges.length; i += 2) {
    if (c < ranges[i]!) return false;
    if (c <= ranges[i + 1]!) return true;
  }
  return false;
}

/** Recompute a term's flags from its parts; true when they changed. */
function setFlags(t: Term): boolean {
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
function checkLeftRecursion(terms: readonly Term[]): void {
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

function kmpFailure(p: string): Int32Array {
  const fail = new Int32Array(p.length);
  for (let i = 1, k = 0; i < p.length; i++) {
    while (k > 0 && p.charCodeAt(i) !== p.charCodeAt(k)) k = fail[k - 1]!;
    if (p.charCodeAt(i) === p.charCodeAt(k)) k++;
    fail[i] = k;
  }
  return fail;
}

/** Length of the longest trigger prefix that ends the text, after one more character. */
function kmpStep(info: LazyInfo, k: number, c: number): number {
  const p = info.trigger;
  while (k > 0 && p.charCodeAt(k) !== c) k = info.fail[k - 1]!;
  return p.charCodeAt(k) === c ? k + 1 : 0;
}
