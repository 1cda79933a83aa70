// GET /v1/model/files/:name: the served model's files, for a client that runs the same engine itself (the
// playground's in-browser engine, docs/browser.md). Streamed from MODEL_STORE under MODEL_PREFIX. Only the
// files a converted model consists of are served: the manifest, the files it names (stage graphs, the
// meta-token prefix state) and the tokenizer files; any other name is a 404. Needs an API key like every model
// route when API_KEYS is set. ETag / If-None-Match let a browser revalidate instead of downloading again.

import { Hono } from 'hono';
import type { AppEnv } from '../app-env.js';
import { ApiError } from '../api/errors.js';
import { MANIFEST_FILE, parseManifest } from '../../engine/convert/manifest.js';

export const modelFiles = new Hono<AppEnv>();

const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'];
const SAFE_NAME = /^[\w][\w.-]{0,200}$/;

const missing = (name: string): ApiError => ApiError.notFound(`The model has no file named ${name}.`, 'name');

/** The file names a client may fetch, from the manifest. */
async function servedNames(bucket: R2Bucket, prefix: string): Promise<Set<string>> {
  const obj = await bucket.get(prefix + MANIFEST_FILE);
  if (!obj) throw ApiError.loading(5, 'The model is not in the model store yet; retry shortly.');
  const manifest = parseManifest(await obj.text());
  const names = new Set([MANIFEST_FILE, ...manifest.stages.map((s) => s.graph)]);
  if (manifest.prefixState) names.add(manifest.prefixState);
  if (manifest.tokenizer) for (const n of TOKENIZER_FILES) names.add(n);
  return names;
}

modelFiles.get('/v1/model/files/:name', async function modelFile(c) {
  const name = c.req.param('name');
  if (!SAFE_NAME.test(name) || name.includes('..')) throw missing(name);
  const bucket = c.env.MODEL_STORE;
  const prefix = c.env.MODEL_PREFIX;
  if (name !== MANIFEST_FILE && !(await servedNames(bucket, prefix)).has(name)) throw missing(name);
  const obj = await bucket.get(prefix + name, { onlyIf: c.req.raw.headers });
  if (!obj) throw missing(name);
  const headers: Record<string, string> = {
    etag: obj.httpEtag,
    'cache-control': 'no-cache',
    'content-type': name.endsWith('.json') ? 'application/json' : 'application/octet-stream',
  };
  // onlyIf matched (If-None-Match is the file's etag): no body, the client's copy is current
  if (!('body' in obj)) return c.body(null, 304, headers);
  headers['content-length'] = String(obj.size);
  return c.body(obj.body, 200, headers);
});
