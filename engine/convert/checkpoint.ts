// A Hugging Face checkpoint directory: config.json plus model.safetensors, or shards listed in
// model.safetensors.index.json. Portable: the directory is reached through CheckpointSource.

import { loadConfig, type HymbaConfig, type HymbaDims } from '../model/config.js';
import { parseSafetensorsHeader, readTensorF32, type ByteSource, type SafetensorsTensorInfo } from './safetensors.js';
import { expectedTensors, OPTIONAL_TENSORS, type Tensor, type WeightMap } from '../model/weights.js';

/** A directory of files, by plain file name. */
export interface CheckpointSource {
  /** the file as UTF-8 text, or null when it does not exist */
  readText(name: string): Promise<string | null>;
  /** random access to the file, or null when it does not exist */
  open(name: string): Promise<ByteSource | null>;
}

export const CONFIG_FILE = 'config.json';
export const SINGLE_FILE = 'model.safetensors';
export const INDEX_FILE = 'model.safetensors.index.json';

/** A tensor of the checkpoint and the file holding it. */
export interface CheckpointTensorInfo extends SafetensorsTensorInfo {
  name: string;
  file: string;
}

export interface Checkpoint {
  config: HymbaConfig;
  dims: HymbaDims;
  /** config.json as parsed JSON, every key kept */
  rawConfig: Record<string, unknown>;
  /** the safetensors files, in index order */
  files: string[];
  tensors: Map<string, CheckpointTensorInfo>;
  /** one tensor widened to fp32, reading only its bytes */
  readTensor(name: string): Promise<Tensor>;
  /** release the open files */
  close(): Promise<void>;
}

export interface MisshapenTensor {
  name: string;
  expected: number[];
  actual: number[];
}

/** The checkpoint cannot be used: the message says everything wrong at once. */
export class CheckpointError extends Error {
  constructor(
    message: string,
    readonly missing: string[] = [],
    readonly unexpected: string[] = [],
    readonly misshapen: MisshapenTensor[] = [],
  ) {
    super(message);
    this.name = 'CheckpointError';
  }
}

const fmtShape = (s: readonly number[]): string => `[${s.join(', ')}]`;
const sameShape = (a: readonly number[], b: readonly number[]): boolean =>
  a.length === b.length && a.every((d, i) => d === b[i]);

/** Lines shown per category in the message; the error's arrays hold all of them. */
const MAX_LINES = 100;

function section(title: string, lines: string[]): string {
  if (lines.length === 0) return '';
  const shown = lines.slice(0, MAX_LINES).map((l) => `\n    ${l}`);
  if (lines.length > MAX_LINES) shown.push(`\n    ... and ${lines.length - MAX_LINES} more`);
  return `\n  ${title} (${lines.length}):${shown.join('')}`;
}

/**
 * Compare the tensors of a checkpoint with what config.json implies. Throws one CheckpointError listing
 * every missing, unexpected and misshapen tensor. `lm_head.weight` (tied) may be absent; if present it
 * must be [V, H].
 */
export function validateCheckpoint(dims: HymbaDims, infos: ReadonlyMap<string, { shape: readonly number[] }>): void {
  const expected = expectedTensors(dims);
  const optional = new Map<string, number[]>(OPTIONAL_TENSORS.map((n) => [n, [dims.V, dims.H]]));
  const missing: string[] = [];
  const misshapen: MisshapenTensor[] = [];
  const unexpected: string[] = [];
  for (const [name, shape] of expected) {
    const info = infos.get(name);
    if (info === undefined) missing.push(name);
    else if (!sameShape(info.shape, shape)) misshapen.push({ name, expected: shape, actual: [...info.shape] });
  }
  for (const [name, info] of infos) {
    if (expected.has(name)) continue;
    const shape = optional.get(name);
    if (shape === undefined) unexpected.push(name);
    else if (!sameShape(info.shape, shape)) misshapen.push({ name, expected: shape, actual: [...info.shape] });
  }
  if (missing.length + unexpected.length + misshapen.length === 0) return;
  const problems = [
    missing.length > 0 ? `${missing.length} missing` : '',
    unexpected.length > 0 ? `${unexpected.length} unexpected` : '',
    misshapen.length > 0 ? `${misshapen.length} misshapen` : '',
  ].filter((s) => s !== '');
  const message =
    `checkpoint tensors do not match config.json (${dims.L} layers, hidden ${dims.H}): ${problems.join(', ')}` +
    section(
      'missing',
      missing.map((n) => `${n} ${fmtShape(expected.get(n) ?? [])}`),
    ) +
    section(
      'unexpected',
      unexpected.map((n) => `${n} ${fmtShape(infos.get(n)?.shape ?? [])}`),
    ) +
    section(
      'misshapen',
      misshapen.map((m) => `${m.name}: expected ${fmtShape(m.expected)}, got ${fmtShape(m.actual)}`),
    );
  throw new CheckpointError(message, missing, unexpected, misshapen);
}

function parseJson(file: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(`${file} is not valid JSON: ${(e as Error).message}`);
  }
}

/** Shard names from an index: plain file names only (no paths). */
function checkFileName(name: string, from: string): void {
  if (name === '' || name.includes('/') || name.includes('\\') || name === '.' || name === '..')
    throw new CheckpointError(`${from} names the file ${JSON.stringify(name)}: expected a plain file name`);
}

