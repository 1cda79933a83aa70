// Turn a built graph into bytes: the graph protobuf and one external weight file it points into.

import { encodeModel, DataType, type TensorInit } from './proto.js';
import type { GraphBuilder } from './builder.js';
import { f32ToF16 } from '../dtype.js';

export interface EmittedGraph {
  graph: Uint8Array;
  weights: Uint8Array;
  weightsFile: string;
  /** bytes per weight dtype, for manifests and memory planning */
  weightBytes: number;
}

const ALIGN = 64;

export function emitGraph(b: GraphBuilder, weightsFile: string, name = 'hymba'): EmittedGraph {
  let total = 0;
  const layout = b.weights.map((w) => {
    const count = w.data.length;
    const bytes = w.dtype === 'f16' ? count * 2 : count * 4;
    const offset = Math.ceil(total / ALIGN) * ALIGN;
    total = offset + bytes;
    return { w, offset, bytes };
  });
  const weights = new Uint8Array(total);
  const initializers: TensorInit[] = [...b.consts];
  for (const { w, offset, bytes } of layout) {
    const src = w.dtype === 'f16' ? f32ToF16(w.data) : w.data;
    weights.set(new Uint8Array(src.buffer, src.byteOffset, bytes), offset);
    initializers.push({
      name: w.name,
      dataType: w.dtype === 'f16' ? DataType.FLOAT16 : DataType.FLOAT,
      dims: w.dims,
      external: { location: weightsFile, offset, length: bytes },
    });
  }
  const graph = encodeModel({ name, nodes: b.nodes, initializers, inputs: b.inputs, outputs: b.outputs });
  return { graph, weights, weightsFile, weightBytes: total };
}
