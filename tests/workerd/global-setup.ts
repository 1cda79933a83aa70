// Runs in Node before the workerd tests: writes the tiny test model, converts it, and computes the logits
// that Node gets from it, so the workerd tests can check the same model gives the same numbers there.

import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import {
  HYMBA_INSTRUCT_CHAT_TEMPLATE,
  renderChat,
  templateEmitsBos,
  type ChatMessage,
} from '../../engine/text/chat-template.js';
import { generate } from '../../engine/generate/generate.js';
import { MANIFEST_FILE, parseManifest } from '../../engine/convert/manifest.js';
import { HymbaEngine } from '../../engine/run/loaded-model.js';
import { convertDir, dirModelSource } from '../../infra/model-dir.js';
import { initNodeOrt } from '../../infra/node-ort.js';
import { makeTestModel } from '../../infra/test-model/make-test-model.js';
import { TINY_SLICED_PLAN, tokenSequence } from '../helpers/tiny-model.js';
import {
  COMPLETION_PROMPT,
  DETOUR,
  DETOUR_MAX_TOKENS,
  MAX_TOKENS,
  SYSTEM,
  USER_TURNS,
  type ApiExpectations,
  type ExpectedTurn,
} from './scenario.js';

/** Parent of each run's own scratch directory (runs side by side must not share files). */
const CACHE = join(process.cwd(), 'node_modules', '.cache');
const SEED = 7;
/** The tiny model as the Worker serves it: split every way a stage can split a model (tests/helpers). */
const STAGES = TINY_SLICED_PLAN;
/** runs of 16 tokens, so the scenario prompts go through the stages in several pipelined chunks */
const STAGED_RUN_TOKENS = 16;
const IDS = 20;

declare module 'vitest' {
  export interface ProvidedContext {
    /** the converted tiny model: file name -> bytes */
    tinyModelFiles: Record<string, Uint8Array>;
    /** the input ids of the logits check */
    tinyIds: number[];
    /** Node's logits for tinyIds, row-major [ids, V] */
    tinyLogits: Float32Array;
    /** fingerprint of the staged conversion the Worker serves */
    tinyFingerprint: string;
    /** how many stages it has */
    tinyStages: number;
    /** what the engine gives for the API tests' conversations in one from-scratch pass (scenario.ts) */
    apiExpectations: ApiExpectations;
  }
}

export default async function setup(project: TestProject): Promise<void> {
  const t0 = performance.now();
  await mkdir(CACHE, { recursive: true });
  const ROOT = await mkdtemp(join(CACHE, 'hymba-workerd-test-'));
  const hfDir = join(ROOT, 'hf');
  const convertedDir = join(ROOT, 'converted');
  const stagedDir = join(ROOT, 'staged');
  await makeTestModel(hfDir, { preset: 'tiny', seed: SEED });
  // the expectations come from the engine alone on a one-stage conversion; the Worker serves the same
  // checkpoint split into stages, so every API test also checks the distributed path against the engine
  for (const [dir, stages] of [
    [convertedDir, undefined],
    [stagedDir, STAGES],
  ] as const) {
    await mkdir(dir, { recursive: true });
    const opts = stages ? { stages, maxRunTokens: STAGED_RUN_TOKENS } : {};
    await convertDir(hfDir, { dtype: 'f32', ...opts }, (name, bytes) => writeFile(join(dir, name), bytes));
  }

  const files: Record<string, Uint8Array> = {};
  for (const name of await readdir(stagedDir)) files[name] = new Uint8Array(await readFile(join(stagedDir, name)));
  const staged = parseManifest(new TextDecoder().decode(files[MANIFEST_FILE]!));

  initNodeOrt();
  const engine = await HymbaEngine.load(dirModelSource(convertedDir));
  try {
    const ids = tokenSequence(IDS, engine.model.dims.V, 5);
    const { logits } = await engine.runner.forward(engine.newState(), ids, 'all');
    project.provide('tinyModelFiles', files);
    project.provide('tinyIds', ids);
    project.provide('tinyLogits', logits);
    project.provide('tinyFingerprint', staged.fingerprint);
    project.provide('tinyStages', staged.stages.length);
    const t1 = performance.now();
    const api = await apiExpectations(engine);
    project.provide('apiExpectations', api);
    console.log(
      `[workerd setup] API expectations in ${(performance.now() - t1).toFixed(0)} ms: conversation ` +
        api.conversation.map((t) => `${t.promptIds.length}+${t.tokenIds.length} ${JSON.stringify(t.text)}`).join(', ') +
        `; completion ${JSON.stringify(api.completion.text)}; detour ${api.detour.tokenIds.length} tokens`,
    );
  } finally {
    await engine.release();
    await rm(ROOT, { recursive: true, force: true }); // everything needed was read into memory
  }
  console.log(
    `[workerd setup] tiny model written, converted and run in Node in ${(performance.now() - t0).toFixed(0)} ms`,
  );
}

