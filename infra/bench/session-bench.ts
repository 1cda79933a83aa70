// Time to first token of turn N of a conversation (~200 tokens per turn): resuming from the stored state
// (deserialize the snapshot, prefill only the new turn) versus re-processing the whole conversation, and
// the snapshot bytes after each turn. Engine level in Node (no HTTP or Durable Object RPC in the numbers).

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HymbaEngine } from '../../engine/run/loaded-model.js';
import { sample, createRng } from '../../engine/generate/sampling.js';
import { deserializeState, serializeState } from '../../engine/state/codec.js';
import { convertDir, dirModelSource } from '../model-dir.js';
import { makeTestModel } from '../test-model/make-test-model.js';
import type { PresetName } from '../test-model/presets.js';
import { fmt, time, type Timing } from './stats.js';

const TURN_TOKENS = 200;

interface TurnRow {
  turn: number;
  contextTokens: number;
  resumed: Timing;
  reprocessed: Timing;
  snapshotBytes: number;
}

/** A deterministic stand-in conversation: ~200 token ids per turn inside the vocabulary. */
function turnIds(turn: number, V: number): number[] {
  return Array.from({ length: TURN_TOKENS }, (_, i) => 3 + ((turn * 7919 + i * 104729) % (V - 3)));
}

async function ttftTable(engine: HymbaEngine, turns: number[], runs: number): Promise<TurnRow[]> {
  const { V } = engine.model.dims;
  const fp = engine.fingerprint;
  const greedy = (logits: Float32Array): number => sample(logits, { temperature: 0 }, createRng(0));
  const rows: TurnRow[] = [];
  const conversation: number[] = [1];
  let snapshot = serializeState(engine.model.dims, engine.newState(), fp);
  let snapshotTokens = 0;
  for (let turn = 1; turn <= Math.max(...turns); turn++) {
    const newIds = turnIds(turn, V);
    const before = conversation.length;
    conversation.push(...newIds);
    const fresh = conversation.slice(snapshotTokens);
    if (turns.includes(turn)) {
      const resumed = await time(
        async () => {
          const state = deserializeState(engine.model.dims, snapshot, fp);
          greedy((await engine.runner.forward(state, fresh, 'last')).logits);
        },
        runs,
        0,
      );
      const reprocessed = await time(
        async () => {
          greedy((await engine.runner.forward(engine.newState(), conversation, 'last')).logits);
        },
        runs,
        0,
      );
      rows.push({ turn, contextTokens: conversation.length, resumed, reprocessed, snapshotBytes: 0 });
    }
    // advance the stored state by this turn (its reply stands in as part of the next turn's tokens)
    const state = deserializeState(engine.model.dims, snapshot, fp);
    await engine.runner.forward(state, conversation.slice(snapshotTokens), 'none');
    snapshot = serializeState(engine.model.dims, state, fp);
    snapshotTokens = conversation.length;
    const row = rows.find((r) => r.turn === turn);
    if (row) row.snapshotBytes = snapshot.length;
    void before;
  }
  return rows;
}

async function withModel<T>(
  preset: PresetName,
  layers: number | undefined,
  fn: (e: HymbaEngine) => Promise<T>,
): Promise<T> {
  const root = await mkdtemp(join(tmpdir(), 'hymba-session-bench-'));
  try {
    await makeTestModel(join(root, 'hf'), { preset, seed: 1, tokenizer: false, ...(layers ? { layers } : {}) });
    await convertDir(join(root, 'hf'), { dtype: 'f32' }, (n, b) => writeFile(join(root, n), b));
    const engine = await HymbaEngine.load(dirModelSource(root));
    try {
      return await fn(engine);
    } finally {
      await engine.release();
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

function print(title: string, rows: TurnRow[]): void {
  console.log(`\n${title}: time to first token of turn N (~${TURN_TOKENS} new tokens per turn), ms median (min-max)`);
  console.log('turn  context  resumed from snapshot     re-processing everything   speed-up  snapshot');
  for (const r of rows)
    console.log(
      `${String(r.turn).padStart(4)}  ${String(r.contextTokens).padStart(7)}  ${fmt(r.resumed, 0).padStart(22)}  ${fmt(r.reprocessed, 0).padStart(25)}  ${(r.reprocessed.median / r.resumed.median).toFixed(1).padStart(7)}x  ${(r.snapshotBytes / 1e6).toFixed(2)} MB`,
    );
}

export async function runSessionBench(results: Record<string, unknown>): Promise<void> {
  const tiny = await withModel('tiny', undefined, (e) => ttftTable(e, [1, 2, 3, 4, 5, 6, 7, 8], 5));
  print('default model (tiny preset, f32)', tiny);
  results.ttftTiny = tiny;
  const big = await withModel('hymba-1.5b', 2, (e) => ttftTable(e, [1, 2, 4, 8], 3));
  print('Hymba-1.5B shapes cut to 2 layers (f32; 3 runs each)', big);
  results.ttftHymba15Layers2 = big;
}
