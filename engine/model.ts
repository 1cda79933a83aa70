// A converted model, loaded: ORT sessions for its stages, the meta-token prefix state, the tokenizer.

import { loadConfig, type ModelConfig } from './config.js';
import { MANIFEST_FILE, parseManifest, type Manifest } from './manifest.js';
import { HymbaRunner, type Stage } from './runner.js';
import { expandQ4Graph } from './onnx/q4-expand.js';
import { loadGraph } from './runtime/ort.js';
import { cloneState, deserializeState, emptyState, type HymbaState } from './state.js';
import { HymbaTokenizer } from './tokenizer.js';

/** Where a converted model's files come from: a directory, R2, the Worker bundle, a browser fetch. */
export interface ModelSource {
  readText(name: string): Promise<string | null>;
  readBytes(name: string): Promise<Uint8Array | null>;
}

async function required(src: ModelSource, name: string): Promise<Uint8Array> {
  const bytes = await src.readBytes(name);
  if (!bytes) throw new Error(`model file ${name} is missing`);
  return bytes;
}

export class HymbaEngine {
  private constructor(
    readonly manifest: Manifest,
    readonly model: ModelConfig,
    readonly runner: HymbaRunner,
    private readonly prefix: HymbaState,
    readonly tokenizer: HymbaTokenizer | null,
  ) {}

  get fingerprint(): string {
    return this.manifest.fingerprint;
  }

  /** A fresh session state: the meta tokens already processed (position M). */
  newState(): HymbaState {
    return cloneState(this.prefix);
  }

  static async load(src: ModelSource): Promise<HymbaEngine> {
    const text = await src.readText(MANIFEST_FILE);
    if (text === null) throw new Error(`${MANIFEST_FILE} not found: not a converted model directory`);
    const manifest = parseManifest(text);
    const model = loadConfig(manifest.config);
    const stages: Stage[] = [];
    for (const s of manifest.stages) {
      const bytes = await required(src, s.graph);
      // q4 is a storage format: expand it to int8 here, since ORT's own expansion keeps fp32 copies
      const graph = await loadGraph(manifest.dtype === 'q4' ? expandQ4Graph(bytes) : bytes);
      stages.push({ spec: { first: s.first, last: s.last, embed: s.embed, head: s.head }, graph });
    }
    const runner = new HymbaRunner(model, stages, manifest.maxRunTokens);
    const prefix = manifest.prefixState
      ? deserializeState(model.dims, await required(src, manifest.prefixState), manifest.fingerprint)
      : emptyState(model.dims);
    const tokenizer = manifest.tokenizer ? await HymbaTokenizer.fromFiles((n) => src.readText(n)) : null;
    return new HymbaEngine(manifest, model, runner, prefix, tokenizer);
  }

  async release(): Promise<void> {
    for (const s of this.runner.stages) await s.graph.session.release();
  }
}
