import { describe, expect, it } from 'vitest';
import {
  generate,
  type GenerateOptions,
  type GenerateResult,
  type GeneratedToken,
  type IncrementalDetokenizer,
  type TokenStepper,
} from '../../engine/generate/generate.js';
import { lit } from '../../engine/constrain/grammar.js';
import { StopMatcher } from '../../engine/generate/stop.js';
import { GrammarConstraint, VocabIndex, type TokenConstraint } from '../../engine/constrain/token-mask.js';

// ---------------------------------------------------------------------------------------------------------
// StopMatcher

/** Feed deltas, collect the emitted text; the flush only happens when no stop matched. */
function runStops(stops: string[], deltas: string[]): { text: string; stop?: string; pieces: string[] } {
  const m = new StopMatcher(stops);
  const pieces: string[] = [];
  for (const d of deltas) {
    const step = m.push(d);
    pieces.push(step.text);
    if (step.stopped) return { text: pieces.join(''), stop: step.stop!, pieces };
  }
  pieces.push(m.flush());
  return { text: pieces.join(''), pieces };
}

/** Every way to cut `text` into deltas at the given positions, plus one delta per character. */
function splits(text: string): string[][] {
  const out: string[][] = [[text], Array.from(text)];
  for (let i = 1; i < text.length; i++) out.push([text.slice(0, i), text.slice(i)]);
  for (let i = 1; i < text.length; i++) {
    for (let j = i + 1; j < text.length; j++) out.push([text.slice(0, i), text.slice(i, j), text.slice(j)]);
  }
  return out;
}

describe('StopMatcher', () => {
  it('passes text through when no stop string can start', () => {
    expect(runStops(['STOP'], ['hello', ' world']).pieces).toEqual(['hello', ' world', '']);
  });

  it('holds back a possible prefix and releases it when the next delta rules it out', () => {
    const r = runStops(['</s>'], ['abc<', '/', 'x', 'y']);
    expect(r.pieces).toEqual(['abc', '', '</x', 'y', '']);
    expect(r.stop).toBeUndefined();
  });

  it('matches a stop string split across deltas and drops it and what follows', () => {
    const r = runStops(['</s>'], ['Hi<', '/', 's>', 'after']);
    expect(r).toEqual({ text: 'Hi', stop: '</s>', pieces: ['Hi', '', ''] });
    const r2 = runStops(['\n\n'], ['one\n', '\ntwo']);
    expect(r2).toEqual({ text: 'one', stop: '\n\n', pieces: ['one', ''] });
  });

  it('gives the same result for every way of splitting the text', () => {
    const cases: [string[], string, string, string | undefined][] = [
      [['abc'], 'xxabcyy', 'xx', 'abc'],
      [['aab'], 'aaab', 'a', 'aab'], // overlapping prefix: the first 'a' is released once 'aaa' rules it out
      [['abab'], 'ababab', '', 'abab'],
      [['ab', 'xabc'], 'xabc', 'x', 'ab'], // 'ab' completes first, though 'xabc' starts earlier
      [['bc', 'abc'], 'zabc', 'z', 'abc'], // both end together: the longer one cuts earlier
      [['END', 'STOP'], 'go STOP now END', 'go ', 'STOP'],
      [['aaa'], 'aa', 'aa', undefined],
      [['Hello'], 'Hell', 'Hell', undefined],
    ];
    for (const [stops, text, emitted, stop] of cases) {
      for (const deltas of splits(text)) {
        const r = runStops(stops, deltas);
        expect({ deltas, text: r.text, stop: r.stop }).toEqual({ deltas, text: emitted, stop });
      }
    }
  });

  it('stays stopped and ignores empty stop strings', () => {
    const m = new StopMatcher(['', 'x']);
    expect(m.push('abc')).toEqual({ text: 'abc', stopped: false });
    expect(m.push('1x2')).toEqual({ text: '1', stopped: true, stop: 'x' });
    expect(m.stopped).toBe(true);
    expect(m.push('more')).toEqual({ text: '', stopped: true, stop: 'x' });
    expect(m.flush()).toBe('');
    expect(new StopMatcher([]).push('anything')).toEqual({ text: 'anything', stopped: false });
  });
});

// ---------------------------------------------------------------------------------------------------------
// generate, against a test double of the model: a Markov chain over 10 tokens

