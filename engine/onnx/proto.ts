// A minimal protobuf writer for the ONNX messages the graph builder emits (onnx.proto3, IR version 9).
// Only encoding is needed, so a few dozen lines beat a protobuf dependency and its generated code.

class Writer {
  private chunks: Uint8Array[] = [];
  private buf = new Uint8Array(256);
  private pos = 0;

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    this.chunks.push(this.buf.subarray(0, this.pos));
    this.buf = new Uint8Array(Math.max(256, n));
    this.pos = 0;
  }

  varint(v: number | bigint): void {
    let x = BigInt.asUintN(64, BigInt(v));
    this.ensure(10);
    while (x >= 0x80n) {
      this.buf[this.pos++] = Number(x & 0x7fn) | 0x80;
      x >>= 7n;
    }
    this.buf[this.pos++] = Number(x);
  }

  tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }

  bytes(field: number, data: Uint8Array): void {
    this.tag(field, 2);
    this.varint(data.length);
    this.chunks.push(this.buf.subarray(0, this.pos));
    this.chunks.push(data);
    this.buf = new Uint8Array(256);
    this.pos = 0;
  }

  string(field: number, s: string): void {
    this.bytes(field, new TextEncoder().encode(s));
  }

  int(field: number, v: number | bigint): void {
    this.tag(field, 0);
    this.varint(v);
  }

  float(field: number, v: number): void {
    this.tag(field, 5);
    this.ensure(4);
    new DataView(this.buf.buffer, this.buf.byteOffset).setFloat32(this.pos, v, true);
    this.pos += 4;
  }

  finish(): Uint8Array {
    this.chunks.push(this.buf.subarray(0, this.pos));
    const total = this.chunks.reduce((n, c) => n + c.length, 0);
    const out = new Uint8Array(total);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }
}

/** ONNX TensorProto.DataType values used here. */
export const DataType = { FLOAT: 1, UINT8: 2, INT8: 3, INT32: 6, INT64: 7, BOOL: 9, FLOAT16: 10 } as const;
export type DataTypeId = (typeof DataType)[keyof typeof DataType];

export interface TensorInit {
  name: string;
  dataType: DataTypeId;
  dims: number[];
  /** raw little-endian bytes, or a location in an external data file */
  raw?: Uint8Array;
  external?: { location: string; offset: number; length: number };
}

export type AttrValue =
  | { kind: 'int'; v: number }
  | { kind: 'float'; v: number }
  | { kind: 'ints'; v: number[] }
  | { kind: 'string'; v: string }
  | { kind: 'tensor'; v: TensorInit }
  | { kind: 'graph'; v: GraphDef };

export interface NodeDef {
  op: string;
  inputs: string[];
  outputs: string[];
  name: string;
  domain?: string;
  attrs?: Record<string, AttrValue>;
}

/** A dimension is a fixed size or a symbolic name. */
export type Dim = number | string;

export interface ValueInfo {
  name: string;
  dataType: DataTypeId;
  /** null: rank unknown (subgraph outputs) */
  shape: Dim[] | null;
}

export interface GraphDef {
  name: string;
  nodes: NodeDef[];
  initializers: TensorInit[];
  inputs: ValueInfo[];
  outputs: ValueInfo[];
}

function tensorBytes(t: TensorInit): Uint8Array {
  const w = new Writer();
  for (const d of t.dims) w.int(1, d);
  w.int(2, t.dataType);
  w.string(8, t.name);
  if (t.external) {
    const entry = (k: string, v: string): Uint8Array => {
      const e = new Writer();
      e.string(1, k);
      e.string(2, v);
      return e.finish();
    };
    w.bytes(13, entry('location', t.external.location));
    w.bytes(13, entry('offset', String(t.external.offset)));
    w.bytes(13, entry('length', String(t.external.length)));
    w.int(14, 1); // data_location = EXTERNAL
  } else {
    w.bytes(9, t.raw ?? new Uint8Array(0));
  }
  return w.finish();
}

/** A TensorProto's bytes. */
export const encodeTensor = tensorBytes;

/** One length-delimited field (tag, length, body), for splicing messages. */
export function lengthDelimited(field: number, body: Uint8Array): Uint8Array {
  const w = new Writer();
  w.bytes(field, body);
  return w.finish();
}

const ATTR_TYPE = { float: 1, int: 2, string: 3, tensor: 4, graph: 5, ints: 7 } as const;

function attrBytes(name: string, a: AttrValue): Uint8Array {
  const w = new Writer();
  w.string(1, name);
  switch (a.kind) {
    case 'float':
      w.float(2, a.v);
      break;
    case 'int':
      w.int(3, a.v);
      break;
    case 'string':
      w.string(4, a.v);
      break;
    case 'tensor':
      w.bytes(5, tensorBytes(a.v));
      break;
    case 'graph':
      w.bytes(6, graphBytes(a.v));
      break;
    case 'ints':
      for (const v of a.v) w.int(8, v);
      break;
  }
  w.int(20, ATTR_TYPE[a.kind]);
  return w.finish();
}

function nodeBytes(n: NodeDef): Uint8Array {
  const w = new Writer();
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  w.string(3, n.name);
  w.string(4, n.op);
  for (const [k, v] of Object.entries(n.attrs ?? {})) w.bytes(5, attrBytes(k, v));
  if (n.domain) w.string(7, n.domain);
  return w.finish();
}

function valueInfoBytes(v: ValueInfo): Uint8Array {
  const tensorType = new Writer();
  tensorType.int(1, v.dataType);
  if (v.shape) {
    const shape = new Writer();
    for (const d of v.shape) {
      const dim = new Writer();
      if (typeof d === 'number') dim.int(1, d);
      else dim.string(2, d);
      shape.bytes(1, dim.finish());
    }
    tensorType.bytes(2, shape.finish());
  }
  const type = new Writer();
  type.bytes(1, tensorType.finish());
  const w = new Writer();
  w.string(1, v.name);
  w.bytes(2, type.finish());
  return w.finish();
}

function graphBytes(g: GraphDef): Uint8Array {
  const w = new Writer();
  for (const n of g.nodes) w.bytes(1, nodeBytes(n));
  w.string(2, g.name);
  for (const t of g.initializers) w.bytes(5, tensorBytes(t));
  for (const i of g.inputs) w.bytes(11, valueInfoBytes(i));
  for (const o of g.outputs) w.bytes(12, valueInfoBytes(o));
  return w.finish();
}

/** Serialise a ModelProto: IR version 9, the default opset plus Microsoft's contrib domain. */
export function encodeModel(g: GraphDef, opset = 18, producer = 'hymba-edge'): Uint8Array {
  const w = new Writer();
  w.int(1, 9); // ir_version
  w.string(2, producer);
  w.bytes(7, graphBytes(g));
  const op = (domain: string, version: number): Uint8Array => {
    const o = new Writer();
    if (domain) o.string(1, domain);
    o.int(2, version);
    return o.finish();
  };
  w.bytes(8, op('', opset));
  w.bytes(8, op('com.microsoft', 1));
  return w.finish();
}
