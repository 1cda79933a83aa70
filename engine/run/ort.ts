// The one module that imports ONNX Runtime Web. It works in Node, browsers and workerd (docs/platform.md):
// the host hands over the WASM binary (bytes) or a precompiled WebAssembly.Module; nothing is fetched.

import * as ort from 'onnxruntime-web/wasm';

export type OrtTensor = ort.Tensor;
export { ort };

export interface OrtInit {
  /** WASM bytes (Node, browsers) */
  wasmBinary?: ArrayBuffer | Uint8Array;
  /** a precompiled module (workerd, where compiling from bytes is disallowed) */
  wasmModule?: WebAssembly.Module;
  numThreads?: number;
  /**
   * Execution providers for every session created after this call, in order of preference. Default
   * ['wasm'] (Node, workerd). A browser page built with the WebGPU-capable ORT (workers/playground aliases
   * `onnxruntime-web/wasm` to `onnxruntime-web/webgpu`) passes ['webgpu'] when it has an adapter.
   */
  executionProviders?: readonly ('wasm' | 'webgpu')[];
  /** ORT's log severity for sessions (0 verbose .. 4 fatal); unset: ORT's default (2, warnings) */
  logSeverityLevel?: 0 | 1 | 2 | 3 | 4;
}

let initialised: Promise<void> | null = null;
let pendingModule: WebAssembly.Module | null = null;
let executionProviders: ('wasm' | 'webgpu')[] = ['wasm'];
let logSeverityLevel: 0 | 1 | 2 | 3 | 4 | undefined;

/** The execution providers sessions are created with (see OrtInit.executionProviders). */
export function ortExecutionProviders(): readonly string[] {
  return executionProviders;
}

/** Configure ORT once per isolate. Later calls are no-ops, so any caller may call it first. */
export function initOrt(init: OrtInit): void {
  if (initialised) return;
  if (init.executionProviders && init.executionProviders.length > 0) executionProviders = [...init.executionProviders];
  logSeverityLevel = init.logSeverityLevel;
  ort.env.wasm.numThreads = init.numThreads ?? 1;
  ort.env.wasm.proxy = false;
  if (init.wasmModule) {
    // A placeholder selects the embedded glue and skips any fetch; instantiate() is redirected below.
    ort.env.wasm.wasmBinary = new Uint8Array(8);
    pendingModule = init.wasmModule;
  } else if (init.wasmBinary) {
    ort.env.wasm.wasmBinary = init.wasmBinary instanceof Uint8Array ? init.wasmBinary : new Uint8Array(init.wasmBinary);
  } else {
    throw new Error('initOrt needs wasmBinary or wasmModule');
  }
  initialised = Promise.resolve();
}

/**
 * While ORT instantiates its WASM, turn a call with bytes into an instantiation of the precompiled Module
 * (workerd refuses to compile bytes at run time). Calls that already pass a Module go through unchanged.
 * Returns whether the redirect was used, so a test can fail loudly if ORT stops calling instantiate this way.
 */
async function withModuleRedirect<T>(fn: () => Promise<T>): Promise<{ value: T; redirected: boolean }> {
  const module = pendingModule;
  if (!module) return { value: await fn(), redirected: false };
  const original = WebAssembly.instantiate;
  let redirected = false;
  const patched = async (source: unknown, imports?: WebAssembly.Imports): Promise<unknown> => {
    if (source instanceof WebAssembly.Module) return original(source, imports);
    redirected = true;
    const instance = await original(module, imports);
    return { instance, module };
  };
  (WebAssembly as { instantiate: unknown }).instantiate = patched;
  try {
    const value = await fn();
    pendingModule = null;
    return { value, redirected };
  } finally {
    (WebAssembly as { instantiate: unknown }).instantiate = original;
  }
}

export interface LoadedGraph {
  session: ort.InferenceSession;
  inputNames: readonly string[];
  outputNames: readonly string[];
  /** true when this load instantiated ORT through the precompiled-module redirect */
  redirected: boolean;
}

/** Create a session from graph bytes (weights inside). */
export async function loadGraph(graph: Uint8Array): Promise<LoadedGraph> {
  if (!initialised) throw new Error('initOrt() must be called before loading a graph');
  const options: ort.InferenceSession.SessionOptions = {
    executionProviders: [...executionProviders],
    graphOptimizationLevel: 'all',
    ...(logSeverityLevel !== undefined ? { logSeverityLevel } : {}),
  };
  const { value: session, redirected } = await withModuleRedirect(() => ort.InferenceSession.create(graph, options));
  return { session, inputNames: session.inputNames, outputNames: session.outputNames, redirected };
}

export const float32 = (data: Float32Array, dims: number[]): ort.Tensor => new ort.Tensor('float32', data, dims);
export const int64 = (values: number[], dims: number[] = [values.length]): ort.Tensor =>
  new ort.Tensor('int64', BigInt64Array.from(values.map((v) => BigInt(v))), dims);
