// Turn a built graph into bytes. Weights are stored inside the graph (raw_data): ONNX Runtime Web then
// uses them from the model bytes it already holds, which measured faster to load and run than external data.

import { encodeModel, DataType, type TensorInit } from './proto.js';
import type { GraphBuilder } from './builder.js';
import { f32ToF16 } from '../convert/dtype.js';

export interface EmittedGraph {
  graph: Uint8Array;
  /** bytes of weight data inside the graph, for manifests and memory planning */
  weightBytes: number;
}

export function emitGraph(b: GraphBuilder, name = 'hymba'): EmittedGraph {
  const initializers: TensorInit[] = [...b.consts];
  let weightBytes = 0;
  for (const w of b.weights) {
    if ('raw' in w) {
      weightBytes += w.raw.length;
      initializers.push({ name: w.name, dataType: w.dataType, dims: w.dims, raw: w.raw });
      continue;
    }
    const src = w.dtype === 'f16' ? f32ToF16(w.data) : w.data;
    const raw = new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
    weightBytes += raw.length;
    initializers.push({
      name: w.name,
      dataType: w.dtype === 'f16' ? DataType.FLOAT16 : DataType.FLOAT,
      dims: w.dims,
      raw,
    });
  }
  const graph = encodeModel({ name, nodes: b.nodes, initializers, inputs: b.inputs, outputs: b.outputs });
  return { graph, weightBytes };
}
