// A small graph builder over proto.ts: ops return the names of their outputs, so graph code reads like maths.

import {
  DataType,
  type AttrValue,
  type DataTypeId,
  type Dim,
  type GraphDef,
  type NodeDef,
  type TensorInit,
} from './proto.js';

export type WeightDtype = 'f32' | 'f16';

/** A weight to be stored in the graph: fp32 values stored as `dtype`, or bytes already in `dataType`. */
export type PendingWeight =
  | { name: string; dims: number[]; data: Float32Array; dtype: WeightDtype }
  | { name: string; dims: number[]; raw: Uint8Array; dataType: DataTypeId };

type Attrs = Record<string, number | number[] | string | { float: number }>;

function toAttr(v: Attrs[string]): AttrValue {
  if (typeof v === 'number') return { kind: 'int', v };
  if (typeof v === 'string') return { kind: 'string', v };
  if (Array.isArray(v)) return { kind: 'ints', v };
  return { kind: 'float', v: v.float };
}

function int64Bytes(values: number[]): Uint8Array {
  const a = new BigInt64Array(values.map((v) => BigInt(v)));
  return new Uint8Array(a.buffer);
}

function floatBytes(values: number[]): Uint8Array {
  return new Uint8Array(new Float32Array(values).buffer);
}

export class GraphBuilder {
  readonly nodes: NodeDef[] = [];
  readonly inputs: GraphDef['inputs'] = [];
  readonly outputs: GraphDef['outputs'] = [];
  private scope = '';
  /** constants, weights and the name counter live in the root graph; subgraphs see them as outer scope */
  private readonly root: GraphBuilder;
  readonly consts: TensorInit[] = [];
  readonly weights: PendingWeight[] = [];
  private counter = 0;
  private constCache = new Map<string, string>();
  private weightValues = new Map<string, string>();
  private memos = new Map<string, unknown>();

  constructor(parent?: GraphBuilder) {
    this.root = parent ? parent.root : this;
    if (parent) this.scope = parent.scope;
  }

  /**
   * An If node: each branch builds its values in a subgraph (reading outer values by name) and returns
   * them; the node's outputs are the chosen branch's values, in order.
   */
  ifElse(cond: string, thenBranch: (b: GraphBuilder) => string[], elseBranch: (b: GraphBuilder) => string[]): string[] {
    const branch = (fn: (b: GraphBuilder) => string[], label: string): GraphDef => {
      const sub = new GraphBuilder(this);
      const values = fn(sub);
      const outputs = values.map((v, i) => {
        const name = this.fresh(`${label}${i}`);
        sub.nodes.push({ op: 'Identity', inputs: [v], outputs: [name], name });
        return { name, dataType: DataType.FLOAT, shape: null };
      });
      return { name: this.fresh(label), nodes: sub.nodes, initializers: [], inputs: [], outputs };
    };
    const thenGraph = branch(thenBranch, 'then');
    const elseGraph = branch(elseBranch, 'else');
    const name = this.fresh('If');
    const outputs = thenGraph.outputs.map((_, i) => `${name}:${i}`);
    this.nodes.push({
      op: 'If',
      inputs: [cond],
      outputs,
      name,
      attrs: { then_branch: { kind: 'graph', v: thenGraph }, else_branch: { kind: 'graph', v: elseGraph } },
    });
    return outputs;
  }

  /** Prefix names of the nodes created inside fn (e.g. "layer3/ssm/"), for readable graphs and profiles. */
  within<R>(scope: string, fn: () => R): R {
    const saved = this.scope;
    this.scope = saved + scope + '/';
    try {
      return fn();
    } finally {
      this.scope = saved;
    }
  }

  private fresh(op: string): string {
    return `${this.scope}${op}_${this.root.counter++}`;
  }

  /** Add a node with several outputs. */
  opN(op: string, inputs: string[], nOut: number, attrs: Attrs = {}, domain?: string): string[] {
    const name = this.fresh(op);
    const outputs = Array.from({ length: nOut }, (_, i) => `${name}:${i}`);
    const node: NodeDef = { op, inputs, outputs, name, attrs: {} };
    if (domain) node.domain = domain;
    for (const [k, v] of Object.entries(attrs)) node.attrs![k] = toAttr(v);
    this.nodes.push(node);
    return outputs;
  }

  op(op: string, inputs: string[], attrs: Attrs = {}, domain?: string): string {
    return this.opN(op, inputs, 1, attrs, domain)[0]!;
  }

  /** Route a value to a fixed graph-output name. */
  output(value: string, name: string, shape: Dim[], dataType: DataTypeId = DataType.FLOAT): void {
    this.nodes.push({ op: 'Identity', inputs: [value], outputs: [name], name: this.fresh('Output') });
    this.outputs.push({ name, dataType, shape });
  }

  input(name: string, shape: Dim[], dataType: DataTypeId = DataType.FLOAT): string {
    this.inputs.push({ name, dataType, shape });
    return name;
  }

