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

/** A checkpoint tensor with its name: the graph stores it under the same name. */
export interface NamedTensor extends Tensor {
  name: string;
}

/** Layer i's mixer block: fields named as the checkpoint names them, model.layers.i.<path>. */
export interface MixerWeights {
  input_layernorm: NamedTensor; // [H]
  mamba: {
    in_proj: NamedTensor; // [q|k|v|u|z or q|u|z rows, H] (inProjRows)
    conv1d: { weight: NamedTensor; bias: NamedTensor }; // [d_in, 1, d_conv], [d_in]
    x_proj: NamedTensor; // x_proj.0: [dt_rank + 2N, d_in]
    dt_proj: { weight: NamedTensor; bias: NamedTensor }; // dt_proj.0: [d_in, dt_rank], [d_in]
    A_log: NamedTensor; // A_log.0: [d_in, N]
    D: NamedTensor; // D.0: [d_in]
    dt_layernorm: NamedTensor; // [dt_rank]
    B_layernorm: NamedTensor; // [N]
    C_layernorm: NamedTensor; // [N]
    pre_avg_layernorm1: NamedTensor; // [d_in], attention branch
    pre_avg_layernorm2: NamedTensor; // [d_in], SSM branch
    out_proj: NamedTensor; // [H, d_in]
  };
}

/** Layer i's MLP block (the checkpoint's single-expert moe.experts.0). */
export interface MlpWeights {
  pre_moe_layernorm: NamedTensor; // [H]
  gate_proj: NamedTensor; // [I, H]
  up_proj: NamedTensor; // [I, H]
  down_proj: NamedTensor; // [H, I]
}

export interface LayerWeights {
  mixer: MixerWeights;
  mlp: MlpWeights;
}

/** The tensors of one layer by name, each checked once: present, and of the shape layerTensorShapes says. */
function layerTensors(w: WeightMap, dims: HymbaDims, i: number): (suffix: string) => NamedTensor {
  const shapes = new Map(layerTensorShapes(dims, i));
  return (suffix) => {
    const name = `${layerPrefix(i)}${suffix}`;
    const want = shapes.get(name);
    if (!want) throw new Error(`${name} is not a tensor of layer ${i}`);
    const t = weight(w, name);
    const size = want.reduce((a, b) => a * b, 1);
    if (t.dims.length !== want.length || t.dims.some((n, k) => n !== want[k]) || t.data.length !== size)
      throw new Error(`weight ${name} is [${t.dims.join(', ')}], not [${want.join(', ')}]`);
    return { name, dims: t.dims, data: t.data };
  };
}

/** Layer i's mixer block weights, validated. */
export function mixerWeights(w: WeightMap, dims: HymbaDims, i: number): MixerWeights {
  const t = layerTensors(w, dims, i);
  return {
    input_layernorm: t('input_layernorm.weight'),
    mamba: {
      in_proj: t('mamba.in_proj.weight'),
      conv1d: { weight: t('mamba.conv1d.weight'), bias: t('mamba.conv1d.bias') },
      x_proj: t('mamba.x_proj.0.weight'),
      dt_proj: { weight: t('mamba.dt_proj.0.weight'), bias: t('mamba.dt_proj.0.bias') },
      A_log: t('mamba.A_log.0'),
      D: t('mamba.D.0'),
      dt_layernorm: t('mamba.dt_layernorm.weight'),
      B_layernorm: t('mamba.B_layernorm.weight'),
      C_layernorm: t('mamba.C_layernorm.weight'),
      pre_avg_layernorm1: t('mamba.pre_avg_layernorm1.weight'),
      pre_avg_layernorm2: t('mamba.pre_avg_layernorm2.weight'),
      out_proj: t('mamba.out_proj.weight'),
    },
  };
}

/** Layer i's MLP block weights, validated. */
export function mlpWeights(w: WeightMap, dims: HymbaDims, i: number): MlpWeights {
  const t = layerTensors(w, dims, i);
  return {
    pre_moe_layernorm: t('pre_moe_layernorm.weight'),
    gate_proj: t('moe.experts.0.gate_proj.weight'),
    up_proj: t('moe.experts.0.up_proj.weight'),
    down_proj: t('moe.experts.0.down_proj.weight'),
  };
}

/** Every tensor of layer i, validated (a stage holding one block of the layer needs only that block's). */
export function layerWeights(w: WeightMap, dims: HymbaDims, i: number): LayerWeights {
  return { mixer: mixerWeights(w, dims, i), mlp: mlpWeights(w, dims, i) };
}

/** Fetch a weight, failing with its name rather than an undefined deep inside the maths. */
export function weight(w: WeightMap, name: string): Tensor {
  const t = w.get(name);
  if (!t) throw new Error(`weight ${name} is missing`);
  return t;
}

/** A weight with its name, for the graph (which stores it under that name). */
export function namedWeight(w: WeightMap, name: string): NamedTensor {
  return { name, ...weight(w, name) };
}
