// The generation loop: prefill, then sample -> check stops -> yield -> feed, one token at a time. It knows
// nothing of tensors (the TokenStepper hides the model) or of OpenAI JSON (callers shape the yielded tokens).

import { createRng, logSoftmax, sample, tokenLogprob, topLogprobs, type Rng, type SamplingParams } from './sampling.js';
import { StopMatcher } from './stop.js';
import type { TokenConstraint } from '../constrain/token-mask.js';

/** The model as the loop sees it: a stateful stepper that continues from whatever it was last fed. */
export interface TokenStepper {
  /** Feed T >= 1 token ids continuing the current state; resolves to the logits row of the last one (length V). */
  feed(ids: number[]): Promise<Float32Array>;
}

/** Turns ids into text as they arrive, holding back bytes that do not yet form whole characters. */
export interface IncrementalDetokenizer {
  /** Text that the id completes (may be '' while a multi-byte character is incomplete). */
  push(id: number): string;
  /** Whatever is still pending at the end. */
  flush(): string;
}

export interface GenerateOptions {
  /** Tokens to generate at most; 0 = prefill only. */
  maxTokens: number;
  /** Default 1; 0 = greedy. */
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  /** Same seed, same logits -> same tokens. Omitted: a random seed. */
  seed?: number;
  /** Sampling one of these ends generation with 'stop'; the id is neither yielded nor fed. */
  stopTokenIds?: number[];
  /** Matching one of these ends generation with 'stop'; the text is cut before it. Needs a detokenizer. */
  stopStrings?: string[];
  /** Alternatives to report per token: undefined = no log-probs, 0 = only the chosen token's, k = also the top k. */
  logprobs?: number;
  /**
   * Restricts which ids may be sampled (e.g. to valid JSON). Masks a copy of each logits row, so log-probs
   * still come from the model's own distribution; told of every sampled id that is not a stop id.
   */
  constraint?: TokenConstraint;
  signal?: AbortSignal;
}

export interface GeneratedToken {
  id: number;
  /** Text newly safe to emit with this token; '' while held back as a possible stop-string prefix. */
  text: string;
  /** From the unmodified distribution (temperature 1, no truncation), as OpenAI reports. */
  logprob?: number;
  topLogprobs?: { id: number; logprob: number }[];
}

export type FinishReason = 'stop' | 'length' | 'abort';

export interface GenerateResult {
  finishReason: FinishReason;
  /** The stop string that ended generation. */
  stopString?: string;
  /** The stop token id that ended generation (sampled, not yielded, not fed). */
  stopTokenId?: number;
  /**
   * Text not carried by any yielded token: stop-string holdback and the detokenizer's remainder, released at
   * the end. Append it to the output; '' when a stop string matched (what follows the stop is dropped).
   */
  tail: string;
  /**
   * Every id fed to the stepper in this call, in order: the prompt, then every yielded token but the last.
   * The last sampled token is never fed (that would be a model step whose logits nobody reads), so the
   * stepper's state ends one token short of the output; persist exactly these ids with that state.
   */
  fedIds: number[];
}

/** Per-request state of the loop, so each step stays a small function. */
interface Run {
  readonly stepper: TokenStepper;
  readonly opts: GenerateOptions;
  readonly params: SamplingParams;
  readonly rng: Rng;
  readonly stopIds: ReadonlySet<number>;
  readonly matcher: StopMatcher;
  readonly detok: IncrementalDetokenizer | undefined;
  readonly fedIds: number[];
}

/**
 * Generate up to `opts.maxTokens` tokens after `promptIds` (the ids new to the stepper's state; at least one,
 * since the loop needs a logits row to start from). Yields each token as sampled; the return value says why
 * it ended, carries the tail text, and lists the ids the stepper's state now contains from this call.
 */