  /** An int64 constant (shapes, axes, indices), shared between uses. */
  ints(values: number[], scalar = false): string {
    const r = this.root;
    const key = `i${scalar ? 's' : ''}:${values.join(',')}`;
    const cached = r.constCache.get(key);
    if (cached) return cached;
    const name = `const_${r.counter++}`;
    r.consts.push({ name, dataType: DataType.INT64, dims: scalar ? [] : [values.length], raw: int64Bytes(values) });
    r.constCache.set(key, name);
    return name;
  }

  /** A float32 scalar constant. */
  float(value: number): string {
    const r = this.root;
    const key = `f:${value}`;
    const cached = r.constCache.get(key);
    if (cached) return cached;
    const name = `const_${r.counter++}`;
    r.consts.push({ name, dataType: DataType.FLOAT, dims: [], raw: floatBytes([value]) });
    r.constCache.set(key, name);
    return name;
  }

  /**
   * A model weight, stored in the given dtype. 16-bit weights are widened by a Cast on an initializer,
   * which ONNX Runtime folds once at session creation: f16 halves what is stored and transferred.
   */
  weight(name: string, dims: number[], data: Float32Array, dtype: WeightDtype = 'f32'): string {
    const r = this.root;
    const seen = r.weightValues.get(name);
    if (seen) return seen; // a tied weight used twice is stored once
    if (data.length !== dims.reduce((a, b) => a * b, 1)) throw new Error(`weight ${name}: data does not match ${dims}`);
    r.weights.push({ name, dims, data, dtype });
    const value = dtype === 'f32' ? name : r.op('Cast', [name], { to: DataType.FLOAT });
    r.weightValues.set(name, value);
    return value;
  }

  /**
   * An initializer stored exactly as given (quantised codes, scales, zero points): `data` is a typed array
   * whose elements are `dataType` values.
   */
  initializer(
    name: string,
    dataType: DataTypeId,
    dims: number[],
    data: Int8Array | Uint8Array | Float32Array | Int32Array | BigInt64Array,
  ): string {
    const r = this.root;
    const seen = r.weightValues.get(name);
    if (seen) return seen;
    if (data.length !== dims.reduce((a, c) => a * c, 1))
      throw new Error(`initializer ${name}: data does not match ${dims}`);
    const raw = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    r.weights.push({ name, dims, raw, dataType });
    r.weightValues.set(name, name);
    return name;
  }

  /** Build something once per graph (a weight's quantised form shared by two uses), keyed by name. */
  once<T>(key: string, make: () => T): T {
    const r = this.root;
    if (r.memos.has(key)) return r.memos.get(key) as T;
    const value = make();
    r.memos.set(key, value);
    return value;
  }

  /** Give a value a fixed name (an Identity node), so that later passes can find it. */
  named(value: string, name: string): string {
    this.nodes.push({ op: 'Identity', inputs: [value], outputs: [name], name: this.fresh('Named') });
    return name;
  }

  // ---- small helpers that keep graph code short ----
  add = (a: string, b: string): string => this.op('Add', [a, b]);
  sub = (a: string, b: string): string => this.op('Sub', [a, b]);
  mul = (a: string, b: string): string => this.op('Mul', [a, b]);
  div = (a: string, b: string): string => this.op('Div', [a, b]);
  matmul = (a: string, b: string): string => this.op('MatMul', [a, b]);
  sigmoid = (a: string): string => this.op('Sigmoid', [a]);
  silu = (a: string): string => this.mul(a, this.sigmoid(a));
  exp = (a: string): string => this.op('Exp', [a]);
  reshape = (a: string, shape: number[]): string => this.op('Reshape', [a, this.ints(shape)]);
  /** Reshape to a shape mixing constants and [1]-shaped int64 tensors (dynamic dimensions). */
  reshapeTo = (a: string, parts: (number | string)[]): string =>
    this.op('Reshape', [
      a,
      this.concat(
        parts.map((p) => (typeof p === 'number' ? this.ints([p]) : p)),
        0,
      ),
    ]);
  transpose = (a: string, perm: number[]): string => this.op('Transpose', [a], { perm });
  unsqueeze = (a: string, axes: number[]): string => this.op('Unsqueeze', [a, this.ints(axes)]);
  squeeze = (a: string, axes: number[]): string => this.op('Squeeze', [a, this.ints(axes)]);
  concat = (xs: string[], axis: number): string => this.op('Concat', xs, { axis });
  cast = (a: string, to: DataTypeId): string => this.op('Cast', [a], { to });

  /** Slice along one axis; `start`/`end` may be constants or int64 tensor names of shape [1]. */
  slice(x: string, axis: number, start: number | string, end: number | string): string {
    const s = typeof start === 'number' ? this.ints([start]) : start;
    const e = typeof end === 'number' ? this.ints([end]) : end;
    return this.op('Slice', [x, s, e, this.ints([axis])]);
  }

  /** Split the last axis into pieces of the given widths. */
  split(x: string, axis: number, widths: number[]): string[] {
    return this.opN('Split', [x, this.ints(widths)], widths.length, { axis });
  }

  /** Dimension `axis` of x as an int64 tensor of shape [1]. */
  dim(x: string, axis: number): string {
    return this.op('Shape', [x], { start: axis, end: axis + 1 });
  }
}

/** The int64 "to the end" sentinel for Slice. */
export const TO_END = 2 ** 53 - 1;
