// Log-probs as a turn reports them: each token with its text, and the top alternatives when asked for; for
// generated tokens (`logprobs`) and for the prompt's own tokens (`echo` with `logprobs`).

import type { GeneratedToken } from '../generate/generate.js';
import { logSoftmax, topLogprobs } from '../generate/sampling.js';
import type { ModelFront } from '../run/loaded-model.js';
import type { TokenLogprob } from './protocol.js';

function describe(engine: ModelFront, id: number, logprob: number): TokenLogprob {
  const text = engine.tokenizer?.decode([id]) ?? '';
  return { id, text, logprob };
}

/** A generated token's log-prob entry, or undefined when none were asked for. */
export function tokenLogprob(engine: ModelFront, t: GeneratedToken): TokenLogprob | undefined {
  if (t.logprob === undefined) return undefined;
  const out = describe(engine, t.id, t.logprob);
  if (t.topLogprobs) out.top = t.topLogprobs.map((a) => describe(engine, a.id, a.logprob));
  return out;
}

/**
 * Log-probs of prompt tokens 1..n-1 from the logits rows of tokens 0..n-2 ([n-1, V]); the first token has
 * none (null), as the OpenAI Completions API reports with `echo`.
 */
export function scorePrompt(
  engine: ModelFront,
  ids: number[],
  logits: Float32Array,
  top: number,
): (TokenLogprob | null)[] {
  const V = engine.model.dims.V;
  const out: (TokenLogprob | null)[] = [null];
  for (let i = 0; i + 1 < ids.length; i++) {
    const lp = logSoftmax(logits.subarray(i * V, (i + 1) * V)); // [V]
    const entry = describe(engine, ids[i + 1]!, lp[ids[i + 1]!]!);
    if (top > 0) entry.top = topLogprobs(lp, top).map((a) => describe(engine, a.id, a.logprob));
    out.push(entry);
  }
  return out;
}
