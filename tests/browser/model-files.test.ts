// What the in-browser engine downloads, from the real local server (`hymba dev`): the model's files through
// GET /v1/model/files/:name (only the files a converted model consists of; ETag revalidation) and ONNX
// Runtime's WASM binary from the page's own assets, in parts under Workers Static Assets' 25 MiB per file.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { describe, expect, inject, test } from 'vitest';

const base = inject('baseUrl');

describe.runIf(base)('files for the in-browser engine', () => {
  test('the manifest and every file it names are served; other names are 404', async () => {
    const res = await fetch(`${base}/v1/model/files/hymba-manifest.json`);
    expect(res.status).toBe(200);
    const manifest = (await res.json()) as {
      fingerprint: string;
      stages: { graph: string; weightBytes: number }[];
      prefixState: string | null;
    };
    const health = (await (await fetch(`${base}/health`)).json()) as { fingerprint: string };
    expect(manifest.fingerprint).toBe(health.fingerprint);
    const names = [
      ...manifest.stages.map((s) => s.graph),
      manifest.prefixState,
      'tokenizer.json',
      'tokenizer_config.json',
    ];
    for (const name of names.filter((n): n is string => n !== null)) {
      const file = await fetch(`${base}/v1/model/files/${name}`, { method: 'HEAD' });
      expect(file.status, name).toBe(200);
      expect(Number(file.headers.get('content-length')), name).toBeGreaterThan(0);
    }
    for (const name of ['secret.txt', '..%2Fhymba-manifest.json', '.hidden', 'stage-999.onnx']) {
      const res = await fetch(`${base}/v1/model/files/${name}`);
      expect(res.status, name).toBe(404);
      await res.arrayBuffer();
    }
  });

  test('a current copy is revalidated with ETag: 304, no body', async () => {
    const first = await fetch(`${base}/v1/model/files/tokenizer_config.json`);
    const etag = first.headers.get('etag');
    expect(etag).toBeTruthy();
    await first.arrayBuffer();
    const again = await fetch(`${base}/v1/model/files/tokenizer_config.json`, { headers: { 'if-none-match': etag! } });
    expect(again.status).toBe(304);
  });

  test("ONNX Runtime's WASM comes from our assets, in parts of at most 25 MiB that join to the package's binary", async () => {
    const rt = (await (await fetch(`${base}/ort/runtime.json`)).json()) as {
      wasm: string;
      bytes: number;
      parts: string[];
    };
    const dist = dirname(createRequire(import.meta.url).resolve('onnxruntime-web/ort-wasm-simd-threaded.wasm'));
    const expected = readFileSync(join(dist, rt.wasm));
    expect(rt.bytes).toBe(expected.length);
    const parts: Uint8Array[] = [];
    for (const p of rt.parts) {
      const res = await fetch(`${base}/${p}`, {
        headers: { 'accept-encoding': 'identity' },
        signal: AbortSignal.timeout(60_000),
      });
      expect(res.status, p).toBe(200);
      parts.push(new Uint8Array(await res.arrayBuffer()));
    }
    for (const p of parts) expect(p.length).toBeLessThanOrEqual(25 * 1024 * 1024);
    expect(Buffer.concat(parts).equals(expected)).toBe(true);
  });
});
