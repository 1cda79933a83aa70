// A worker thread of the stages benchmark standing in for one StageDO: it loads some consecutive stages of a
// converted model (its own ORT instance and WASM heap, like an isolate), keeps one session's state for them,
// and answers run requests with hidden states (or logits) the way StageDO.run does. It also echoes messages,
// to time a round trip between threads. Started by stage-thread.ts through a tsx bootstrap.
//
// messages in:  {id, type: 'init', dir, stages} | {id, type: 'reset'} | {id, type: 'run', input, logitsFrom}
//               | {id, type: 'echo', data}
// messages out: {id, ok: true, ...result} | {id, ok: false, error}

import { parentPort } from 'node:worker_threads';
import { loadStage, type LoadedStage } from '../../../engine/run/loaded-model.js';
import type { StageInput } from '../../../engine/run/stage-runner.js';
import { cloneState, type HymbaState } from '../../../engine/state/state.js';
import { dirModelSource } from '../../model-dir.js';
import { initNodeOrt } from '../../node-ort.js';

export type WorkerRequest =
  | { id: number; type: 'init'; dir: string; stages: number[] }
  | { id: number; type: 'reset' }
  | { id: number; type: 'run'; input: StageInput; logitsFrom: number }
  | { id: number; type: 'echo'; data: unknown };

/** A request without its id (the client adds it). */
export type WorkerMessage = {
  [K in WorkerRequest['type']]: Omit<Extract<WorkerRequest, { type: K }>, 'id'>;
}[WorkerRequest['type']];

export interface RunReply {
  hidden: Float32Array | null;
  logits: Float32Array | null;
  /** ms spent in StageRunner.run for this request (all of this worker's stages) */
  computeMs: number;
}

const port = parentPort;
if (!port) throw new Error('stage-worker.ts runs as a worker thread');

let loaded: LoadedStage[] = [];
let states: HymbaState[] = [];

async function handle(msg: WorkerRequest): Promise<unknown> {
  switch (msg.type) {
    case 'init': {
      initNodeOrt();
      const t = performance.now();
      const src = dirModelSource(msg.dir);
      loaded = [];
      for (const k of msg.stages) loaded.push(await loadStage(src, k));
      states = loaded.map((s) => cloneState(s.prefix));
      return { loadMs: performance.now() - t };
    }
    case 'reset':
      states = loaded.map((s) => cloneState(s.prefix));
      return {};
    case 'run': {
      const t = performance.now();
      let input = msg.input;
      let out: RunReply = { hidden: null, logits: null, computeMs: 0 };
      for (const [j, s] of loaded.entries()) {
        const o = await s.runner.run(states[j]!, input, msg.logitsFrom);
        out = { hidden: o.hidden, logits: o.logits, computeMs: 0 };
        if (o.hidden) input = { hidden: o.hidden };
      }
      out.computeMs = performance.now() - t;
      return out;
    }
    case 'echo':
      return { data: msg.data };
  }
}

port.on('message', (msg: WorkerRequest) => {
  handle(msg).then(
    (result) => port.postMessage({ id: msg.id, ok: true, ...(result as object) }),
    (e: unknown) => port.postMessage({ id: msg.id, ok: false, error: e instanceof Error ? e.stack : String(e) }),
  );
});
port.postMessage({ id: 0, ok: true, ready: true });
