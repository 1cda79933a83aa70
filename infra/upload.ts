// Put a converted model into the R2 model store with wrangler: every file under `<prefix><name>`, the manifest
// last. Readers treat the manifest as the commit point, so a half-finished upload is never read as a model.
// Shared by `hymba upload` and `hymba dev` (npm start), which fills wrangler's local R2 simulation.

import { spawn } from 'node:child_process';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { MANIFEST_FILE, parseManifest, type Manifest } from '../engine/convert/manifest.js';

export const ROOT = resolve(import.meta.dirname, '..');
export const WRANGLER = join(ROOT, 'node_modules', 'wrangler', 'bin', 'wrangler.js');
/** wrangler's local state, where `npm start` (wrangler dev --persist-to) reads the simulated R2 bucket */
export const LOCAL_PERSIST = join(ROOT, '.wrangler', 'state');
/** the bucket of the MODEL_STORE binding in wrangler.toml */
export const DEFAULT_BUCKET = 'hymba-models';
/**
 * `wrangler r2 object put --remote` refuses files over 300 MiB (wrangler 4.86 MAX_UPLOAD_SIZE_BYTES); the local
 * simulation has no limit. Stages planned for a 128 MB isolate are far smaller; an unsplit model is not.
 */
export const REMOTE_MAX_FILE_BYTES = 300 * 1024 * 1024;

export interface UploadOptions {
  /** wrangler's local simulation (as `npm start` uses) or the account's real bucket */
  target: 'local' | 'remote';
  bucket?: string;
  /** key prefix, a "directory" ending in "/"; default models/<fingerprint>/ */
  prefix?: string;
  /** local target: wrangler's state directory (default .wrangler/state, what `npm start` serves from) */
  persistTo?: string;
  /** one line per file, as it goes */
  log?: (line: string) => void;
  /** runs one wrangler command (argv after `node`); replaceable in tests */
  exec?: (args: string[]) => Promise<void>;
}

export interface UploadStep {
  name: string;
  key: string;
  file: string;
  bytes: number;
  /** arguments to `node`: the wrangler script and its options */
  args: string[];
}

export interface UploadPlan {
  bucket: string;
  prefix: string;
  manifest: Manifest;
  /** in upload order: the manifest is last */
  steps: UploadStep[];
}

export const defaultPrefix = (fingerprint: string): string => `models/${fingerprint}/`;

/** "a/b" and "/a/b/" both become "a/b/": keys never start with "/", a prefix always ends with one. */
export function normalizePrefix(prefix: string): string {
  const trimmed = prefix.replace(/^\/+/, '');
  if (trimmed === '') throw new Error('the key prefix must not be empty');
  return trimmed.endsWith('/') ? trimmed : `${trimmed}/`;
}

function putArgs(bucket: string, key: string, file: string, o: UploadOptions): string[] {
  const where = o.target === 'local' ? ['--local', '--persist-to', o.persistTo ?? LOCAL_PERSIST] : ['--remote'];
  return [WRANGLER, 'r2', 'object', 'put', `${bucket}/${key}`, '--file', file, ...where];
}

/** Files the manifest names, which the upload must carry (a directory missing one is not a model). */
function requiredFiles(m: Manifest): string[] {
  const files = m.stages.map((s) => s.graph);
  if (m.prefixState) files.push(m.prefixState);
  if (m.tokenizer) files.push('tokenizer.json');
  return files;
}

/** The wrangler commands that upload `dir`, checked before anything is sent. */
export async function planUpload(dir: string, o: UploadOptions): Promise<UploadPlan> {
  let text: string;
  try {
    text = await readFile(join(dir, MANIFEST_FILE), 'utf8');
  } catch {
    throw new Error(`${dir} is not a converted model (no ${MANIFEST_FILE}); run hymba convert first`);
  }
  const manifest = parseManifest(text);
  const bucket = o.bucket ?? DEFAULT_BUCKET;
  const prefix = normalizePrefix(o.prefix ?? defaultPrefix(manifest.fingerprint));
  const names: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) if (entry.isFile()) names.push(entry.name);
  const missing = requiredFiles(manifest).filter((n) => !names.includes(n));
  if (missing.length > 0) throw new Error(`${dir} lacks ${missing.join(', ')}, which ${MANIFEST_FILE} names`);
  // the manifest goes last: it is the commit point
  names.sort((a, b) => Number(a === MANIFEST_FILE) - Number(b === MANIFEST_FILE) || a.localeCompare(b));
  const steps: UploadStep[] = [];
  for (const name of names) {
    const file = join(dir, name);
    const key = `${prefix}${name}`;
    steps.push({ name, key, file, bytes: (await stat(file)).size, args: putArgs(bucket, key, file, o) });
  }
  const tooBig = o.target === 'remote' ? steps.filter((s) => s.bytes > REMOTE_MAX_FILE_BYTES) : [];
  if (tooBig.length > 0)
    throw new Error(
      `wrangler uploads at most 300 MiB per file to R2; ${tooBig.map((s) => s.name).join(', ')} ${tooBig.length === 1 ? 'is' : 'are'} larger: convert with --budget-mb so the stages are smaller`,
    );
  return { bucket, prefix, manifest, steps };
}

/** Run `node <args>` from the repository root (wrangler reads wrangler.toml there); stderr is passed through. */
export function runNode(args: string[]): Promise<void> {
  return new Promise((ok, fail) => {
    const p = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
    p.on('error', fail);
    p.on('exit', (code) =>
      code === 0 ? ok() : fail(new Error(`wrangler ${args.slice(1, 5).join(' ')} exited with ${code}`)),
    );
  });
}

/** Upload a converted directory; returns the plan that was carried out (its prefix is the MODEL_PREFIX). */
export async function uploadModel(dir: string, o: UploadOptions): Promise<UploadPlan> {
  const plan = await planUpload(dir, o);
  const exec = o.exec ?? runNode;
  for (const step of plan.steps) {
    o.log?.(`uploading ${step.name} (${step.bytes} bytes) to ${plan.bucket}/${step.key}`);
    await exec(step.args);
  }
  return plan;
}
