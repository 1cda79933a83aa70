// One stage's ONNX graph: its inputs as stage-io.ts names them, then the forward of the blocks it holds
// (engine/model/graph.ts) or its slice of one block (slices.ts).

import type { ModelConfig } from '../model/config.js';
import { stageForward } from '../model/graph.js';
import type { GraphOptions } from '../model/ops.js';
import type { WeightMap } from '../model/weights.js';
import { GraphBuilder } from '../onnx/builder.js';
import { sliceGraph } from './slices.js';
import { stageIO } from './stage-io.js';
import { checkStage, type StageSpec } from './stage-spec.js';

export function buildStageGraph(model: ModelConfig, w: WeightMap, spec: StageSpec, opts: GraphOptions): GraphBuilder {
  const { dims: d } = model;
  checkStage(d, spec);
  const io = stageIO(d, spec);
  const b = new GraphBuilder();
  for (const t of io.inputs) b.input(t.name, t.shape, t.dataType);
  const g = { b, d, w, opts };
  if (spec.slice) sliceGraph(g, spec.slice, io);
  else stageForward(g, spec, io);
  return b;
}
