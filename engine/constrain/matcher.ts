// The incremental matcher: one per startMatch call, owning every state reached from its grammar.
//
// startMatch imports the grammar into interned terms (match-state.ts), settles their flags, refuses left
// recursion, and cuts the code units into classes that every character set, literal and trigger treats
// alike. derive computes one derivative; smart constructors keep terms canonical, so states with the same
// future are the same object. A matcher's memo tables are freed with the request that made it.

import type { Grammar } from './grammar.js';
import {
  checkLeftRecursion,
  GrammarState,
  setFlags,
  type LazyInfo,
  type MatchState,
  type Shape,
  type Term,
} from './match-state.js';

/** Start matching `g`: the state before any text. Throws GrammarError for a left-recursive grammar. */
export function startMatch(g: Grammar): MatchState {
  return new Matcher(g).start;
}

/** The per-startMatch world: interned terms, character classes, derivative computation. */
export class Matcher {
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

  private importShape(g: Exclude<Grammar, { kind: 'ref' }>): Term {
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
