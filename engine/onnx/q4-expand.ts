// Expand a q4 stage graph to its int8 execution form in JS, before ONNX Runtime sees it.
//
// A q4 graph is loadable as is: ORT constant-folds the expansion (onnx/quantized.ts q4ToInt8) at session
// creation. But folding keeps every fp32 intermediate alive (measured: the 30 MB of q4 matmul weights of
// a Hymba-1.5B layer grew the process by 2.6 GB, in a WASM heap that never shrinks), far beyond a
// Worker's 128 MB. This pass does the same arithmetic row by row in JS (quantize.ts requantizeQ4ToInt8,
// bit-identical), stores the int8 codes and scales as initializers, and drops the expansion nodes and
// the q4 tensors: the result is the int8 graph.
//
// It edits the serialised ModelProto in place of a full decode: only GraphProto's node (1) and initializer
// (5) entries are read; every other byte is copied through.

import { requantizeQ4ToInt8, transposeInt8, type Q4Weight } from '../convert/quantize.js';
import { DataType, encodeTensor, lengthDelimited } from './proto.js';
import { Q4_EXPAND_SCOPE, Q4_SUFFIX } from './quantized.js';

interface Field {
  no: number;
  wire: number;
  /** bytes [from, to) of the whole field, tag included */
  from: number;
  to: number;
  /** wire 2: the body [start, end); wire 0: the value */
  start: number;
  end: number;
  value: number;
}

function varint(buf: Uint8Array, pos: number): [number, number] {
  let v = 0;
  let mul = 1;
  for (;;) {
    const byte = buf[pos++];
    if (byte === undefined) throw new Error('expandQ4Graph: truncated protobuf');
    v += (byte & 0x7f) * mul;
    if (byte < 0x80) return [v, pos];
    mul *= 128;
  }
}

function* fields(buf: Uint8Array, start = 0, end = buf.length): Generator<Field> {
  let pos = start;
  while (pos < end) {
    const from = pos;
    const [tag, p] = varint(buf, pos);
    const no = Math.floor(tag / 8);
    const wire = tag % 8;
    let f: Field;
    if (wire === 0) {
      const [value, q] = varint(buf, p);
      f = { no, wire, from, to: q, start: p, end: q, value };
    } else if (wire === 2) {
      const [len, q] = varint(buf, p);
      f = { no, wire, from, to: q + len, start: q, end: q + len, value: len };
    } else if (wire === 1 || wire === 5) {
      const n = wire === 1 ? 8 : 4;
      f = { no, wire, from, to: p + n, start: p, end: p + n, value: 0 };
    } else throw new Error(`expandQ4Graph: unsupported wire type ${wire}`);
    if (f.to > end) throw new Error('expandQ4Graph: truncated protobuf');
    pos = f.to;
    yield f;
  }
}

const text = (buf: Uint8Array, f: Field): string => new TextDecoder().decode(buf.subarray(f.start, f.end));

interface NodeInfo {
  field: Field;
  name: string;
  /** inputs of the node and of every node in its subgraphs (outer-scope reads) */
  reads: string[];
  outputs: string[];
}

/** Node inputs of a GraphProto, recursively through subgraph attributes. */
function graphReads(buf: Uint8Array, start: number, end: number, out: string[]): void {
  for (const f of fields(buf, start, end)) if (f.no === 1 && f.wire === 2) nodeReads(buf, f, out);
}

function nodeReads(buf: Uint8Array, node: Field, out: string[]): void {
  for (const f of fields(buf, node.start, node.end)) {
    if (f.no === 1 && f.wire === 2) out.push(text(buf, f));
    else if (f.no === 5 && f.wire === 2)
      for (const a of fields(buf, f.start, f.end))
        if ((a.no === 6 || a.no === 11) && a.wire === 2) graphReads(buf, a.start, a.end, out); // g, graphs
  }
}

function parseNode(buf: Uint8Array, node: Field): NodeInfo {
  let name = '';
  const outputs: string[] = [];
  for (const f of fields(buf, node.start, node.end)) {
    if (f.no === 2 && f.wire === 2) outputs.push(text(buf, f));
    else if (f.no === 3 && f.wire === 2) name = text(buf, f);
  }
  const reads: string[] = [];
  nodeReads(buf, node, reads);
  return { field: node, name, reads, outputs };
}

interface TensorInfo {
  field: Field;
  name: string;
  dims: number[];
  raw: Uint8Array | null;
}

function parseTensor(buf: Uint8Array, t: Field): TensorInfo {
  let name = '';
  const dims: number[] = [];
  let raw: Uint8Array | null = null;
  for (const f of fields(buf, t.start, t.end)) {
    if (f.no === 1 && f.wire === 0) dims.push(f.value);
    else if (f.no === 1 && f.wire === 2) {
      for (let p = f.start; p < f.end;) {
        const [d, q] = varint(buf, p);
        dims.push(d);
        p = q;
      }
    } else if (f.no === 8 && f.wire === 2) name = text(buf, f);
    else if (f.no === 9 && f.wire === 2) raw = buf.subarray(f.start, f.end);
  }
  return { field: t, name, dims, raw };
}