export async function* generate(
  stepper: TokenStepper,
  promptIds: number[],
  opts: GenerateOptions,
  detok?: () => IncrementalDetokenizer,
): AsyncGenerator<GeneratedToken, GenerateResult> {
  const run = startRun(stepper, promptIds, opts, detok);
  if (opts.signal?.aborted) return finish(run, 'abort');
  let logits = await feed(run, promptIds);
  for (let generated = 0; ;) {
    if (generated === opts.maxTokens) return finish(run, 'length');
    if (opts.signal?.aborted) return finish(run, 'abort');
    const id = sample(constrained(run, logits), run.params, run.rng);
    if (run.stopIds.has(id)) return { ...finish(run, 'stop'), stopTokenId: id };
    opts.constraint?.accept(id);
    const token = describe(run, logits, id);
    const step = run.matcher.push(token.text);
    generated++;
    yield { ...token, text: step.text };
    if (step.stopped) return { finishReason: 'stop', stopString: step.stop, tail: '', fedIds: run.fedIds };
    // Feed only when another token will be sampled from the result: the final token is never fed.
    if (generated === opts.maxTokens) return finish(run, 'length');
    if (opts.signal?.aborted) return finish(run, 'abort');
    logits = await feed(run, [id]);
  }
}

function startRun(
  stepper: TokenStepper,
  promptIds: number[],
  opts: GenerateOptions,
  detok: (() => IncrementalDetokenizer) | undefined,
): Run {
  if (promptIds.length === 0) throw new RangeError('generate needs at least one prompt id to get logits from');
  if (!(Number.isInteger(opts.maxTokens) && opts.maxTokens >= 0)) throw new RangeError('maxTokens must be >= 0');
  if (opts.logprobs !== undefined && !(Number.isInteger(opts.logprobs) && opts.logprobs >= 0)) {
    throw new RangeError('logprobs must be an integer >= 0');
  }
  const stopStrings = opts.stopStrings ?? [];
  if (stopStrings.length > 0 && !detok) throw new TypeError('stop strings need a detokenizer');
  const params: SamplingParams = { temperature: opts.temperature ?? 1 };
  if (opts.topK !== undefined) params.topK = opts.topK;
  if (opts.topP !== undefined) params.topP = opts.topP;
  if (opts.minP !== undefined) params.minP = opts.minP;
  return {
    stepper,
    opts,
    params,
    rng: createRng(opts.seed),
    stopIds: new Set(opts.stopTokenIds ?? []),
    matcher: new StopMatcher(stopStrings),
    detok: detok?.(),
    fedIds: [],
  };
}

async function feed(run: Run, ids: number[]): Promise<Float32Array> {
  const logits = await run.stepper.feed(ids);
  // Recorded only once the stepper accepted them: a rejected feed leaves the caller's state unknown anyway.
  run.fedIds.push(...ids);
  return logits;
}

/** The logits to sample from: a masked copy under a constraint (the stepper's row stays as the model gave it). */
function constrained(run: Run, logits: Float32Array): Float32Array {
  const c = run.opts.constraint;
  if (!c) return logits;
  const masked = logits.slice();
  c.mask(masked, run.stopIds);
  return masked;
}

/** The token's raw text and, when asked for, its log-probs from the logits it was sampled from. */
function describe(run: Run, logits: Float32Array, id: number): GeneratedToken {
  const token: GeneratedToken = { id, text: run.detok?.push(id) ?? '' };
  const k = run.opts.logprobs;
  if (k === undefined) return token;
  const lp = logSoftmax(logits);
  token.logprob = tokenLogprob(lp, id);
  if (k > 0) token.topLogprobs = topLogprobs(lp, k);
  return token;
}

/** Release held text; the detokenizer's remainder can still complete a stop string, which then wins. */
function finish(run: Run, reason: FinishReason): GenerateResult {
  const step = run.matcher.push(run.detok?.flush() ?? '');
  if (step.stopped) return { finishReason: 'stop', stopString: step.stop, tail: step.text, fedIds: run.fedIds };
  return { finishReason: reason, tail: step.text + run.matcher.flush(), fedIds: run.fedIds };
}
