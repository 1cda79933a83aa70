// Token masks for constrained decoding: which vocabulary ids may come next under a grammar.
//
// VocabIndex keeps every token's text in a trie, so a mask is one walk of the trie from the matcher state:
// a prefix shared by many tokens is stepped once, and a subtree is dropped as soon as its prefix cannot
// continue the match. GrammarConstraint is what the generation loop sees: mask the logits, accept the
// sampled token.
//
// Token texts (Llama-2 SentencePiece): the piece with every '▁' as ' '; a byte-fallback piece <0xXX> is its
// character when XX < 0x80 and never allowed otherwise: a lone byte of a multi-byte UTF-8 character is not
// text the matcher can check, so constrained output spells non-ASCII characters only with whole-character
// pieces (a character that no piece contains, like a rare CJK character, cannot be generated). Special
// tokens are never allowed (stop ids are handled apart). The decoder strips one leading space from the
// output, so the first generated token's text loses a leading ' ' before matching; a token whose text is
// then empty is not allowed (it would add nothing, forever).

import { startMatch, type Grammar, type MatchState } from './grammar.js';
import { GrammarState } from './match-state.js';
import type { HymbaTokenizer } from '../text/tokenizer.js';

const SPACE = 0x20;

/** The vocabulary as text pieces for masking, built once per tokenizer. */
export class VocabIndex {
  private static readonly byTokenizer = new WeakMap<HymbaTokenizer, VocabIndex>();

  /** Number of ids (texts.length). */
  readonly size: number;
  private readonly texts: readonly (string | null)[];
  // The trie, flattened: node n's edges are edgeStart[n] .. edgeStart[n+1]-1 (one character each), and the
  // ids whose text ends at node n are ids[idStart[n] .. idStart[n+1]-1]. Node 0 is the root (empty text).
  private readonly edgeStart: Int32Array;
  private readonly edgeCode: Uint16Array;
  private readonly edgeTarget: Int32Array;
  private readonly idStart: Int32Array;
  private readonly ids: Int32Array;
  /** Scratch for one walk's result. */
  private readonly found: Int32Array;

  static of(tok: HymbaTokenizer): VocabIndex {
    let index = VocabIndex.byTokenizer.get(tok);
    if (!index) {
      index = new VocabIndex(Array.from({ length: tok.vocabSize }, (_, id) => tokenText(tok, id)));
      VocabIndex.byTokenizer.set(tok, index);
    }
    return index;
  }

  /** For tests and other tokenizers: texts[id] is the text a token adds mid-sequence, null = never allowed. */
  constructor(texts: readonly (string | null)[]) {
    this.texts = texts.map((t) => (t === '' ? null : t));
    this.size = texts.length;
    const children: Map<number, number>[] = [new Map()];
    const idsAt: number[][] = [[]];
    this.texts.forEach((text, id) => {
      if (text === null) return;
      let node = 0;
      for (let i = 0; i < text.length; i++) {
        const c = text.charCodeAt(i);
        let next = children[node]!.get(c);
        if (next === undefined) {
          next = children.length;
          children.push(new Map());
          idsAt.push([]);
          children[node]!.set(c, next);
        }
        node = next;
      }
      idsAt[node]!.push(id);
    });
    const nodes = children.length;
    this.edgeStart = new Int32Array(nodes + 1);
    this.idStart = new Int32Array(nodes + 1);
    this.edgeCode = new Uint16Array(nodes - 1);
    this.edgeTarget = new Int32Array(nodes - 1);
    this.ids = new Int32Array(idsAt.reduce((n, a) => n + a.length, 0));
    let e = 0;
    let k = 0;
    for (let n = 0; n < nodes; n++) {
      this.edgeStart[n] = e;
      this.idStart[n] = k;
      for (const [c, target] of [...children[n]!].sort((x, y) => x[0] - y[0])) {
        this.edgeCode[e] = c;
        this.edgeTarget[e++] = target;
      }
      for (const id of idsAt[n]!) this.ids[k++] = id;
    }
    this.edgeStart[nodes] = e;
    this.idStart[nodes] = k;
    this.found = new Int32Array(this.ids.length);
  }

  /** The text token `id` adds mid-sequence; null when it is never allowed. */
  textOf(id: number): string | null {
    return this.texts[id] ?? null;
  }

