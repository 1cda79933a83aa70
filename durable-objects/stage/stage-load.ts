// A stage's graph and prefix state, loaded from the model store once per isolate (every StageDO of the
// isolate shares the load), with how long the load took.

import ortWasm from 'onnxruntime-web/ort-wasm-simd-threaded.wasm';
import { loadStage, type LoadedStage } from '../../engine/run/loaded-model.js';
import { initOrt } from '../../engine/run/ort.js';
import type { Env } from '../env.js';
import { IsolateCache } from '../isolate-cache.js';
import { r2ModelSource } from '../model-source/r2.js';
import { timedSource, type LoadTiming } from '../model-source/timed.js';

/** Which stage of which model a call is for (the object's name encodes the same). */
export interface StageAddress {
  prefix: string;
  stage: number;
}

export interface StageLoadInfo extends LoadTiming {
  stage: number;
  first: number;
  last: number;
  /** ORT was instantiated through the precompiled-module redirect during this load */
  redirected: boolean;
  loadMs: number;
}

export interface Loaded {
  stage: LoadedStage;
  info: StageLoadInfo;
}

async function load(env: Env, addr: StageAddress): Promise<Loaded> {
  initOrt({ wasmModule: ortWasm }); // workerd compiles no WASM at run time: ORT gets the precompiled module
  const timed = timedSource(r2ModelSource(env.MODEL_STORE, addr.prefix));
  const t0 = performance.now();
  const stage = await loadStage(timed.src, addr.stage);
  const { spec, graph } = stage.runner.stage;
  const info: StageLoadInfo = {
    stage: addr.stage,
    first: spec.first,
    last: spec.last,
    redirected: graph.redirected,
    loadMs: performance.now() - t0,
    ...timed.finish(),
  };
  return { stage, info };
}

const stages = new IsolateCache<Loaded>();

/** The isolate's copy of a stage, loaded on first use. */
export const stageFor = (env: Env, addr: StageAddress): Promise<Loaded> =>
  stages.get(`${addr.prefix}#${addr.stage}`, () => load(env, addr));
