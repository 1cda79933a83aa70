import { describe, expect, it } from 'vitest';
import {
  alt,
  anyText,
  charIn,
  chars,
  GrammarError,
  lazy,
  lit,
  optional,
  ref,
  repeat,
  seq,
  startMatch,
  type Grammar,
  type MatchState,
} from '../../engine/constrain/grammar.js';

/** 'null' when the text cannot continue a match, else which of complete/closed hold. */
function status(g: Grammar, text: string): string {
  const s = startMatch(g).advance(text);
  if (s === null) return 'null';
  return [s.complete ? 'complete' : 'partial', s.closed ? 'closed' : 'open'].join(' ');
}

/** The state after advancing one piece at a time (null as soon as a piece fails). */
function advanceAll(g: Grammar, pieces: string[]): MatchState | null {
  let s: MatchState | null = startMatch(g);
  for (const p of pieces) s = s?.advance(p) ?? null;
  return s;
}

describe('grammar matching', () => {
  it('lit: exact text, closed once complete', () => {
    const g = lit('abc');
    expect(status(g, '')).toBe('partial open');
    expect(status(g, 'ab')).toBe('partial open');
    expect(status(g, 'abc')).toBe('complete closed');
    expect(status(g, 'abcd')).toBe('null');
    expect(status(g, 'abd')).toBe('null');
    expect(status(lit(''), '')).toBe('complete closed');
    expect(status(lit(''), 'x')).toBe('null');
  });

  it('seq and alt, with options that share prefixes', () => {
    const g = seq(lit('a'), alt(lit('bc'), lit('bcd'), lit('x')), lit('!'));
    expect(status(g, 'abc')).toBe('partial open');
    expect(status(g, 'abc!')).toBe('complete closed');
    expect(status(g, 'abcd!')).toBe('complete closed');
    expect(status(g, 'ax!')).toBe('complete closed');
    expect(status(g, 'abx')).toBe('null');
    // an option that is a prefix of another: complete but still open
    const h = alt(lit('ab'), lit('abc'));
    expect(status(h, 'ab')).toBe('complete open');
    expect(status(h, 'abc')).toBe('complete closed');
    expect(status(alt(), '')).toBe('partial closed'); // matches nothing
    expect(status(seq(), '')).toBe('complete closed');
  });

  it('repeat: min and max, finite and unbounded', () => {
    const g = repeat(lit('ab'), 2, 3);
    expect(status(g, '')).toBe('partial open');
    expect(status(g, 'ab')).toBe('partial open');
    expect(status(g, 'abab')).toBe('complete open');
    expect(status(g, 'ababab')).toBe('complete closed');
    expect(status(g, 'abababab')).toBe('null');
    expect(status(g, 'aba')).toBe('partial open');
    const u = repeat(charIn('xy'), 0, Infinity);
    expect(status(u, '')).toBe('complete open');
    expect(status(u, 'xyyxyxxxyyyx'.repeat(20))).toBe('complete open');
    expect(status(u, 'xz')).toBe('null');
    expect(status(repeat(lit('a'), 0, 0), '')).toBe('complete closed');
    expect(() => repeat(lit('a'), 3, 2)).toThrow(RangeError);
    expect(() => repeat(lit('a'), -1, 2)).toThrow(RangeError);
    expect(() => repeat(lit('a'), 0, 1.5)).toThrow(RangeError);
  });

  it('repeat of something that can be empty', () => {
    const g = seq(repeat(optional(lit('a')), 2, 2), lit('b'));
    expect(status(g, 'b')).toBe('complete closed');
    expect(status(g, 'ab')).toBe('complete closed');
    expect(status(g, 'aab')).toBe('complete closed');
    expect(status(g, 'aaab')).toBe('null');
  });

  it('chars: ranges and negation, on UTF-16 code units', () => {
    const digit = chars([[0x30, 0x39]]);
    expect(status(repeat(digit, 1, Infinity), '0123456789')).toBe('complete open');
    expect(status(digit, 'a')).toBe('null');
    const notQuote = repeat(chars([[0x22, 0x22]], true), 0, Infinity);
    expect(status(notQuote, 'héllo 日本 😀')).toBe('complete open');
    expect(status(notQuote, 'a"')).toBe('null');
    // a surrogate pair is two code units
    expect(status(repeat(chars([[0xd800, 0xdfff]]), 2, 2), '😀')).toBe('complete closed');
  });

  it('anyText: anything, always complete, never closed', () => {
    expect(status(anyText(), '')).toBe('complete open');
    expect(status(anyText(), 'any\n"text" 😀')).toBe('complete open');
    expect(status(seq(lit('<'), anyText()), 'x')).toBe('null');
  });

  it('lazy: free text until the trigger, then the grammar after it', () => {
    const g = lazy('<call>', seq(lit(' {'), repeat(charIn('ab'), 1, 2), lit('}')));
    expect(status(g, '')).toBe('complete open');
    expect(status(g, 'Hello, <cal')).toBe('complete open'); // a partial trigger is still free text
    expect(status(g, 'text <calm> more < <c')).toBe('complete open');
    expect(status(g, '<call>')).toBe('partial open');
    expect(status(g, 'Sure. <call> {ab}')).toBe('complete closed');
    expect(status(g, 'Sure. <call> {ab} and more')).toBe('null'); // nothing after `then`
    expect(status(g, 'Sure. <call> {c}')).toBe('null');
    expect(status(g, 'x<<call> {a}')).toBe('complete closed'); // overlapping trigger prefix
    expect(status(g, '<ca<call> {b}')).toBe('complete closed');
  });

  it('lazy: a trigger split across advance calls, with text before it', () => {
    const g = lazy('<call>', lit('X'));
    const pieces = ['Let me check', ' <', 'ca', 'l', 'l>', 'X'];
    const states = pieces.map((_, i) => advanceAll(g, pieces.slice(0, i + 1)));
    expect(states.map((s) => s && [s.complete, s.closed])).toEqual([
      [true, false],
      [true, false],
      [true, false],
      [true, false],
      [false, false], // trigger seen: X must follow
      [true, true],
    ]);
    expect(advanceAll(g, ['Let me check <', 'call>', 'Y'])).toBeNull();
    expect(advanceAll(g, ['<call', '>X'])?.closed).toBe(true);
  });

  it('states are reusable: advancing one does not change it', () => {
    const s = startMatch(seq(lit('ab'), alt(lit('c'), lit('d'))));
    const a = s.advance('a')!;
    expect(a.advance('bc')?.complete).toBe(true);
    expect(a.advance('bd')?.complete).toBe(true);
    expect(a.advance('be')).toBeNull();
    expect(s.advance('')).toBe(s);
    expect(s.complete).toBe(false);
  });

  it('ref: guarded recursion (balanced brackets)', () => {
    const inner: Grammar = ref(() => brackets);
    const brackets: Grammar = repeat(seq(lit('['), inner, lit(']')), 0, Infinity);
    expect(status(brackets, '[[][[]]][]')).toBe('complete open');
    expect(status(brackets, '[[][[]]')).toBe('partial open');
    expect(status(brackets, '[]]')).toBe('null');
    expect(status(brackets, '['.repeat(200) + ']'.repeat(200))).toBe('complete open');
  });

  it('ref: a required infinite recursion matches nothing, left recursion throws', () => {
    const self: Grammar = ref(() => endless);
    const endless: Grammar = seq(lit('('), self, lit(')'));
    expect(status(endless, '')).toBe('partial closed'); // no finite text matches
    expect(status(endless, '(')).toBe('null');
    const left: Grammar = ref(() => leftRec);
    const leftRec: Grammar = alt(seq(left, lit('a')), lit('b'));
    expect(() => startMatch(leftRec)).toThrow(GrammarError);
    const hidden: Grammar = ref(() => viaEmpty);
    const viaEmpty: Grammar = alt(seq(optional(lit('x')), hidden, lit('a')), lit('b'));
    expect(() => startMatch(viaEmpty)).toThrow(GrammarError);
  });

  it('prunes options that can never complete', () => {
    const self: Grammar = ref(() => endless);
    const endless: Grammar = seq(lit('a('), self, lit(')'));
    const g = alt(endless, lit('ab'));
    expect(status(g, 'a')).toBe('partial open');
    expect(status(g, 'a(')).toBe('null'); // only the endless option could continue
    expect(status(g, 'ab')).toBe('complete closed');
  });
});