  /** Ids whose text can follow `state`; `first`: the first generated token, whose leading ' ' is dropped. */
  allowed(state: MatchState, first: boolean): Int32Array {
    const n =
      state instanceof GrammarState
        ? this.walkRoot(state, first, stepGrammarState)
        : this.walkRoot(state, first, stepAnyState);
    return this.found.slice(0, n);
  }

  private walkRoot<S>(state: S, first: boolean, step: (s: S, code: number) => S | null): number {
    let n = 0;
    const { edgeStart, edgeCode, edgeTarget } = this;
    for (let e = edgeStart[0]!, end = edgeStart[1]!; e < end; e++) {
      const child = edgeTarget[e]!;
      if (first && edgeCode[e] === SPACE) {
        // The decoder drops this space: match the rest of these texts from `state` itself; ' ' alone adds nothing.
        n = this.walk(child, state, n, step);
        continue;
      }
      const next = step(state, edgeCode[e]!);
      if (next !== null) n = this.walk(child, next, this.emit(child, n), step);
    }
    return n;
  }

  /** Collect the ids under `node` (already reached in `state`, its own ids emitted) whose texts continue. */
  private walk<S>(node: number, state: S, n: number, step: (s: S, code: number) => S | null): number {
    const { edgeStart, edgeCode, edgeTarget } = this;
    for (let e = edgeStart[node]!, end = edgeStart[node + 1]!; e < end; e++) {
      const next = step(state, edgeCode[e]!);
      if (next === null) continue;
      const child = edgeTarget[e]!;
      n = this.emit(child, n);
      if (edgeStart[child + 1]! > edgeStart[child]!) n = this.walk(child, next, n, step);
    }
    return n;
  }

  private emit(node: number, n: number): number {
    for (let i = this.idStart[node]!, end = this.idStart[node + 1]!; i < end; i++) this.found[n++] = this.ids[i]!;
    return n;
  }
}

function stepGrammarState(s: GrammarState, code: number): GrammarState | null {
  return s.step(code);
}

function stepAnyState(s: MatchState, code: number): MatchState | null {
  return s.advance(String.fromCharCode(code));
}

/** The text of one id as the masking sees it (see the file header). */
function tokenText(tok: HymbaTokenizer, id: number): string | null {
  if (tok.isSpecial(id)) return null;
  const byte = tok.byteOf(id);
  if (byte >= 0) return byte < 0x80 ? String.fromCharCode(byte) : null;
  return tok.idToPiece(id)?.replaceAll('\u2581', ' ') ?? null;
}

/** The loop's view of a constraint (generate.ts uses only this interface). */
export interface TokenConstraint {
  /** Set logits of ids not allowed next to -Infinity. Stop ids stay allowed only when the match is complete. Throws if nothing at all is allowed. */
  mask(logits: Float32Array, stopIds: ReadonlySet<number>): void;
  /** Advance past a sampled (non-stop) id. */
  accept(id: number): void;
}

/** A grammar over the text of the generated tokens. */
export class GrammarConstraint implements TokenConstraint {
  private state: MatchState;
  private first = true;

  constructor(
    private readonly index: VocabIndex,
    grammar: Grammar,
  ) {
    this.state = startMatch(grammar);
  }

  /** The text accepted so far is a complete match. */
  get complete(): boolean {
    return this.state.complete;
  }

  mask(logits: Float32Array, stopIds: ReadonlySet<number>): void {
    let ids = this.index.allowed(this.state, this.first);
    if (this.state.complete) ids = Int32Array.from([...ids, ...stopIds]);
    const values = new Float32Array(ids.length);
    let kept = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (id >= 0 && id < logits.length) {
        ids[kept] = id;
        values[kept++] = logits[id]!;
      }
    }
    if (kept === 0) {
      throw new Error(
        this.state.complete
          ? 'constrained decoding: the output is complete but there is no stop token to end it'
          : 'constrained decoding: no token can continue the output under its grammar',
      );
    }
    logits.fill(-Infinity);
    for (let i = 0; i < kept; i++) logits[ids[i]!] = values[i]!;
  }

  accept(id: number): void {
    let text = this.index.textOf(id);
    if (text !== null && this.first && text.charCodeAt(0) === SPACE) text = text.slice(1);
    const next = text ? this.state.advance(text) : null;
    if (next === null) throw new Error(`constrained decoding: token ${id} cannot continue the output here`);
    this.state = next;
    this.first = false;
  }
}