function readWeightMap(text: string): Map<string, string> {
  const index = parseJson(INDEX_FILE, text);
  const wm = (index as { weight_map?: unknown } | null)?.weight_map;
  if (typeof wm !== 'object' || wm === null || Array.isArray(wm))
    throw new CheckpointError(`${INDEX_FILE} has no "weight_map" object (tensor name -> shard file)`);
  const out = new Map<string, string>();
  for (const [name, file] of Object.entries(wm)) {
    if (typeof file !== 'string')
      throw new CheckpointError(`${INDEX_FILE}: weight_map[${JSON.stringify(name)}] is not a file name`);
    checkFileName(file, INDEX_FILE);
    out.set(name, file);
  }
  return out;
}

/** The source with a name for error messages (the file name when it has none). */
function withName(src: ByteSource, file: string): ByteSource {
  if (src.name !== undefined) return src;
  return {
    name: file,
    size: () => src.size(),
    read: (offset, length) => src.read(offset, length),
    close: async () => {
      await src.close?.();
    },
  };
}

/**
 * Open a checkpoint directory: read config.json, find model.safetensors (preferred, as transformers does)
 * or the shards of model.safetensors.index.json, and parse every header. Only headers are read here.
 * With `validate` (the default) the tensors are checked against the config (validateCheckpoint).
 */
export async function openCheckpoint(dir: CheckpointSource, options: { validate?: boolean } = {}): Promise<Checkpoint> {
  const configText = await dir.readText(CONFIG_FILE);
  if (configText === null) throw new CheckpointError(`${CONFIG_FILE} not found in the checkpoint directory`);
  const rawConfig = parseJson(CONFIG_FILE, configText);
  const { config, dims } = loadConfig(rawConfig);

  const sources = new Map<string, ByteSource>();
  const close = async (): Promise<void> => {
    const all = [...sources.values()];
    sources.clear();
    await Promise.all(all.map((s) => s.close?.()));
  };
  try {
    let files: string[];
    let weightMap: Map<string, string> | null = null;
    const single = await dir.open(SINGLE_FILE);
    if (single !== null) {
      sources.set(SINGLE_FILE, withName(single, SINGLE_FILE));
      files = [SINGLE_FILE];
    } else {
      const indexText = await dir.readText(INDEX_FILE);
      if (indexText === null)
        throw new CheckpointError(`neither ${SINGLE_FILE} nor ${INDEX_FILE} found in the checkpoint directory`);
      weightMap = readWeightMap(indexText);
      files = [...new Set(weightMap.values())];
      if (files.length === 0) throw new CheckpointError(`${INDEX_FILE} lists no tensors`);
      for (const f of files) {
        const src = await dir.open(f);
        if (src === null) throw new CheckpointError(`${f}, listed in ${INDEX_FILE}, not found`);
        sources.set(f, withName(src, f));
      }
    }

    const tensors = new Map<string, CheckpointTensorInfo>();
    const problems: string[] = [];
    for (const f of files) {
      const header = await parseSafetensorsHeader(sources.get(f)!);
      for (const [name, info] of header.tensors) {
        const prior = tensors.get(name);
        if (prior !== undefined) {
          problems.push(`${name} is in both ${prior.file} and ${f}`);
          continue;
        }
        const listed = weightMap?.get(name);
        if (weightMap !== null && listed !== undefined && listed !== f)
          problems.push(`${name} is in ${f}, but ${INDEX_FILE} says ${listed}`);
        tensors.set(name, { ...info, name, file: f });
      }
    }
    if (weightMap !== null)
      for (const [name, f] of weightMap)
        if (!tensors.has(name)) problems.push(`${name}: ${INDEX_FILE} says ${f}, which does not hold it`);
    if (problems.length > 0)
      throw new CheckpointError(
        `the shards disagree with ${INDEX_FILE}:${problems
          .slice(0, MAX_LINES)
          .map((p) => `\n  ${p}`)
          .join('')}${problems.length > MAX_LINES ? `\n  ... and ${problems.length - MAX_LINES} more` : ''}`,
      );
    if (options.validate ?? true) validateCheckpoint(dims, tensors);

    const readTensor = async (name: string): Promise<Tensor> => {
      const info = tensors.get(name);
      if (info === undefined) throw new CheckpointError(`tensor ${name} is not in the checkpoint`);
      const src = sources.get(info.file);
      if (src === undefined) throw new CheckpointError(`checkpoint is closed (reading ${name})`);
      return { dims: info.shape.slice(), data: await readTensorF32(src, info) };
    };
    return { config, dims, rawConfig: rawConfig as Record<string, unknown>, files, tensors, readTensor, close };
  } catch (e) {
    await close();
    throw e;
  }
}

/**
 * Every tensor the model needs, widened to fp32, read one tensor at a time. `lm_head.weight` is not
 * loaded: the head is tied to the embedding (as transformers does with tie_word_embeddings).
 */
export async function loadWeights(
  checkpoint: Checkpoint,
  options: { onTensor?: (name: string, done: number, total: number) => void } = {},
): Promise<WeightMap> {
  const names = [...expectedTensors(checkpoint.dims).keys()];
  const weights: WeightMap = new Map();
  for (const [i, name] of names.entries()) {
    weights.set(name, await checkpoint.readTensor(name));
    options.onTensor?.(name, i + 1, names.length);
  }
  return weights;
}
