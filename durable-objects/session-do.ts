// SessionDO: one SQLite-backed Durable Object per conversation. For now it only loads the model and runs a
// forward pass; the serving work adds transcripts, snapshots and generation on top.
//
// The engine is cached at module level: every object of this class in an isolate shares one load (weights
// are copied into ORT's WASM heap once per isolate, platform.md).

import { DurableObject } from 'cloudflare:workers';
// precompiled by the bundler (CompiledWasm rule): workerd refuses to compile WASM bytes at run time
import ortWasm from 'onnxruntime-web/ort-wasm-simd-threaded.wasm';
import { HymbaEngine, type ModelSource } from '../engine/model.js';
import { initOrt } from '../engine/runtime/ort.js';
import type { Env } from '../workers/env.js';
import { r2ModelSource } from './r2-model-source.js';

/** How the model of this isolate was loaded. */
export interface EngineInfo {
  prefix: string;
  fingerprint: string;
  vocab: number;
  stages: number;
  /** ORT was instantiated through the precompiled-module redirect during this load (true on an isolate's first load) */
  redirected: boolean;
  /** wall time of HymbaEngine.load: R2 reads, ORT instantiation, session creation, tokenizer */
  loadMs: number;
  /** the part of loadMs spent waiting for R2 */
  readMs: number;
  /** bytes read from R2 (characters for the text files) */
  bytesRead: number;
  /**
   * Compute time between reads, keyed by the file read just before: after a stage graph it is that graph's
   * session creation (the first one includes ORT's instantiation); after the last file, the tokenizer.
   */
  computeMs: Record<string, number>;
}

export interface LogitsResult {
  /** row-major [rows, vocab], one row per input id */
  logits: Float32Array;
  rows: number;
  vocab: number;
  /** wall time of the forward pass */
  forwardMs: number;
}

interface Loaded {
  engine: HymbaEngine;
  info: EngineInfo;
}

const engines = new Map<string, Promise<Loaded>>();

/** Times a source's reads and the compute between them (HymbaEngine.load reads and works in turn). */
function timedSource(src: ModelSource) {
  let readMs = 0;
  let bytes = 0;
  const computeMs: Record<string, number> = {};
  let last: { name: string; end: number } | null = null;
  const computeUntil = (now: number): void => {
    if (last) computeMs[last.name] = (computeMs[last.name] ?? 0) + (now - last.end);
  };
  const timed =
    <T extends string | Uint8Array>(read: (name: string) => Promise<T | null>) =>
    async (name: string): Promise<T | null> => {
      const t0 = performance.now();
      computeUntil(t0);
      try {
        const out = await read(name);
        if (out !== null) bytes += typeof out === 'string' ? out.length : out.byteLength;
        return out;
      } finally {
        const t1 = performance.now();
        readMs += t1 - t0;
        last = { name, end: t1 };
      }
    };
  return {
    src: { readText: timed((n) => src.readText(n)), readBytes: timed((n) => src.readBytes(n)) } as ModelSource,
    finish: () => {
      computeUntil(performance.now());
      last = null;
      return { readMs, bytesRead: bytes, computeMs };
    },
  };
}

async function loadEngine(env: Env, prefix: string): Promise<Loaded> {
  initOrt({ wasmModule: ortWasm });
  const timed = timedSource(r2ModelSource(env.MODEL_STORE, prefix));
  const t0 = performance.now();
  const engine = await HymbaEngine.load(timed.src);
  const loadMs = performance.now() - t0;
  const info: EngineInfo = {
    prefix,
    fingerprint: engine.fingerprint,
    vocab: engine.model.dims.V,
    stages: engine.runner.stages.length,
    redirected: engine.runner.stages.some((s) => s.graph.redirected),
    loadMs,
    ...timed.finish(),
  };
  return { engine, info };
}

/** The isolate's engine for the model under `prefix`, loaded on first use; a failed load is retried next time. */
function engineFor(env: Env, prefix: string): Promise<Loaded> {
  let loading = engines.get(prefix);
  if (!loading) {
    const p = loadEngine(env, prefix);
    engines.set(prefix, p);
    p.catch(() => {
      if (engines.get(prefix) === p) engines.delete(prefix);
    });
    loading = p;
  }
  return loading;
}

export class SessionDO extends DurableObject<Env> {
  private get prefix(): string {
    return this.env.MODEL_PREFIX;
  }

  /** Load the model (once per isolate) and describe that load. */
  async model(): Promise<EngineInfo> {
    return (await engineFor(this.env, this.prefix)).info;
  }

  /** Logits of every position of `ids`, run from a fresh session state (meta tokens already processed). */
  async logits(ids: number[]): Promise<LogitsResult> {
    const { engine } = await engineFor(this.env, this.prefix);
    const t0 = performance.now();
    const out = await engine.runner.forward(engine.newState(), ids, 'all');
    const forwardMs = performance.now() - t0;
    return { logits: out.logits, rows: out.rows, vocab: engine.model.dims.V, forwardMs };
  }
}
