// Grammars of compact JSON text: the fixed pieces (strings, numbers, integer ranges) and the shapes
// (objects, arrays, member and item lists) that the schema compiler assembles.
//
// Whitespace: only an optional single ' ' after ':' and after ',' (what Python's json.dumps writes).

import { alt, charIn, chars, lit, optional, ref, repeat, seq, type Grammar } from './grammar.js';

export const MAX_INTEGER = 999_999_999_999_999; // 15 digits
const DIGIT = chars([[0x30, 0x39]]);
const WS = optional(lit(' '));
export const COMMA = seq(lit(','), WS);
export const COLON = seq(lit(':'), WS);

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

export function stringGrammar(minLength: number, maxLength: number): Grammar {
  return seq(lit('"'), repeat(STRING_UNIT, minLength, maxLength), lit('"'));
}

const ANY_STRING = stringGrammar(0, Infinity);

export const NUMBER = seq(
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

export function objectOf(value: Grammar): Grammar {
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

/** Object members in order, with commas only between those present. */
export function memberList(members: readonly { member: Grammar; required: boolean }[]): Grammar {
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
export function itemList(prefix: readonly Grammar[], rest: Grammar | null, min: number, max: number): Grammar {
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
