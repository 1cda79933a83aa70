// The manifest of a converted model directory: what `hymba convert` writes and every loader reads.

import { z } from 'zod';
import { toStageSpec, type StageFields, type StageSpec } from '../stages/stage-spec.js';
import { MODEL_DTYPES } from './quantize.js';

export const MANIFEST_FILE = 'hymba-manifest.json';
/** Bumped whenever the graphs change what they compute or how state is laid out. */
export const GRAPH_VERSION = 3;

const Int = z.number().int().nonnegative();
/** one share of one block (engine/stages/stage-spec.ts SliceSpec) */
const SliceEntry = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('mlp'), layer: Int, part: Int, parts: z.number().int().positive() }),
  z.object({ kind: z.literal('embed'), part: Int, parts: z.number().int().positive() }),
  z.object({ kind: z.literal('head'), part: Int, parts: z.number().int().positive() }),
]);

const StageEntry = z.object({
  first: Int,
  /** 0 for an embedding slice (it touches no layer) */
  last: Int,
  embed: z.boolean(),
  head: z.boolean(),
  /** sublayer units [from, to) (2i: layer i's mixer block, 2i+1 its MLP); absent: whole layers [first, last) */
  units: z.object({ from: Int, to: Int }).optional(),
  /** the stage is one slice of one block, run beside its sibling slices */
  slice: SliceEntry.optional(),
  /** producers whose K/V cache the stage mirrors (their new entries come with its input) */
  kvIn: z.array(Int).optional(),
  /** producers whose new K/V entries the stage returns (a later stage mirrors them) */
  kvOut: z.array(Int).optional(),
  /** the stage's ONNX graph with its weights inside */
  graph: z.string(),
  weightBytes: z.number().int().nonnegative(),
});

/** The stage plan a budgeted conversion followed (`hymba convert --budget-mb`): estimates, not measurements. */
const PlanRecord = z.object({
  /** memory per isolate the stages were packed for, in MB (1e6 bytes) */
  budgetMb: z.number().positive(),
  /** text tokens of session state each stage was sized to hold */
  contextTokens: z.number().int().positive(),
  /** sessions whose state each stage was sized to hold in memory */
  hotSessions: z.number().int().nonnegative(),
  stages: z.array(
    z.object({
      first: z.number().int().nonnegative(),
      last: z.number().int().nonnegative(),
      /** ORT baseline + weights as loaded + activation peak + hot sessions' state */
      estimatedBytes: z.number().int().nonnegative(),
      /** fp32 state of the stage's layers for one session at contextTokens */
      stateBytesPerSession: z.number().int().nonnegative(),
    }),
  ),
});

export const ManifestSchema = z.object({
  format: z.literal('hymba-edge-model'),
  version: z.literal(1),
  graphVersion: z.number().int(),
  /** sha-256 over config, dtype, graph version and every weight byte: states are only valid for this */
  fingerprint: z.string().min(16),
  /** weight format of the large matrices: f32, f16 (storage), int8 (per output channel), q4 (blocks of 32) */
  dtype: z.enum(MODEL_DTYPES),
  /** config.json exactly as the checkpoint had it */
  config: z.record(z.string(), z.unknown()),
  /** largest number of tokens one graph run accepts; the runner splits longer inputs */
  maxRunTokens: z.number().int().positive(),
  stages: z.array(StageEntry).min(1),
  /** state after the meta tokens, in the engine's snapshot format; null when the model has none */
  prefixState: z.string().nullable(),
  /** tokenizer.json / tokenizer_config.json copied from the checkpoint, when it had them */
  tokenizer: z.boolean(),
  generation: z.object({
    bosTokenId: z.number().int(),
    eosTokenIds: z.array(z.number().int()),
    /** how the model writes a tool call (default: Hymba's `<toolcall> {...} </toolcall>`) */
    toolCall: z.object({ start: z.string().min(1), end: z.string().min(1) }).optional(),
  }),
  /** optional: present when the stages came from the planner */
  plan: PlanRecord.optional(),
});

export type Manifest = z.infer<typeof ManifestSchema>;
export type ManifestStage = z.infer<typeof StageEntry>;
export type ManifestPlan = z.infer<typeof PlanRecord>;

/** The graph's StageSpec of a manifest stage entry (the optional fields only where present). */
export function stageSpecOf(e: ManifestStage): StageSpec {
  const spec: StageFields = { first: e.first, last: e.last, embed: e.embed, head: e.head };
  if (e.units) spec.units = { from: e.units.from, to: e.units.to };
  if (e.slice) spec.slice = { ...e.slice };
  if (e.kvIn) spec.kvIn = [...e.kvIn];
  if (e.kvOut) spec.kvOut = [...e.kvOut];
  return toStageSpec(spec);
}

export function parseManifest(text: string): Manifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new Error(`${MANIFEST_FILE} is not valid JSON`);
  }
  const parsed = ManifestSchema.safeParse(raw);
  if (!parsed.success)
    throw new Error(
      `${MANIFEST_FILE} is invalid: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
    );
  return parsed.data;
}
