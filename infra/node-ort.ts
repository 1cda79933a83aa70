// Node side of the ORT runtime: hand ONNX Runtime Web its WASM bytes from the installed package.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { initOrt } from '../engine/run/ort.js';

export function initNodeOrt(numThreads = 1): void {
  const require = createRequire(import.meta.url);
  const wasmPath = require.resolve('onnxruntime-web/ort-wasm-simd-threaded.wasm');
  initOrt({ wasmBinary: readFileSync(wasmPath), numThreads });
}
