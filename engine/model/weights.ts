// The checkpoint's tensors: names exactly as in the safetensors file, shapes derived from the config.

import type { HymbaDims } from './config.js';

/** A dense fp32 tensor in row-major order. */
export interface Tensor {
  dims: number[];
  data: Float32Array;
}

/** Weights by checkpoint name, already widened to fp32. */
export type WeightMap = Map<string, Tensor>;

export const layerPrefix = (i: number): string => `model.layers.${i}.`;

/** in_proj rows, in the order the output columns are split: producers q|k|v|u|z, consumers q|u|z. */
export function inProjRows(dims: HymbaDims, layer: number): number {
  const producer = dims.layers[layer]!.kv.kind === 'producer';
  return dims.H + (producer ? dims.kHidden + dims.vHidden : 0) + 2 * dims.dIn;
}

/** Every tensor of one layer with its shape. */
export function layerTensorShapes(dims: HymbaDims, i: number): [string, number[]][] {
  const p = layerPrefix(i);
  const { H, dIn, dConv, dtRank, dState, I } = dims;
  return [
    [`${p}input_layernorm.weight`, [H]],
    [`${p}mamba.in_proj.weight`, [inProjRows(dims, i), H]],
    [`${p}mamba.conv1d.weight`, [dIn, 1, dConv]],
    [`${p}mamba.conv1d.bias`, [dIn]],
    [`${p}mamba.x_proj.0.weight`, [dtRank + 2 * dState, dIn]],
    [`${p}mamba.dt_proj.0.weight`, [dIn, dtRank]],
    [`${p}mamba.dt_proj.0.bias`, [dIn]],
    [`${p}mamba.A_log.0`, [dIn, dState]],
    [`${p}mamba.D.0`, [dIn]],
    [`${p}mamba.dt_layernorm.weight`, [dtRank]],
    [`${p}mamba.B_layernorm.weight`, [dState]],
    [`${p}mamba.C_layernorm.weight`, [dState]],
    [`${p}mamba.pre_avg_layernorm1.weight`, [dIn]],
    [`${p}mamba.pre_avg_layernorm2.weight`, [dIn]],
    [`${p}mamba.out_proj.weight`, [H, dIn]],
    [`${p}pre_moe_layernorm.weight`, [H]],
    [`${p}moe.experts.0.gate_proj.weight`, [I, H]],
    [`${p}moe.experts.0.up_proj.weight`, [I, H]],
    [`${p}moe.experts.0.down_proj.weight`, [H, I]],
  ];
}

/** Whether a tensor of layer i's belongs to its MLP block (the rest of the layer is its mixer block). */
export const isMlpTensor = (name: string): boolean => name.includes('.pre_moe_layernorm.') || name.includes('.moe.');

/** Tensors outside the layers. `lm_head.weight` is tied to the embedding and optional in the file. */
export function globalTensorShapes(dims: HymbaDims): [string, number[]][] {
  const shapes: [string, number[]][] = [
    ['model.embed_tokens.weight', [dims.V, dims.H]],
    ['model.final_layernorm.weight', [dims.H]],
  ];
  if (dims.M > 0) shapes.push(['model.memory_tokens', [dims.M, dims.H]]);
  return shapes;
}

export const OPTIONAL_TENSORS = ['lm_head.weight'] as const;

/** All required tensors of the model, name -> shape. */
export function expectedTensors(dims: HymbaDims): Map<string, number[]> {
  const out = new Map<string, number[]>(globalTensorShapes(dims));
  for (let i = 0; i < dims.L; i++) for (const [n, s] of layerTensorShapes(dims, i)) out.set(n, s);
  return out;
}

/** Fetch a weight, failing with its name rather than an undefined deep inside the maths. */
export function weight(w: WeightMap, name: string): Tensor {
  const t = w.get(name);
  if (!t) throw new Error(`weight ${name} is missing`);
  return t;
}