function q4Weight(tensors: Map<string, TensorInfo>, name: string): Q4Weight {
  const get = (suffix: string): TensorInfo & { raw: Uint8Array } => {
    const t = tensors.get(name + suffix);
    if (!t || !t.raw) throw new Error(`expandQ4Graph: ${name}${suffix} is missing or not stored as raw data`);
    return t as TensorInfo & { raw: Uint8Array };
  };
  const data = get(Q4_SUFFIX.data);
  const [rows, blocksPerRow, blob] = data.dims as [number, number, number];
  const colsRaw = get(Q4_SUFFIX.cols).raw;
  const cols = Number(new DataView(colsRaw.buffer, colsRaw.byteOffset, 8).getBigInt64(0, true));
  const scalesRaw = get(Q4_SUFFIX.scales).raw;
  return {
    rows,
    cols,
    blockSize: blob * 2,
    blocksPerRow,
    data: data.raw,
    // copy: raw data inside a protobuf is not 4-byte aligned
    scales: new Float32Array(scalesRaw.slice().buffer),
    zeroPoints: get(Q4_SUFFIX.zeroPoints).raw,
  };
}

function concatBytes(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

interface Scan {
  graphField: Field;
  nodes: NodeInfo[];
  tensors: Map<string, TensorInfo>;
  /** q4 weights whose int8 form the expansion names */
  weights: string[];
}

const inScope = (n: NodeInfo): boolean => n.name.split('/').includes(Q4_EXPAND_SCOPE);

function scan(model: Uint8Array): Scan {
  const graphField = [...fields(model)].find((f) => f.no === 7 && f.wire === 2);
  if (!graphField) throw new Error('expandQ4Graph: no graph in the model');
  const nodes: NodeInfo[] = [];
  const tensors = new Map<string, TensorInfo>();
  for (const f of fields(model, graphField.start, graphField.end)) {
    if (f.no === 1 && f.wire === 2) nodes.push(parseNode(model, f));
    else if (f.no === 5 && f.wire === 2) {
      const t = parseTensor(model, f);
      tensors.set(t.name, t);
    }
  }
  const weights = nodes
    .filter(inScope)
    .flatMap((n) => n.outputs)
    .filter((o) => o.endsWith(Q4_SUFFIX.int8))
    .map((o) => o.slice(0, -Q4_SUFFIX.int8.length))
    .filter((w) => tensors.has(w + Q4_SUFFIX.data));
  return { graphField, nodes, tensors, weights };
}

/** Whether a serialised model holds q4 weights that run as int8 (what expandQ4Graph replaces). */
export function hasQ4Expansion(model: Uint8Array): boolean {
  return scan(model).weights.length > 0;
}

/**
 * The int8 execution form of a q4 stage graph (the same bytes when it has no q4 expansion). The result
 * computes exactly what ORT computes from the original, with int8 weights stored instead of q4 ones.
 */
export function expandQ4Graph(model: Uint8Array): Uint8Array {
  const { graphField, nodes, tensors, weights } = scan(model);
  if (weights.length === 0) return model;
  // keep the expansion nodes that something else still needs (a q4 weight run as fp32), drop the rest
  const replaced = new Set(weights.flatMap((w) => [w + Q4_SUFFIX.int8, w + Q4_SUFFIX.int8Scales]));
  const producer = new Map<string, NodeInfo>();
  for (const n of nodes.filter(inScope)) for (const o of n.outputs) producer.set(o, n);
  const kept = new Set(nodes.filter((n) => !inScope(n)));
  const pending = [...kept].flatMap((n) => n.reads).filter((r) => !replaced.has(r));
  for (let r = pending.pop(); r !== undefined; r = pending.pop()) {
    const n = producer.get(r);
    if (!n || kept.has(n)) continue;
    kept.add(n);
    pending.push(...n.reads);
  }
  const readByKept = new Set([...kept].flatMap((n) => n.reads));
  const droppedNodes = new Set(nodes.filter((n) => !kept.has(n)).map((n) => n.field.from));
  const droppedTensors = new Set([...tensors.values()].filter((t) => !readByKept.has(t.name)).map((t) => t.field.from));

  const added: Uint8Array[] = [];
  for (const w of weights) {
    const int8 = requantizeQ4ToInt8(q4Weight(tensors, w));
    const codes = transposeInt8(int8);
    added.push(
      lengthDelimited(
        5,
        encodeTensor({
          name: w + Q4_SUFFIX.int8,
          dataType: DataType.INT8,
          dims: [int8.cols, int8.rows],
          raw: new Uint8Array(codes.buffer),
        }),
      ),
      lengthDelimited(
        5,
        encodeTensor({
          name: w + Q4_SUFFIX.int8Scales,
          dataType: DataType.FLOAT,
          dims: [int8.rows],
          raw: new Uint8Array(int8.scales.buffer),
        }),
      ),
    );
  }
  const graphParts: Uint8Array[] = [];
  for (const f of fields(model, graphField.start, graphField.end)) {
    if (f.no === 1 && f.wire === 2 && droppedNodes.has(f.from)) continue;
    if (f.no === 5 && f.wire === 2 && droppedTensors.has(f.from)) continue;
    graphParts.push(model.subarray(f.from, f.to));
  }
  const graph = concatBytes([...graphParts, ...added]);
  const modelParts: Uint8Array[] = [];
  for (const f of fields(model))
    modelParts.push(f.from === graphField.from ? lengthDelimited(7, graph) : model.subarray(f.from, f.to));
  return concatBytes(modelParts);
}
