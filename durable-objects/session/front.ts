// The isolate's model front (manifest, config, tokenizer): loaded from the model store once per isolate and
// shared by every SessionDO there. Also what the front alone answers: health and /tokenize.

import { loadFront, type ModelFront } from '../../engine/run/loaded-model.js';
import { asResult, type Failed } from '../../engine/serve/errors.js';
import { detokenizeIds, tokenizeInput, type TokenizeInput } from '../../engine/serve/prepare.js';
import type { Env } from '../env.js';
import { IsolateCache } from '../isolate-cache.js';
import { r2ModelSource } from '../model-source/r2.js';
import { settingsOf } from '../settings.js';

const fronts = new IsolateCache<ModelFront>();

/** The isolate's model front for MODEL_PREFIX, loaded on first use. */
export const frontFor = (env: Env): Promise<ModelFront> => {
  const prefix = settingsOf(env).modelPrefix;
  return fronts.get(prefix, () => loadFront(r2ModelSource(env.MODEL_STORE, prefix)));
};

export interface FrontStatus {
  ready: boolean;
  fingerprint?: string;
  error?: string;
}

/** Whether the front is loaded; starts loading it if not (health checks wait for it only briefly). */
export async function frontStatus(env: Env): Promise<FrontStatus> {
  const waitMs = 50;
  try {
    return await Promise.race([
      frontFor(env).then((f) => ({ ready: true, fingerprint: f.fingerprint })),
      new Promise<FrontStatus>((ok) => setTimeout(() => ok({ ready: false }), waitMs)),
    ]);
  } catch (e) {
    return { ready: false, error: e instanceof Error ? e.message : String(e) };
  }
}

/** /tokenize: the ids a prompt becomes (as a turn tokenizes it) and the context length. */
export async function tokenize(
  env: Env,
  input: TokenizeInput,
): Promise<{ tokens: number[]; maxModelLen: number } | Failed> {
  const front = await frontFor(env);
  const { dims } = front.model;
  return asResult(() => ({ tokens: tokenizeInput(front, input), maxModelLen: dims.maxPositions - dims.M }));
}

/** /detokenize: the text of token ids. */
export async function detokenize(env: Env, ids: number[]): Promise<{ prompt: string } | Failed> {
  const front = await frontFor(env);
  return asResult(() => ({ prompt: detokenizeIds(front, ids) }));
}
