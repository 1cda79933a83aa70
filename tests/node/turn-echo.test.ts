// Completions with `echo` and `logprobs` (lm-evaluation-harness's loglikelihood request: token-id prompt,
// echo: true, logprobs: 1, max_tokens 0 or 1): the prompt tokens' log-probs equal the engine's own.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TurnEvent } from '../../engine/serve/protocol.js';
import { runTurn } from '../../engine/serve/turn.js';
import { logSoftmax } from '../../engine/generate/sampling.js';
import { collectCompletion } from '../../workers/api/completion-format.js';
import { makeConvertedModel, tokenSequence, type TestModel } from '../helpers/tiny-model.js';

let tiny: TestModel;
beforeAll(async () => {
  tiny = await makeConvertedModel({ preset: 'tiny', seed: 3 });
});
afterAll(() => tiny?.cleanup());

async function echoTurn(ids: number[], maxTokens: number): Promise<TurnEvent[]> {
  const events: TurnEvent[] = [];
  const turn = runTurn(
    tiny.engine,
    tiny.engine.localPipeline(),
    null,
    { prompt: { kind: 'ids', ids }, maxTokens, temperature: 0, stop: [], logprobs: 1, echo: true },
    { newMessages: [], record: false },
  );
  for await (const e of turn) events.push(e);
  return events;
}

describe('echo with logprobs', () => {
  it('returns every prompt token log-prob, equal to a one-pass forward within 1e-4', async () => {
    const { V } = tiny.model.dims;
    const ids = tokenSequence(40, V, 8);
    const events = await echoTurn(ids, 0);
    const start = events.find((e) => e.type === 'start');
    if (start?.type !== 'start') throw new Error('no start event');
    const lps = start.promptLogprobs!;
    expect(lps).toHaveLength(ids.length);
    expect(lps[0]).toBeNull();
    const { logits } = await tiny.engine.runner.forward(tiny.engine.newState(), ids, 'all');
    for (let i = 1; i < ids.length; i++) {
      const want = logSoftmax(logits.subarray((i - 1) * V, i * V));
      expect(lps[i]!.id).toBe(ids[i]);
      expect(Math.abs(lps[i]!.logprob - want[ids[i]!]!)).toBeLessThanOrEqual(1e-4);
      let best = 0;
      for (let v = 1; v < V; v++) if (want[v]! > want[best]!) best = v;
      expect(lps[i]!.top![0]!.id).toBe(best);
    }
    expect(events.filter((e) => e.type === 'token')).toHaveLength(0);
    expect(events[events.length - 1]).toMatchObject({ type: 'done', promptTokens: ids.length, completionTokens: 0 });
  });

  it('formats as lm-evaluation-harness reads it: token_logprobs with a leading null, then the completion', async () => {
    const ids = tokenSequence(12, tiny.model.dims.V, 9);
    async function* replay(): AsyncGenerator<TurnEvent> {
      yield* await echoTurn(ids, 1);
    }
    const out = await collectCompletion(replay(), { model: 'hymba', logprobs: true, echo: true });
    const lp = out.choices[0]!.logprobs!;
    expect(lp.token_logprobs).toHaveLength(ids.length + 1);
    expect(lp.token_logprobs[0]).toBeNull();
    expect(lp.token_logprobs.slice(1).every((x) => typeof x === 'number' && x <= 0)).toBe(true);
    expect(lp.top_logprobs).toHaveLength(ids.length + 1);
  });
});