/** Greedy generation from a fresh state over the whole prompt: no snapshots, no session machinery. */
async function greedy(engine: HymbaEngine, promptIds: number[], maxTokens: number) {
  const tok = engine.tokenizer!;
  const gen = generate(
    engine.runner.stepper(engine.newState()),
    promptIds,
    { maxTokens, temperature: 0, stopTokenIds: engine.manifest.generation.eosTokenIds },
    () => tok.incrementalDecoder({ skipSpecial: true }),
  );
  const tokenIds: number[] = [];
  let text = '';
  let r = await gen.next();
  for (; !r.done; r = await gen.next()) {
    tokenIds.push(r.value.id);
    text += r.value.text;
  }
  if (r.value.finishReason === 'abort') throw new Error('generation was aborted');
  return { tokenIds, text: text + r.value.tail, finishReason: r.value.finishReason };
}

/** The conversation rendered with the model's chat template and tokenized, as a client of any server would. */
function conversationIds(engine: HymbaEngine, messages: ChatMessage[], addGenerationPrompt: boolean): number[] {
  const tok = engine.tokenizer!;
  const text = renderChat(tok.chatTemplate ?? HYMBA_INSTRUCT_CHAT_TEMPLATE, messages, {
    addGenerationPrompt,
    bosToken: tok.bosToken,
    eosToken: tok.eosToken,
  });
  return tok.encode(text, { addBos: tok.addBosToken && !templateEmitsBos(text, tok.bosToken) });
}

const isPrefix = (prefix: number[], ids: number[]): boolean =>
  prefix.length < ids.length && prefix.every((id, i) => ids[i] === id);

async function apiExpectations(engine: HymbaEngine): Promise<ApiExpectations> {
  if (!engine.tokenizer) throw new Error('the tiny test model has no tokenizer');
  const messages: ChatMessage[] = [{ role: 'system', content: SYSTEM }];
  const conversation: ExpectedTurn[] = [];
  for (const user of USER_TURNS) {
    const before = conversation.length === 0 ? [] : conversationIds(engine, messages, false);
    messages.push({ role: 'user', content: user });
    const promptIds = conversationIds(engine, messages, true);
    // the cached-token expectation assumes the earlier conversation tokenizes as a prefix of the new prompt
    if (before.length > 0 && !isPrefix(before, promptIds))
      throw new Error(`scenario: the conversation before "${user}" is not a token prefix of its prompt`);
    const out = await greedy(engine, promptIds, MAX_TOKENS);
    messages.push({ role: 'assistant', content: out.text });
    const after = conversationIds(engine, messages, false);
    conversation.push({
      promptIds,
      ...out,
      previousConversationTokens: before.length,
      conversationTokens: after.length,
    });
  }

  const detourIds = conversationIds(
    engine,
    [
      { role: 'system', content: SYSTEM },
      { role: 'user', content: USER_TURNS[0] },
      { role: 'assistant', content: conversation[0]!.text },
      { role: 'user', content: DETOUR },
    ],
    true,
  );
  const detour = { promptIds: detourIds, ...(await greedy(engine, detourIds, DETOUR_MAX_TOKENS)) };
  // the disconnect and concurrency tests need a turn that is still generating when they act
  if (detour.tokenIds.length < DETOUR_MAX_TOKENS)
    throw new Error(`scenario: the detour reply stops after ${detour.tokenIds.length} tokens; choose another DETOUR`);

  const completionIds = engine.tokenizer.encode(COMPLETION_PROMPT, { addBos: true });
  const completion = { promptIds: completionIds, ...(await greedy(engine, completionIds, MAX_TOKENS)) };
  const { dims } = engine.model;
  return {
    conversation,
    completion,
    detour,
    contextTokens: dims.maxPositions - dims.M,
  };
}