const VOCAB = ['<eos>', 'a', 'b', 'c', ' ', 'hel', 'lo', 'wor', 'ld', '!'];
const EOS = 0;
/** Greedy successor of each token: from 1 ('a'), greedy reads "hello world!" then <eos>. */
const NEXT = [1, 5, 3, 2, 7, 6, 4, 8, 9, 0];

/** The logits row the chain gives after `prev`: the successor at 4, the rest small and distinct. */
function chainRow(prev: number): Float32Array {
  return Float32Array.from(VOCAB, (_, j) => (j === NEXT[prev] ? 4 : ((prev * 3 + j * 7) % 10) / 10));
}

/** A stepper whose state is the list of ids fed, and whose logits depend on the last one. */
class ChainStepper implements TokenStepper {
  readonly calls: number[][] = [];
  readonly state: number[] = [];
  onFeed?: (ids: number[]) => void;

  async feed(ids: number[]): Promise<Float32Array> {
    expect(ids.length).toBeGreaterThan(0);
    await Promise.resolve(); // a real stepper awaits the model: keep the loop honest about async
    this.calls.push([...ids]);
    this.state.push(...ids);
    this.onFeed?.(ids);
    return chainRow(ids[ids.length - 1]!);
  }
}

/** Each id's text, straight away. */
function plainDetok(): IncrementalDetokenizer {
  return { push: (id) => VOCAB[id]!, flush: () => '' };
}

/** Text one token late, as a detokenizer waiting for a multi-byte character would be. */
function laggingDetok(): IncrementalDetokenizer {
  let pending = '';
  return {
    push(id) {
      const out = pending;
      pending = VOCAB[id]!;
      return out;
    },
    flush() {
      const out = pending;
      pending = '';
      return out;
    },
  };
}

async function collect(
  stepper: TokenStepper,
  prompt: number[],
  opts: GenerateOptions,
  detok: (() => IncrementalDetokenizer) | null = plainDetok, // null: no detokenizer
  onToken?: (t: GeneratedToken, index: number) => void,
): Promise<{ tokens: GeneratedToken[]; result: GenerateResult }> {
  const tokens: GeneratedToken[] = [];
  const it = generate(stepper, prompt, opts, detok ?? undefined);
  for (;;) {
    const next = await it.next();
    if (next.done) return { tokens, result: next.value };
    tokens.push(next.value);
    onToken?.(next.value, tokens.length - 1);
  }
}

const ids = (tokens: GeneratedToken[]): number[] => tokens.map((t) => t.id);
const text = (tokens: GeneratedToken[], result: GenerateResult): string =>
  tokens.map((t) => t.text).join('') + result.tail;

