// `npm start` / `hymba dev [--model <dir>] [--port 8787]`: serve the API locally with wrangler dev.
// The model comes from the local R2 simulation, as in production it comes from R2: the tiny default model
// is made and converted on first start (deterministic), or a given directory is converted (if it is a Hugging
// Face checkpoint) and uploaded. No account, no network.

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { GRAPH_VERSION, MANIFEST_FILE, parseManifest } from '../../engine/convert/manifest.js';
import { convertDir, exists } from '../model-dir.js';
import { makeTestModel } from '../test-model/make-test-model.js';
import { defaultPrefix, LOCAL_PERSIST, ROOT, uploadModel, WRANGLER } from '../upload.js';
import { CliError, intFlag, parse } from './args.js';

const DEFAULT_DIR = join(ROOT, 'models', 'default');
const PERSIST = LOCAL_PERSIST;

/** Whether a converted directory was made by this version of the graph builder. */
async function current(dir: string): Promise<boolean> {
  if (!(await exists(join(dir, MANIFEST_FILE)))) return false;
  return parseManifest(await readFile(join(dir, MANIFEST_FILE), 'utf8')).graphVersion === GRAPH_VERSION;
}

/** The tiny random-initialised default model, converted; made once (again after a graph change). */
async function defaultModel(): Promise<string> {
  const converted = join(DEFAULT_DIR, 'converted');
  if (await current(converted)) return converted;
  console.log('[hymba dev] preparing the default model (tiny random-initialised Hymba, real tokenizer)...');
  const hf = join(DEFAULT_DIR, 'hf');
  await rm(DEFAULT_DIR, { recursive: true, force: true });
  await makeTestModel(hf, { preset: 'tiny', seed: 1234 });
  await convertToDir(hf, converted);
  return converted;
}

async function convertToDir(hf: string, out: string): Promise<void> {
  await mkdir(out, { recursive: true });
  await convertDir(hf, { dtype: 'f32' }, (name, bytes) => writeFile(join(out, name), bytes));
}

/** A converted directory for --model: as given, or converted next to the default model if it is HF. */
async function modelDir(dir: string): Promise<string> {
  if (await exists(join(dir, MANIFEST_FILE))) return dir;
  if (!(await exists(join(dir, 'config.json'))))
    throw new CliError(`${dir} is neither a converted model nor a Hugging Face checkpoint`);
  const out = join(ROOT, 'models', `converted-${createHash('sha256').update(resolve(dir)).digest('hex').slice(0, 12)}`);
  console.log(`[hymba dev] converting ${dir} -> ${out}`);
  await convertToDir(dir, out);
  return out;
}

/**
 * Put the model's files into the local R2 simulation under a prefix named by its fingerprint, once: a marker
 * in wrangler's state directory records a finished upload (the same fingerprint means the same bytes).
 */
async function upload(dir: string): Promise<string> {
  const { fingerprint } = parseManifest(await readFile(join(dir, MANIFEST_FILE), 'utf8'));
  const marker = join(PERSIST, `uploaded-${fingerprint}`);
  if (await exists(marker)) return defaultPrefix(fingerprint);
  const { prefix } = await uploadModel(dir, {
    target: 'local',
    persistTo: PERSIST,
    log: (line) => console.log(`[hymba dev] ${line}`),
  });
  await mkdir(PERSIST, { recursive: true });
  await writeFile(marker, new Date().toISOString());
  return prefix;
}

const PLAYGROUND = join(ROOT, 'workers', 'playground');

/** Newest modification time of the files under `dir` (0 when there are none). */
async function newestMtime(dir: string, skip: Set<string>): Promise<number> {
  let newest = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (skip.has(entry.name)) continue;
    const path = join(dir, entry.name);
    const t = entry.isDirectory() ? await newestMtime(path, skip) : (await stat(path)).mtimeMs;
    newest = Math.max(newest, t);
  }
  return newest;
}

/**
 * Build the playground page (workers/playground -> dist/, which wrangler.toml's [assets] serves) unless dist/
 * is newer than every source file. The same as `npm run build:web`; vite is loaded only when it builds.
 */
export async function buildPlayground(log: (line: string) => void = console.log): Promise<void> {
  const built = join(PLAYGROUND, 'dist', 'index.html');
  const builtAt = (await exists(built)) ? (await stat(built)).mtimeMs : 0;
  if (builtAt > (await newestMtime(PLAYGROUND, new Set(['dist', 'node_modules'])))) return;
  const t0 = performance.now();
  const { build } = await import('vite');
  await build({ configFile: join(PLAYGROUND, 'vite.config.ts'), logLevel: 'warn' });
  log(`[hymba dev] built the playground page in ${Math.round(performance.now() - t0)} ms`);
}

export async function runDev(argv: string[]): Promise<void> {
  const { values } = parse(argv, { model: { type: 'string' }, port: { type: 'string', default: '8787' } }, 0);
  const model = values.model ?? process.env.HYMBA_MODEL;
  await buildPlayground();
  const dir = model ? await modelDir(model) : await defaultModel();
  const prefix = await upload(dir);
  const port = String(intFlag(values.port, 'port', 1));
  console.log(`[hymba dev] serving ${dir} on http://127.0.0.1:${port} (playground: http://127.0.0.1:${port}/)`);
  const child = spawn(
    process.execPath,
    [WRANGLER, 'dev', '--ip', '127.0.0.1', '--port', port, '--persist-to', PERSIST, '--var', `MODEL_PREFIX:${prefix}`],
    { cwd: ROOT, stdio: 'inherit' },
  );
  await new Promise<void>((ok) => child.on('exit', () => ok()));
}
