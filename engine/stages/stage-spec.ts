// What one stage graph holds. A model is the sequence embedding, sublayer units 0 .. 2L-1 (unit 2i: layer i's
// mixer block, 2i+1: its MLP block), head. A stage is either a consecutive run of that sequence (BlocksStage)
// or one share of one block (SliceStage: MLP intermediate columns, vocabulary rows of the embedding or of the
// head), run beside its sibling slices on the same input (engine/stages/steps.ts combines their outputs).
//
// The two kinds are told apart by `slice`, as in the manifest JSON (engine/convert/manifest.ts parses entries
// into this union); checkStage holds a slice stage to carrying no units, mirrors, embedding or head.

import type { HymbaDims } from '../model/config.js';

/** One share of one block, run in parallel with its sibling parts on the same input (part k of `parts`). */
export type SliceSpec =
  /** input hidden x [T, H]; output down_k(silu(gate_k n) * up_k n), n = RMSNorm(x), intermediate columns sliceRange(I); the caller adds x + the sum */
  | { kind: 'mlp'; layer: number; part: number; parts: number }
  /** input ids; output rows [T, H] for ids in its vocabulary rows sliceRange(V) (part 0 also the meta tokens), zeros otherwise; the caller sums */
  | { kind: 'embed'; part: number; parts: number }
  /** input hidden; output final norm + logits of its vocabulary rows [rows, V_k]; the caller concatenates along V */
  | { kind: 'head'; part: number; parts: number };

/** Sublayer units [from, to): 2i = layer i's mixer block, 2i+1 its MLP block. */
export interface UnitRange {
  from: number;
  to: number;
}

/** A run of the model: the embedding (optional), sublayer units of layers [first, last), the head (optional). */
export interface BlocksStage {
  first: number; // first layer touched (inclusive)
  last: number; // last layer touched (exclusive)
  embed: boolean; // embedding + meta tokens in front
  head: boolean; // final norm + tied lm_head behind
  /** absent: whole layers, [2*first, 2*last) */
  units?: UnitRange;
  /** producers whose K/V this stage mirrors: a consumer's mixer is here, the producer's is not */
  kvIn?: number[];
  /** producers whose mixer is here and whose new K/V entries a later stage mirrors */
  kvOut?: number[];
  slice?: undefined;
}

/**
 * One slice of one block and nothing else: no position, no state. It shares the manifest's entry shape, so it
 * has the other fields too; checkStage requires embed and head false and no units or mirrors.
 */
export interface SliceStage {
  /** the layers touched: an MLP slice's [layer, layer + 1); the embedding's [0, 0); the head's [L, L) */
  first: number;
  last: number;
  slice: SliceSpec;
  embed: boolean;
  head: boolean;
  units?: UnitRange;
  kvIn?: number[];
  kvOut?: number[];
}

export type StageSpec = BlocksStage | SliceStage;

/** The fields of either kind as one record: how the manifest and the converter's options spell a stage. */
export interface StageFields {
  first: number;
  last: number;
  embed: boolean;
  head: boolean;
  units?: UnitRange;
  slice?: SliceSpec;
  kvIn?: number[];
  kvOut?: number[];
}

/** A stage record as the union, told apart by `slice` (the object itself: its key order is the manifest's). */
export const toStageSpec = (f: StageFields): StageSpec => (f.slice ? (f as SliceStage) : (f as BlocksStage));

/** Part k of n of a range of `size` rows: [floor(k*size/n), floor((k+1)*size/n)). */
export const sliceRange = (size: number, part: number, parts: number): [number, number] => [
  Math.floor((part * size) / parts),
  Math.floor(((part + 1) * size) / parts),
];

/** The sublayer units a blocks stage runs. */
export const stageUnits = (s: BlocksStage): UnitRange => s.units ?? { from: 2 * s.first, to: 2 * s.last };

/** The blocks of one layer that a stage holds. */
export interface HeldBlocks {
  layer: number;
  mixer: boolean;
  mlp: boolean;
}