describe('generate', () => {
  it('stops at maxTokens without feeding the last token', async () => {
    const s = new ChainStepper();
    const { tokens, result } = await collect(s, [1], { maxTokens: 3, temperature: 0 });
    expect(ids(tokens)).toEqual([5, 6, 4]);
    expect(tokens.map((t) => t.text)).toEqual(['hel', 'lo', ' ']);
    expect(result).toEqual({ finishReason: 'length', tail: '', fedIds: [1, 5, 6] });
    expect(s.calls).toEqual([[1], [5], [6]]);
    expect(s.state).toEqual(result.fedIds);
  });

  it('feeds the whole prompt once, and maxTokens 0 is prefill only', async () => {
    const s = new ChainStepper();
    const { tokens, result } = await collect(s, [2, 3, 1], { maxTokens: 0 });
    expect(tokens).toEqual([]);
    expect(result).toEqual({ finishReason: 'length', tail: '', fedIds: [2, 3, 1] });
    expect(s.calls).toEqual([[2, 3, 1]]);
    const s2 = new ChainStepper();
    const r2 = await collect(s2, [2, 3, 1], { maxTokens: 2, temperature: 0 });
    expect(ids(r2.tokens)).toEqual([5, 6]); // continues from the prompt's last id
    expect(s2.calls).toEqual([[2, 3, 1], [5]]);
  });

  it('ends with stop on a stop token id, which is neither yielded nor fed', async () => {
    const s = new ChainStepper();
    const { tokens, result } = await collect(s, [1], { maxTokens: 100, temperature: 0, stopTokenIds: [EOS] });
    expect(ids(tokens)).toEqual([5, 6, 4, 7, 8, 9]);
    expect(text(tokens, result)).toBe('hello world!');
    expect(result).toEqual({ finishReason: 'stop', stopTokenId: EOS, tail: '', fedIds: [1, 5, 6, 4, 7, 8, 9] });
    expect(s.state).toEqual(result.fedIds);
  });

  it('runs on past a token that is not a stop id', async () => {
    const { tokens, result } = await collect(new ChainStepper(), [1], { maxTokens: 9, temperature: 0 });
    expect(ids(tokens)).toEqual([5, 6, 4, 7, 8, 9, 0, 1, 5]);
    expect(result.finishReason).toBe('length');
  });

  it('ends with stop on a stop string spanning tokens, cutting the text before it', async () => {
    const s = new ChainStepper();
    const { tokens, result } = await collect(s, [1], { maxTokens: 100, temperature: 0, stopStrings: ['o w'] });
    expect(ids(tokens)).toEqual([5, 6, 4, 7]);
    expect(tokens.map((t) => t.text)).toEqual(['hel', 'l', '', '']);
    expect(result).toEqual({ finishReason: 'stop', stopString: 'o w', tail: '', fedIds: [1, 5, 6, 4] });
    expect(s.state).toEqual(result.fedIds);
  });

  it('releases held-back text in the tail when generation ends without a match', async () => {
    const { tokens, result } = await collect(new ChainStepper(), [1], {
      maxTokens: 2,
      temperature: 0,
      stopStrings: ['lox'],
    });
    expect(tokens.map((t) => t.text)).toEqual(['he', 'l']); // 'l', then 'lo', could start 'lox'
    expect(result.tail).toBe('lo');
    expect(text(tokens, result)).toBe('hello');
  });

  it('flushes the detokenizer into the tail, where it can still complete a stop string', async () => {
    const r1 = await collect(new ChainStepper(), [1], { maxTokens: 3, temperature: 0 }, laggingDetok);
    expect(r1.tokens.map((t) => t.text)).toEqual(['', 'hel', 'lo']);
    expect(r1.result).toMatchObject({ finishReason: 'length', tail: ' ' });
    const r2 = await collect(
      new ChainStepper(),
      [1],
      { maxTokens: 3, temperature: 0, stopStrings: ['lo '] },
      laggingDetok,
    );
    expect(text(r2.tokens, r2.result)).toBe('hel');
    expect(r2.result).toMatchObject({ finishReason: 'stop', stopString: 'lo ', fedIds: [1, 5, 6] });
  });

  it('aborts between tokens without feeding the token just yielded', async () => {
    const s = new ChainStepper();
    const ac = new AbortController();
    const { tokens, result } = await collect(
      s,
      [1],
      { maxTokens: 100, temperature: 0, signal: ac.signal },
      plainDetok,
      (_, i) => {
        if (i === 1) ac.abort();
      },
    );
    expect(ids(tokens)).toEqual([5, 6]);
    expect(result).toEqual({ finishReason: 'abort', tail: '', fedIds: [1, 5] });
    expect(s.state).toEqual(result.fedIds);
  });

  it('aborts after a feed in flight, keeping what was fed, and before prefill when already aborted', async () => {
    const s = new ChainStepper();
    const ac = new AbortController();
    s.onFeed = (fed) => {
      if (fed[0] === 6) ac.abort();
    };
    const { tokens, result } = await collect(s, [1], { maxTokens: 100, temperature: 0, signal: ac.signal });
    expect(ids(tokens)).toEqual([5, 6]);
    expect(result.fedIds).toEqual([1, 5, 6]);
    expect(s.state).toEqual(result.fedIds);
    const s2 = new ChainStepper();
    const r2 = await collect(s2, [1], { maxTokens: 5, signal: AbortSignal.abort() });
    expect(r2).toEqual({ tokens: [], result: { finishReason: 'abort', tail: '', fedIds: [] } });
    expect(s2.calls).toEqual([]);
  });

  it('reports log-probs of the unmodified distribution, and top alternatives sorted', async () => {
    const { tokens } = await collect(new ChainStepper(), [1], { maxTokens: 4, temperature: 0.2, seed: 3, logprobs: 3 });
    let prev = 1;
    for (const t of tokens) {
      const row = Array.from(chainRow(prev));
      const lse = Math.log(row.reduce((s, x) => s + Math.exp(x), 0)); // temperature 1, float64
      expect(t.logprob).toBeCloseTo(row[t.id]! - lse, 12);
      const expected = row
        .map((x, id) => ({ id, logprob: x - lse }))
        .sort((a, b) => b.logprob - a.logprob || a.id - b.id)
        .slice(0, 3);
      expect(t.topLogprobs!.map((a) => a.id)).toEqual(expected.map((a) => a.id));
      t.topLogprobs!.forEach((a, i) => expect(a.logprob).toBeCloseTo(expected[i]!.logprob, 12));
      prev = t.id;
    }
    const only = await collect(new ChainStepper(), [1], { maxTokens: 2, temperature: 0, logprobs: 0 });
    expect(only.tokens.every((t) => t.logprob !== undefined && t.topLogprobs === undefined)).toBe(true);
    const none = await collect(new ChainStepper(), [1], { maxTokens: 2, temperature: 0 });
    expect(none.tokens.every((t) => t.logprob === undefined && t.topLogprobs === undefined)).toBe(true);
  });

  it('samples reproducibly for a seed, and differently for another seed', async () => {
    const run = async (seed: number): Promise<number[]> => {
      const s = new ChainStepper();
      const { tokens, result } = await collect(s, [1], { maxTokens: 30, temperature: 1.5, seed });
      expect(result.fedIds).toEqual([1, ...ids(tokens).slice(0, -1)]);
      expect(s.state).toEqual(result.fedIds);
      return ids(tokens);
    };
    expect(await run(11)).toEqual(await run(11));
    expect(await run(11)).not.toEqual(await run(12));
  });

  it('yields ids without text when no detokenizer is given', async () => {
    const { tokens } = await collect(new ChainStepper(), [1], { maxTokens: 2, temperature: 0 }, null);
    expect(tokens).toEqual([
      { id: 5, text: '' },
      { id: 6, text: '' },
    ]);
  });

  it('rejects an empty prompt, bad maxTokens, and stop strings without a detokenizer', async () => {
    const s = new ChainStepper();
    await expect(collect(s, [], { maxTokens: 1 })).rejects.toThrow(RangeError);
    await expect(collect(s, [1], { maxTokens: -1 })).rejects.toThrow(RangeError);
    await expect(collect(s, [1], { maxTokens: 1.5 })).rejects.toThrow(RangeError);
    await expect(collect(s, [1], { maxTokens: 1, stopStrings: ['x'] }, null)).rejects.toThrow(TypeError);
    expect(s.calls).toEqual([]);
  });

  it('samples under a constraint, reporting log-probs of the raw logits and leaving the rows unmasked', async () => {
    const rows: Float32Array[] = [];
    const s = new ChainStepper();
    const feed = s.feed.bind(s);
    s.feed = async (fed) => {
      const row = await feed(fed);
      rows.push(row);
      return row;
    };
    const texts = VOCAB.map((t, i) => (i === EOS ? null : t));
    const constraint = new GrammarConstraint(new VocabIndex(texts), lit('world!'));
    const { tokens, result } = await collect(s, [1], {
      maxTokens: 10,
      temperature: 0,
      stopTokenIds: [EOS],
      logprobs: 0,
      constraint,
    });
    // greedy alone reads "hello world!"; the grammar forces "world!" then the stop token
    expect(ids(tokens)).toEqual([7, 8, 9]);
    expect(result).toMatchObject({ finishReason: 'stop', stopTokenId: EOS });
    expect(constraint.complete).toBe(true);
    let prev = 1;
    for (const t of tokens) {
      const row = Array.from(chainRow(prev));
      const lse = Math.log(row.reduce((sum, x) => sum + Math.exp(x), 0));
      expect(t.logprob).toBeCloseTo(row[t.id]! - lse, 12); // the unmasked distribution
      prev = t.id;
    }
    expect(rows.every((row) => row.every((x) => Number.isFinite(x)))).toBe(true);
  });

  it('masks before every sample and accepts every sampled id but the stop id', async () => {
    const calls: string[] = [];
    const onlyTwoThenEos: TokenConstraint = {
      mask(logits, stopIds) {
        calls.push(`mask ${[...stopIds].join(',')}`);
        const n = calls.filter((c) => c.startsWith('accept')).length;
        logits.forEach((_, i) => {
          if (n < 2 ? i !== 2 : !stopIds.has(i)) logits[i] = -Infinity;
        });
      },
      accept(id) {
        calls.push(`accept ${id}`);
      },
    };
    const { tokens, result } = await collect(new ChainStepper(), [1], {
      maxTokens: 10,
      temperature: 1,
      seed: 5,
      stopTokenIds: [EOS],
      constraint: onlyTwoThenEos,
    });
    expect(ids(tokens)).toEqual([2, 2]);
    expect(result.stopTokenId).toBe(EOS);
    expect(calls).toEqual(['mask 0', 'accept 2', 'mask 0', 'accept 2', 'mask 0']);
  });
});
