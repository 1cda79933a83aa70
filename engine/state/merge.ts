// A pipeline's stages each hold a share of the whole-model state: the entries of the layers whose mixer the
// stage runs, plus mirror entries of the producers it mirrors (StageSpec.kvIn). Cutting a whole state into
// those shares and putting them back together (the session handoff, docs/serving.md) lives here.

import type { HymbaDims } from '../model/config.js';
import { mixerLayers, type StageSpec } from '../stages/stage-spec.js';
import { StateFormatError } from './codec.js';
import {
  emptyState,
  holdsMixer,
  isMirror,
  kvEntries,
  mirrorOf,
  mixerKind,
  type HymbaState,
  type LayerState,
} from './state.js';

/** The producers a stage mirrors. */
const mirrored = (spec: StageSpec): readonly number[] => spec.kvIn ?? [];

/**
 * Stage `spec`'s share of a whole-model state: the entries of the layers whose mixer it holds, and mirror
 * entries of the producers it mirrors (kvIn). A stage's meta-prefix state is this of the full prefix state.
 */
export function stageState(d: HymbaDims, spec: StageSpec, full: HymbaState): HymbaState {
  const layers: (LayerState | undefined)[] = new Array(d.L);
  for (const i of mixerLayers(spec)) {
    const l = full.layers[i];
    if (!l || !holdsMixer(l)) throw new Error(`the state has no layer ${i}`);
    layers[i] = l;
  }
  for (const p of mirrored(spec)) {
    const l = full.layers[p];
    if (!l) throw new Error(`the state has no layer ${p} to mirror`);
    layers[p] = mirrorOf(l);
  }
  return { position: full.position, layers };
}

/** A stage's state before any token (position 0): its mixers' layers and its mirrors. */
export function emptyStageState(d: HymbaDims, spec: StageSpec): HymbaState {
  return stageState(d, spec, emptyState(d));
}

/** Each stage's share of a whole-model state (stageState per spec): what the stages of a pipeline hold. */
export function splitState(d: HymbaDims, specs: readonly StageSpec[], full: HymbaState): HymbaState[] {
  return specs.map((spec) => stageState(d, spec, full));
}

/**
 * The whole-model state of a snapshot held as per-stage slices (`states[k]` is stage `specs[k]`'s share, as
 * stageState makes it): every layer's entry taken from the stage that holds its mixer; mirror entries (copies
 * of producers' K/V) are checked and skipped. Throws StateFormatError unless every layer is present exactly
 * once, every stage holds exactly its own layers and mirrors, and all positions agree. The inverse of
 * splitState; arrays are shared, not copied.
 */
export function mergeStageStates(d: HymbaDims, specs: readonly StageSpec[], states: readonly HymbaState[]): HymbaState {
  if (specs.length !== states.length)
    throw new StateFormatError(`${states.length} stage states for ${specs.length} stages`);
  if (states.length === 0) throw new StateFormatError('no stage states to merge');
  const position = states[0]!.position;
  const layers: (LayerState | undefined)[] = new Array(d.L);
  const mirrors: { stage: number; layer: number; kvLen: number }[] = [];
  specs.forEach((spec, k) => {
    const s = states[k]!;
    if (s.position !== position)
      throw new StateFormatError(`stage ${k} is at position ${s.position}, stage 0 at ${position}`);
    const own = new Set(mixerLayers(spec));
    const kvIn = new Set(mirrored(spec));
    s.layers.forEach((l, i) => {
      if (l && !own.has(i) && !kvIn.has(i)) throw new StateFormatError(`stage ${k} holds layer ${i}, not its own`);
    });
    for (const i of own) {
      const l = s.layers[i];
      if (!l || !holdsMixer(l)) throw new StateFormatError(`stage ${k} has no layer ${i}`);
      if (layers[i]) throw new StateFormatError(`layer ${i} is held by two stages`);
      layers[i] = l;
    }
    for (const p of kvIn) {
      const l = s.layers[p];
      if (!l || !isMirror(l)) throw new StateFormatError(`stage ${k} has no mirror of layer ${p}`);
      mirrors.push({ stage: k, layer: p, kvLen: l.kvLen });
    }
  });
  for (let i = 0; i < d.L; i++) if (!layers[i]) throw new StateFormatError(`no stage holds layer ${i}`);
  for (const m of mirrors) {
    const l = layers[m.layer]!;
    if (l.kind !== 'producer' || l.kvLen !== m.kvLen)
      throw new StateFormatError(`stage ${m.stage}'s mirror of layer ${m.layer} differs from the layer`);
  }
  return { position, layers };
}

/**
 * Checks a whole-model state (one that came from outside, e.g. a client's upload): every layer present, none
 * a mirror, each of the kind the config says, conv/SSM sizes as the model's, producers holding
 * kvEntries(d, layer, position) K/V entries. Throws StateFormatError naming the first problem.
 */
export function checkWholeState(d: HymbaDims, s: HymbaState): void {
  if (!(Number.isInteger(s.position) && s.position >= 0 && s.position <= d.maxPositions))
    throw new StateFormatError(`position ${s.position} is outside the model's context`);
  for (let i = 0; i < d.L; i++) {
    const l = s.layers[i];
    if (!l) throw new StateFormatError(`layer ${i} is missing`);
    if (isMirror(l)) throw new StateFormatError(`layer ${i} is a mirror entry, not a whole layer`);
    if (l.conv.length !== (d.dConv - 1) * d.dIn || l.ssm.length !== d.dIn * d.dState)
      throw new StateFormatError(`layer ${i} has the wrong conv/SSM size`);
    if (l.kind !== mixerKind(d, i)) {
      if (l.kind === 'producer') throw new StateFormatError(`layer ${i} holds K/V but is no producer`);
      throw new StateFormatError(`layer ${i} is a KV producer but holds no K/V`);
    }
    if (l.kind === 'consumer') continue;
    const want = kvEntries(d, i, s.position);
    if (l.kvLen !== want) throw new StateFormatError(`layer ${i} holds ${l.kvLen} K/V entries, expected ${want}`);
    if (l.key.length !== d.kvHeads * want * d.dqk || l.value.length !== d.kvHeads * want * d.dv)
      throw new StateFormatError(`layer ${i} has the wrong K/V size`);
  }
  if (s.layers.length > d.L) throw new StateFormatError(`the state has more than ${d.L} layers`);
}
