// The playground page: `npm run build:web` (and `npm start`, via infra/cli/dev.ts) builds it into dist/, which
// wrangler.toml's [assets] serves next to the API.
//
// The in-browser engine (src/local-engine.ts) bundles the same engine/ code the server runs. engine/run/ort.ts
// imports `onnxruntime-web/wasm`; here that import becomes `onnxruntime-web/webgpu` (same API, WebGPU EP added),
// whose JS glue is bundled and whose WASM binary (ort-wasm-simd-threaded.asyncify.wasm) the page fetches from
// our own assets and hands over (ort.env.wasm.wasmBinary): nothing comes from a CDN. The binary is 25.5 MiB,
// over Workers Static Assets' 25 MiB per file, so it is emitted in parts under ort/ with ort/runtime.json
// listing them; the page joins them (docs/browser.md).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { defineConfig, type Plugin } from 'vite';

/** the WASM binary the WebGPU bundle of onnxruntime-web 1.30 loads (its glue is inside the bundle) */
const ORT_WASM = 'ort-wasm-simd-threaded.asyncify.wasm';
/** parts of at most this size (Workers Static Assets serve files up to 25 MiB) */
const PART_BYTES = 20 * 1024 * 1024;

function ortRuntimeAssets(): Plugin {
  return {
    name: 'hymba-ort-runtime',
    apply: 'build',
    generateBundle(_options, bundle) {
      // the bundle's own `new URL('ort-wasm-...wasm', import.meta.url)` makes vite emit the whole binary (over
      // the 25 MiB asset limit); the page hands the binary over, so that URL is never fetched: drop the copy
      for (const [name, out] of Object.entries(bundle))
        if (out.type === 'asset' && /^assets\/ort-wasm-simd-threaded.*\.wasm$/.test(name)) delete bundle[name];
      const require = createRequire(import.meta.url);
      const dist = dirname(require.resolve('onnxruntime-web/ort-wasm-simd-threaded.wasm'));
      const bytes = readFileSync(join(dist, ORT_WASM));
      const parts: string[] = [];
      for (let o = 0, i = 0; o < bytes.length; o += PART_BYTES, i++) {
        const fileName = `ort/${ORT_WASM}.part${i}`;
        this.emitFile({ type: 'asset', fileName, source: bytes.subarray(o, o + PART_BYTES) });
        parts.push(fileName);
      }
      const { version } = JSON.parse(readFileSync(join(dist, '..', 'package.json'), 'utf8')) as { version: string };
      this.emitFile({
        type: 'asset',
        fileName: 'ort/runtime.json',
        source: JSON.stringify({ ort: version, wasm: ORT_WASM, bytes: bytes.length, parts }),
      });
    },
  };
}

export default defineConfig({
  root: import.meta.dirname,
  base: '/',
  publicDir: false,
  logLevel: 'warn',
  resolve: { alias: [{ find: /^onnxruntime-web\/wasm$/, replacement: 'onnxruntime-web/webgpu' }] },
  plugins: [ortRuntimeAssets()],
  build: { outDir: 'dist', emptyOutDir: true, target: 'es2022', chunkSizeWarningLimit: 4096 },
});