/** Layer by layer, the blocks a blocks stage runs (a stage may start at an MLP block or end at a mixer). */
export function heldBlocks(s: BlocksStage): HeldBlocks[] {
  const { from, to } = stageUnits(s);
  const out: HeldBlocks[] = [];
  for (let layer = from >> 1; 2 * layer < to; layer++)
    out.push({ layer, mixer: 2 * layer >= from, mlp: 2 * layer + 1 < to });
  return out;
}

/** Layers whose mixer block (and so whose conv/SSM state and, for producers, K/V cache) the stage holds. */
export function mixerLayers(s: StageSpec): number[] {
  if (s.slice) return [];
  return heldBlocks(s)
    .filter((h) => h.mixer)
    .map((h) => h.layer);
}

/** Whether a stage takes token ids (the embedding or an embedding slice) rather than hidden rows. */
export const takesIds = (s: StageSpec): boolean => s.embed || s.slice?.kind === 'embed';
/** Whether a stage returns logits (the head or a head slice). */
export const givesLogits = (s: StageSpec): boolean => s.head || s.slice?.kind === 'head';

/** A stage's own rules: a real range of units; every consumer's producer here or mirrored (kvIn). */
export function checkStage(dims: HymbaDims, s: StageSpec): void {
  if (s.slice) return checkSlice(dims, s);
  if (s.first < 0 || s.last > dims.L || s.first >= s.last) throw new Error(`stage [${s.first}, ${s.last}) is empty`);
  const { from, to } = stageUnits(s);
  if (!(Number.isInteger(from) && Number.isInteger(to) && from >= 0 && to <= 2 * dims.L && from < to))
    throw new Error(`units [${from}, ${to}) are not a sublayer range of ${dims.L} layers`);
  if (Math.floor(from / 2) !== s.first || Math.ceil(to / 2) !== s.last)
    throw new Error(
      `units [${from}, ${to}) touch layers [${Math.floor(from / 2)}, ${Math.ceil(to / 2)}), not [${s.first}, ${s.last})`,
    );
  const mixers = new Set(mixerLayers(s));
  const kvIn = s.kvIn ?? [];
  const read = new Set<number>();
  for (const i of mixers) {
    const kv = dims.layers[i]!.kv;
    if (kv.kind !== 'consumer') continue;
    read.add(kv.producer);
    if (!mixers.has(kv.producer) && !kvIn.includes(kv.producer))
      throw new Error(
        `stage [${s.first}, ${s.last}) splits layer ${i} from its KV producer ${kv.producer} (not in kvIn)`,
      );
  }
  for (const p of kvIn)
    if (dims.layers[p]?.kv.kind !== 'producer' || mixers.has(p) || !read.has(p))
      throw new Error(`kvIn ${p}: not a KV producer outside the stage that a consumer in it reads`);
  for (const p of s.kvOut ?? [])
    if (dims.layers[p]?.kv.kind !== 'producer' || !mixers.has(p))
      throw new Error(`kvOut ${p}: not a KV producer whose mixer is in the stage`);
}

function checkSlice(dims: HymbaDims, s: SliceStage): void {
  const { slice } = s;
  const { part, parts } = slice;
  const size = slice.kind === 'mlp' ? dims.I : dims.V;
  if (!(Number.isInteger(parts) && parts >= 1 && parts <= size && Number.isInteger(part) && part >= 0 && part < parts))
    throw new Error(`slice part ${part} of ${parts} is invalid`);
  if (s.embed || s.head || s.units || s.kvIn?.length || s.kvOut?.length)
    throw new Error('a slice stage holds nothing but its slice');
  if (slice.kind === 'mlp') {
    if (!(Number.isInteger(slice.layer) && slice.layer >= 0 && slice.layer < dims.L))
      throw new Error(`MLP slice of layer ${slice.layer} is outside the model`);
    if (s.first !== slice.layer || s.last !== slice.layer + 1)
      throw new Error(`MLP slice of layer ${slice.layer} must have first ${slice.layer}, last ${slice.layer + 1}`);
  }
}
