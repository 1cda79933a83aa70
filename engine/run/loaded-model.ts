// A converted model, loaded: ORT sessions for its stages, the meta-token prefix state, the tokenizer.

import { loadConfig, type ModelConfig } from '../model/config.js';
import { MANIFEST_FILE, parseManifest, stageSpecOf, type Manifest } from '../convert/manifest.js';
import { LocalPipeline } from './pipeline.js';
import { StageRunner } from './stage-runner.js';
import { HymbaRunner, type Stage } from './runner.js';
import { expandQ4Graph } from '../onnx/q4-expand.js';
import { loadGraph } from './ort.js';
import { cloneState, emptyState, type HymbaState } from '../state/state.js';
import { deserializeState } from '../state/codec.js';
import { stageState } from '../state/merge.js';
import { HymbaTokenizer } from '../text/tokenizer.js';

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

/** What serving needs besides the graphs: the manifest, the config, the tokenizer. */
export interface ModelFront {
  readonly manifest: Manifest;
  readonly model: ModelConfig;
  readonly tokenizer: HymbaTokenizer | null;
  readonly fingerprint: string;
}

async function readManifest(src: ModelSource): Promise<Manifest> {
  const text = await src.readText(MANIFEST_FILE);
  if (text === null) throw new Error(`${MANIFEST_FILE} not found: not a converted model directory`);
  return parseManifest(text);
}

/** The model's front (no graphs): what a SessionDO loads to tokenize, template and sample. */
export async function loadFront(src: ModelSource): Promise<ModelFront> {
  const manifest = await readManifest(src);
  const model = loadConfig(manifest.config);
  const tokenizer = manifest.tokenizer ? await HymbaTokenizer.fromFiles((n) => src.readText(n)) : null;
  return { manifest, model, tokenizer, fingerprint: manifest.fingerprint };
}

/** Stage k's graph as ORT runs it: q4 is a storage format, expanded to int8 here (ORT's own expansion keeps fp32 copies). */
async function loadStageGraph(src: ModelSource, manifest: Manifest, k: number): Promise<Stage> {
  const s = manifest.stages[k];
  if (!s) throw new Error(`the model has ${manifest.stages.length} stages, not stage ${k}`);
  const bytes = await required(src, s.graph);
  const graph = await loadGraph(manifest.dtype === 'q4' ? expandQ4Graph(bytes) : bytes);
  return { spec: stageSpecOf(s), graph };
}

/** One stage of a model, loaded alone (a StageDO): its graph and its layers' slice of the meta-prefix state. */
export interface LoadedStage {
  readonly manifest: Manifest;
  readonly model: ModelConfig;
  readonly runner: StageRunner;
  /** the state after the meta tokens, holding this stage's layers (and the producers it mirrors) only */
  readonly prefix: HymbaState;
}

export async function loadStage(src: ModelSource, k: number): Promise<LoadedStage> {
  const manifest = await readManifest(src);
  const model = loadConfig(manifest.config);
  const stage = await loadStageGraph(src, manifest, k);
  const full = manifest.prefixState
    ? deserializeState(model.dims, await required(src, manifest.prefixState), manifest.fingerprint)
    : emptyState(model.dims);
  const prefix = stageState(model.dims, stage.spec, full);
  return { manifest, model, runner: new StageRunner(model, stage, manifest.maxRunTokens), prefix };
}

export class HymbaEngine implements ModelFront {
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
    const manifest = await readManifest(src);
    const model = loadConfig(manifest.config);
    const stages: Stage[] = [];
    for (let k = 0; k < manifest.stages.length; k++) stages.push(await loadStageGraph(src, manifest, k));
    const runner = new HymbaRunner(model, stages, manifest.maxRunTokens);
    const prefix = manifest.prefixState
      ? deserializeState(model.dims, await required(src, manifest.prefixState), manifest.fingerprint)
      : emptyState(model.dims);
    const tokenizer = manifest.tokenizer ? await HymbaTokenizer.fromFiles((n) => src.readText(n)) : null;
    return new HymbaEngine(manifest, model, runner, prefix, tokenizer);
  }

  /** This engine as a StatePipeline in this process (snapshots kept in memory). */
  localPipeline(): LocalPipeline {
    return new LocalPipeline(this.runner, this.model.dims, this.fingerprint, () => this.newState());
  }

  async release(): Promise<void> {
    for (const s of this.runner.stages) await s.graph.session.release();
  }
}
