// Open a model directory from disk: a converted one as is, or a Hugging Face checkpoint converted in memory.

import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openCheckpoint } from '../engine/convert/checkpoint.js';
import { loadConfig, type ModelConfig } from '../engine/model/config.js';
import { convertCheckpoint, type ConvertOptions } from '../engine/convert/convert.js';
import { MANIFEST_FILE, parseManifest, type Manifest } from '../engine/convert/manifest.js';
import { HymbaEngine, type ModelSource } from '../engine/run/loaded-model.js';
import { dirCheckpointSource } from './node-files.js';
import { initNodeOrt } from './node-ort.js';

export const TOKENIZER_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'tokenizer.model',
];

export async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

export function dirModelSource(dir: string): ModelSource {
  const read = async (name: string): Promise<Buffer | null> => {
    try {
      return await readFile(join(dir, name));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  };
  return {
    readText: async (name) => (await read(name))?.toString('utf8') ?? null,
    readBytes: async (name) => {
      const b = await read(name);
      return b ? new Uint8Array(b.buffer, b.byteOffset, b.byteLength) : null;
    },
  };
}

export interface ModelDirInfo {
  dir: string;
  model: ModelConfig;
  /** the manifest of a converted directory; null for a Hugging Face checkpoint */
  manifest: Manifest | null;
}

/** A model directory's config without its weights: a converted one's manifest, or a checkpoint's config.json. */
export async function readModelDir(dir: string): Promise<ModelDirInfo> {
  if (await exists(join(dir, MANIFEST_FILE))) {
    const manifest = parseManifest(await readFile(join(dir, MANIFEST_FILE), 'utf8'));
    return { dir, model: loadConfig(manifest.config), manifest };
  }
  if (!(await exists(join(dir, 'config.json'))))
    throw new Error(
      `${dir} is neither a converted model (${MANIFEST_FILE}) nor a Hugging Face checkpoint (config.json)`,
    );
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
  } catch {
    throw new Error(`${join(dir, 'config.json')} is not valid JSON`);
  }
  return { dir, model: loadConfig(raw), manifest: null };
}

/** Convert a Hugging Face directory, calling `write` for every output file (tokenizer files included). */
export async function convertDir(
  hfDir: string,
  opts: Omit<ConvertOptions, 'tokenizer'>,
  write: (name: string, bytes: Uint8Array) => Promise<void>,
): Promise<void> {
  initNodeOrt();
  const src = dirModelSource(hfDir);
  const tokenizer = await exists(join(hfDir, 'tokenizer.json'));
  const ckpt = await openCheckpoint(dirCheckpointSource(hfDir));
  try {
    await convertCheckpoint(ckpt, { ...opts, tokenizer }, write);
  } finally {
    await ckpt.close();
  }
  for (const name of TOKENIZER_FILES) {
    const bytes = await src.readBytes(name);
    if (bytes) await write(name, bytes);
  }
}

/** Load a converted directory, or convert a Hugging Face one in memory (f32) and load that. */
export async function openModelDir(dir: string): Promise<HymbaEngine> {
  initNodeOrt();
  if (await exists(join(dir, MANIFEST_FILE))) return HymbaEngine.load(dirModelSource(dir));
  if (!(await exists(join(dir, 'config.json'))))
    throw new Error(
      `${dir} is neither a converted model (${MANIFEST_FILE}) nor a Hugging Face checkpoint (config.json)`,
    );
  const files = new Map<string, Uint8Array>();
  await convertDir(dir, { dtype: 'f32' }, async (name, bytes) => void files.set(name, bytes));
  return HymbaEngine.load({
    readText: async (name) => (files.has(name) ? new TextDecoder().decode(files.get(name)) : null),
    readBytes: async (name) => files.get(name) ?? null,
  });
}
