import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile, copyFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CheckpointError,
  loadWeights,
  openCheckpoint,
  validateCheckpoint,
  type CheckpointSource,
} from '../../engine/convert/checkpoint.js';
import { loadConfig } from '../../engine/model/config.js';
import { bf16ToF32, roundToBf16 } from '../../engine/convert/dtype.js';
import {
  parseSafetensorsHeader,
  readTensorBytes,
  readTensorF32,
  SafetensorsError,
  type ByteSource,
} from '../../engine/convert/safetensors.js';
import { safetensorsLayout, SafetensorsWriter, type TensorSpec } from '../../engine/convert/safetensors-writer.js';
import { expectedTensors, type WeightMap } from '../../engine/model/weights.js';
import { dirCheckpointSource, fileByteSource, fileSink } from '../../infra/node-files.js';
import { initTensor, main, makeTestModel, planTestModel } from '../../infra/test-model/make-test-model.js';
import { cutShape, pairGroups, presetConfig, PRESETS, pyJson } from '../../infra/test-model/presets.js';

let root = '';
let tinyDir = '';
const SEED = 7;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'hymba-ckpt-test-'));
  tinyDir = join(root, 'tiny');
  await makeTestModel(tinyDir, { preset: 'tiny', seed: SEED, tokenizer: false });
});

afterAll(async () => {
  if (root !== '') await rm(root, { recursive: true, force: true });
});

/** An in-memory ByteSource; `misalign` returns views at odd byte offsets to exercise the copy path. */
function memSource(bytes: Uint8Array, misalign = false): ByteSource {
  return {
    name: 'mem.safetensors',
    size: async () => bytes.length,
    read: async (offset, length) => {
      if (offset + length > bytes.length) throw new Error('read past end');
      if (!misalign) return bytes.slice(offset, offset + length);
      const buf = new Uint8Array(length + 1);
      buf.set(bytes.subarray(offset, offset + length), 1);
      return buf.subarray(1);
    },
  };
}

/** Write a safetensors file into memory. */
async function toBytes(specs: TensorSpec[], data: Map<string, Float32Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const w = new SafetensorsWriter(specs, async (c) => {
    chunks.push(c);
  });
  for (const name of w.order) await w.write(name, data.get(name)!);
  await w.finish();
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

function headerJsonOf(bytes: Uint8Array): Record<string, unknown> {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  return JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<string, unknown>;
}

function sameBits(a: Float32Array, b: Float32Array): boolean {
  return (
    a.length === b.length &&
    Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))
  );
}

function expectSameWeights(a: WeightMap, b: WeightMap): void {
  expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
  for (const [name, t] of a) {
    const u = b.get(name)!;
    expect(u.dims, name).toEqual(t.dims);
    expect(sameBits(u.data, t.data), name).toBe(true);
  }
}

const sha256 = async (path: string): Promise<string> =>
  createHash('sha256')
    .update(await readFile(path))
    .digest('hex');

async function expectRejects(p: Promise<unknown>, ...parts: (string | RegExp)[]): Promise<Error> {
  let err: unknown = null;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(Error);
  for (const part of parts) expect((err as Error).message).toMatch(part);
  return err as Error;
}

describe('test model layout', () => {
  it('writes config.json with every key of the released config, in HF formatting', async () => {
    const text = await readFile(join(tinyDir, 'config.json'), 'utf8');
    const cfg = JSON.parse(text) as Record<string, unknown>;
    expect(cfg.architectures).toEqual(['HymbaForCausalLM']);
    expect(cfg.model_type).toBe('hymba');
    expect(cfg.torch_dtype).toBe('bfloat16');
    expect(cfg.auto_map).toEqual({
      AutoConfig: 'configuration_hymba.HymbaConfig',
      AutoModelForCausalLM: 'modeling_hymba.HymbaForCausalLM',
    });
    expect(cfg.conv_dim).toEqual(Object.fromEntries(Array.from({ length: 8 }, (_, i) => [String(i), 128])));
    expect(cfg.layer_type).toEqual(Array(8).fill('h'));
    expect(cfg.global_attn_idx).toEqual([0, 4, 7]);
    expect(cfg.kv_reuse_group).toEqual([
      [1, 2, 3],
      [5, 6],
    ]);
    // Python spelling: sorted keys, floats as Python writes them
    expect(text).toContain('"rms_norm_eps": 1e-06,');
    expect(text).toContain('"rope_theta": 10000.0,');
    expect(text).toContain('"attention_dropout": 0.0,');
    const keys = [...text.matchAll(/^ {2}"([^"]+)":/gm)].map((m) => m[1]!);
    expect(keys).toEqual([...keys].sort());
    expect(text.endsWith('}\n')).toBe(true);
    const gen = JSON.parse(await readFile(join(tinyDir, 'generation_config.json'), 'utf8')) as Record<string, unknown>;
    expect(gen).toMatchObject({ bos_token_id: 1, eos_token_id: 2, pad_token_id: 0 });
  });

  it('has the exact hymba-1.5b config of docs/model.md', () => {
    const cfg = JSON.parse(pyJson(presetConfig('hymba-1.5b'))) as Record<string, unknown>;
    expect(cfg).toMatchObject({
      hidden_size: 1600,
      num_hidden_layers: 32,
      num_attention_heads: 25,
      num_key_value_heads: 5,
      attn_hidden_size: -1,
      kq_head_dim: -1,
      v_head_dim: 128,
      intermediate_size: 5504,
      mlp_hidden_act: 'silu',
      hidden_act: 'silu',
      vocab_size: 32001,
      mamba_d_state: 16,
      mamba_d_conv: 4,
      mamba_expand: 2,
      mamba_dt_rank: 100,
      mamba_conv_bias: true,
      mamba_proj_bias: false,
      mamba_inner_layernorms: true,
      num_mamba: 1,
      num_memory_tokens: 128,
      memory_tokens_interspersed_every: 0,
      sliding_window: 1024,
      global_attn_idx: [0, 15, 31],
      kv_reuse_every_i_layer: -1,
      rope: true,
      rope_theta: 10000,
      rope_type: 'ntk',
      max_position_embeddings: 8192,
      orig_max_position_embeddings: 2048,
      rms_norm_eps: 1e-6,
      tie_word_embeddings: true,
      bos_token_id: 1,
      eos_token_id: 2,
      pad_token_id: 0,
      num_experts: 1,
      kq_norm: 'none',
      attn_implementation: 'flex',
      use_cache: false,
      seq_length: 8192,
    });
    expect(cfg.kv_reuse_group).toEqual([
      [1, 2],
      [3, 4],
      [5, 6],
      [7, 8],
      [9, 10],
      [11, 12],
      [13, 14],
      [16, 17, 18],
      [19, 20],
      [21, 22],
      [23, 24],
      [25, 26],
      [27, 28],
      [29, 30],
    ]);
    expect(Object.keys(cfg.conv_dim as object)).toHaveLength(32);
    expect((cfg.conv_dim as Record<string, number>)['31']).toBe(3200);
    const { dims } = loadConfig(cfg);
    expect([dims.dqk, dims.dv, dims.kHidden, dims.vHidden, dims.dIn]).toEqual([64, 128, 320, 640, 3200]);
    // the 1.5B grouping is exactly "pairs, odd runs start with a triple"
    expect(pairGroups(32, [0, 15, 31])).toEqual(cfg.kv_reuse_group);
  });

  it('has the documented smaller presets', () => {
    const small = loadConfig(JSON.parse(pyJson(presetConfig('hymba-125m')))).dims;
    expect([small.L, small.H, small.heads, small.kvHeads, small.I, small.M, small.W, small.dtRank]).toEqual([
      24, 512, 8, 4, 1664, 128, 1024, 32,
    ]);
    expect(small.layers.filter((l) => l.attention === 'global').map((l) => l.index)).toEqual([0, 12, 23]);
    expect(PRESETS['hymba-125m'].groups).toEqual([
      [1, 2, 3],
      [4, 5],
      [6, 7],
      [8, 9],
      [10, 11],
      [13, 14],
      [15, 16],
      [17, 18],
      [19, 20],
      [21, 22],
    ]);
    const mid = loadConfig(JSON.parse(pyJson(presetConfig('hymba-350m')))).dims;
    expect([mid.L, mid.H, mid.heads, mid.kvHeads, mid.I, mid.dtRank, mid.dv]).toEqual([32, 768, 12, 4, 2432, 48, 128]);
    expect(PRESETS['hymba-350m'].groups).toEqual(PRESETS['hymba-1.5b'].groups);
  });

  it('cuts to fewer layers, filtering global layers and dropping groups without consumers', () => {
    expect(cutShape(PRESETS.tiny, 6)).toMatchObject({ layers: 6, global: [0, 4], groups: [[1, 2, 3]] });
    expect(cutShape(PRESETS.tiny, 3)).toMatchObject({ layers: 3, global: [0], groups: [[1, 2]] });
    expect(cutShape(PRESETS.tiny, 2)).toMatchObject({ layers: 2, global: [0], groups: [] });
    expect(() => cutShape(PRESETS.tiny, 9)).toThrow(/1\.\.8/);
    const cfg = presetConfig('tiny', 3);
    expect(Object.keys(cfg.conv_dim as object)).toEqual(['0', '1', '2']);
    expect(cfg.layer_type).toHaveLength(3);
  });

  it('plans a 3-layer hymba-1.5b with the real 1.5B shapes', () => {
    const plan = planTestModel({ preset: 'hymba-1.5b', layers: 3 });
    const shapes = new Map(plan.tensors.map((t) => [t.name, t.shape]));
    expect(plan.dims.layers.map((l) => l.kv.kind)).toEqual(['producer', 'producer', 'consumer']);
    expect(shapes.get('model.embed_tokens.weight')).toEqual([32001, 1600]);
    expect(shapes.get('model.memory_tokens')).toEqual([128, 1600]);
    expect(shapes.get('model.layers.0.mamba.in_proj.weight')).toEqual([8960, 1600]);
    expect(shapes.get('model.layers.2.mamba.in_proj.weight')).toEqual([8000, 1600]);
    expect(shapes.get('model.layers.1.mamba.x_proj.0.weight')).toEqual([132, 3200]);
    expect(shapes.get('model.layers.1.mamba.dt_proj.0.weight')).toEqual([3200, 100]);
    expect(shapes.get('model.layers.1.mamba.conv1d.weight')).toEqual([3200, 1, 4]);
    expect(shapes.get('model.layers.1.moe.experts.0.down_proj.weight')).toEqual([1600, 5504]);
    expect(shapes.has('lm_head.weight')).toBe(false);
    expect(plan.tensors.every((t) => t.dtype === 'BF16')).toBe(true);
    const layout = safetensorsLayout(plan.tensors);
    expect(layout.header.length % 8).toBe(0);
    expect(layout.totalBytes).toBe(
      layout.header.length + plan.tensors.reduce((n, t) => n + 2 * t.shape.reduce((a, b) => a * b, 1), 0),
    );
  });

  it('initialises with well-spread logits and the Mamba conventions', async () => {
    const ckpt = await openCheckpoint(dirCheckpointSource(tinyDir));
    try {
      const { dims } = ckpt;
      const emb = (await ckpt.readTensor('model.embed_tokens.weight')).data;
      const norm = (await ckpt.readTensor('model.final_layernorm.weight')).data;
      // logits of random unit-RMS hidden states through the final norm and the tied head
      const x = new Float32Array(dims.H);
      let sum = 0;
      let sum2 = 0;
      let count = 0;
      for (let trial = 0; trial < 4; trial++) {
        for (let i = 0; i < dims.H; i++) x[i] = Math.sin(1.7 * i + 3.1 * trial) * Math.SQRT2 * norm[i]!;
        for (let v = 0; v < dims.V; v += 7) {
          let l = 0;
          for (let i = 0; i < dims.H; i++) l += x[i]! * emb[v * dims.H + i]!;
          sum += l;
          sum2 += l * l;
          count++;
        }
      }
      const std = Math.sqrt(sum2 / count - (sum / count) ** 2);
      expect(std).toBeGreaterThan(3);
      expect(std).toBeLessThan(5);
      const A = (await ckpt.readTensor('model.layers.3.mamba.A_log.0')).data;
      const logN = roundToBf16(
        Float32Array.from({ length: dims.dState * 2 }, (_, i) => Math.log((i % dims.dState) + 1)),
      );
      expect(Array.from(A.subarray(0, 2 * dims.dState))).toEqual(Array.from(logN)); // A = -(n + 1), bf16-rounded
      expect(Array.from((await ckpt.readTensor('model.layers.3.mamba.D.0')).data).every((d) => d === 1)).toBe(true);
      const dtBias = (await ckpt.readTensor('model.layers.3.mamba.dt_proj.0.bias')).data;
      for (const b of dtBias) {
        const dt = Math.log1p(Math.exp(b));
        expect(dt).toBeGreaterThan(0.00099);
        expect(dt).toBeLessThan(0.101);
      }
      for (const name of ckpt.tensors.keys())
        if (/layernorm\d?\.weight$/.test(name)) {
          const w = (await ckpt.readTensor(name)).data;
          expect(Math.min(...w), name).toBeGreaterThan(0.7);
          expect(Math.max(...w), name).toBeLessThan(1.3);
        }
      const conv = (await ckpt.readTensor('model.layers.0.mamba.conv1d.weight')).data;
      expect(Math.max(...conv.map(Math.abs))).toBeLessThanOrEqual(0.5);
      const inProj = (await ckpt.readTensor('model.layers.0.mamba.in_proj.weight')).data;
      const var_ = inProj.reduce((s, v) => s + v * v, 0) / inProj.length;
      expect(var_ * dims.H).toBeGreaterThan(0.9);
      expect(var_ * dims.H).toBeLessThan(1.1);
    } finally {
      await ckpt.close();
    }
  });
});

describe('reading the test model', () => {
  it('parses the header: sorted, contiguous, 8-byte aligned, bf16, lm_head omitted', async () => {
    const src = fileByteSource(join(tinyDir, 'model.safetensors'));
    try {
      const header = await parseSafetensorsHeader(src);
      expect(header.metadata).toEqual({ format: 'pt' });
      expect(header.dataOffset % 8).toBe(0);
      const { dims } = loadConfig(JSON.parse(await readFile(join(tinyDir, 'config.json'), 'utf8')));
      const expected = expectedTensors(dims);
      expect(new Set(header.tensors.keys())).toEqual(new Set(expected.keys()));
      const names = [...header.tensors.keys()];
      expect(names).toEqual([...names].sort());
      let offset = header.dataOffset;
      for (const [name, info] of header.tensors) {
        expect(info.dtype).toBe('BF16');
        expect(info.shape, name).toEqual(expected.get(name));
        expect(info.begin, name).toBe(offset);
        offset = info.end;
      }
      expect(offset).toBe(header.size);
      expect(header.size).toBe((await stat(join(tinyDir, 'model.safetensors'))).size);
    } finally {
      await src.close();
    }
  });

  it('loads weights equal to the bf16-rounded initial values', async () => {
    const ckpt = await openCheckpoint(dirCheckpointSource(tinyDir));
    try {
      expect(ckpt.files).toEqual(['model.safetensors']);
      expect(ckpt.dims.L).toBe(8);
      expect(ckpt.rawConfig.model_type).toBe('hymba');
      const progress: number[] = [];
      const w = await loadWeights(ckpt, { onTensor: (_n, done) => progress.push(done) });
      expect(w.size).toBe(expectedTensors(ckpt.dims).size);
      expect(progress.at(-1)).toBe(w.size);
      for (const [name, t] of w) {
        const want = roundToBf16(initTensor(name, t.dims, ckpt.dims, SEED));
        expect(sameBits(t.data, want), name).toBe(true);
      }
      await expectRejects(ckpt.readTensor('nope'), /nope is not in the checkpoint/);
    } finally {
      await ckpt.close();
    }
  });

  it('loads a sharded checkpoint (bf16 + f32 shards and an index) to the same weights', async () => {
    const single = await openCheckpoint(dirCheckpointSource(tinyDir));
    const dir = join(root, 'sharded');
    await mkdir(dir);
    await copyFile(join(tinyDir, 'config.json'), join(dir, 'config.json'));
    const names = [...single.tensors.keys()];
    const shards = [
      { file: 'model-00001-of-00002.safetensors', names: names.filter((_, i) => i % 2 === 0) },
      { file: 'model-00002-of-00002.safetensors', names: names.filter((_, i) => i % 2 === 1) },
    ];
    const weightMap: Record<string, string> = {};
    let total = 0;
    // shard 1 keeps the raw bf16 bytes; shard 2 is re-encoded as f32 (bf16 values are exact in f32)
    for (const [k, shard] of shards.entries()) {
      const dtype = k === 0 ? 'BF16' : 'F32';
      const sink = await fileSink(join(dir, shard.file));
      const specs = shard.names.map((name) => ({ name, dtype, shape: single.tensors.get(name)!.shape }) as const);
      const writer = new SafetensorsWriter(specs, sink.write);
      const src = fileByteSource(join(tinyDir, 'model.safetensors'));
      for (const name of writer.order) {
        const info = single.tensors.get(name)!;
        if (dtype === 'BF16') await writer.writeBytes(name, await readTensorBytes(src, info));
        else await writer.write(name, await readTensorF32(src, info));
        weightMap[name] = shard.file;
      }
      await writer.finish();
      await src.close();
      total += sink.bytesWritten;
      await sink.close();
    }
    await writeFile(
      join(dir, 'model.safetensors.index.json'),
      JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2),
    );
    const sharded = await openCheckpoint(dirCheckpointSource(dir));
    try {
      expect(sharded.files).toEqual(shards.map((s) => s.file));
      expect(sharded.tensors.get(shards[1]!.names[0]!)!.dtype).toBe('F32');
      expectSameWeights(await loadWeights(single), await loadWeights(sharded));
    } finally {
      await sharded.close();
      await single.close();
    }
    // an index that points a tensor at the wrong shard is reported
    const moved = { ...weightMap, [shards[0]!.names[0]!]: shards[1]!.file };
    await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: moved }));
    await expectRejects(
      openCheckpoint(dirCheckpointSource(dir)),
      /is in model-00001-of-00002\.safetensors, but .*index\.json says/,
    );
    // a missing shard is named
    await writeFile(
      join(dir, 'model.safetensors.index.json'),
      JSON.stringify({ weight_map: { ...weightMap, extra: 'model-00003-of-00003.safetensors' } }),
    );
    await expectRejects(openCheckpoint(dirCheckpointSource(dir)), /model-00003-of-00003\.safetensors.*not found/);
    // shard names cannot leave the directory
    await writeFile(
      join(dir, 'model.safetensors.index.json'),
      JSON.stringify({ weight_map: { x: '../x.safetensors' } }),
    );
    await expectRejects(openCheckpoint(dirCheckpointSource(dir)), /plain file name/);
  });
});

describe('checkpoint errors', () => {
  it('lists missing, unexpected and misshapen tensors in one message', async () => {
    const { dims } = planTestModel({ preset: 'tiny' });
    const data = new Map<string, Float32Array>();
    const specs: TensorSpec[] = [];
    for (const [name, shape] of expectedTensors(dims)) {
      if (name === 'model.layers.3.mamba.D.0') continue; // missing
      const s = name === 'model.layers.5.mamba.in_proj.weight' ? [shape[0]! + 1, shape[1]!] : shape; // misshapen
      specs.push({ name, dtype: 'BF16', shape: s });
    }
    specs.push({ name: 'model.layers.8.input_layernorm.weight', dtype: 'F32', shape: [64] }); // unexpected
    specs.push({ name: 'lm_head.weight', dtype: 'BF16', shape: [32001, 64] }); // optional, accepted
    for (const s of specs) data.set(s.name, new Float32Array(s.shape.reduce((a, b) => a * b, 1)));
    const dir = join(root, 'broken');
    await mkdir(dir);
    await copyFile(join(tinyDir, 'config.json'), join(dir, 'config.json'));
    await writeFile(join(dir, 'model.safetensors'), await toBytes(specs, data));

    const err = await expectRejects(
      openCheckpoint(dirCheckpointSource(dir)),
      /1 missing, 1 unexpected, 1 misshapen/,
      /missing \(1\):\n\s+model\.layers\.3\.mamba\.D\.0 \[128\]/,
      /unexpected \(1\):\n\s+model\.layers\.8\.input_layernorm\.weight \[64\]/,
      /model\.layers\.5\.mamba\.in_proj\.weight: expected \[416, 64\], got \[417, 64\]/,
    );
    expect(err).toBeInstanceOf(CheckpointError);
    const ce = err as CheckpointError;
    expect(ce.missing).toEqual(['model.layers.3.mamba.D.0']);
    expect(ce.unexpected).toEqual(['model.layers.8.input_layernorm.weight']);
    expect(ce.misshapen).toEqual([
      { name: 'model.layers.5.mamba.in_proj.weight', expected: [416, 64], actual: [417, 64] },
    ]);
    expect(ce.message).not.toMatch(/lm_head/);
    // without validation it opens, and the damage is visible in the infos
    const ckpt = await openCheckpoint(dirCheckpointSource(dir), { validate: false });
    expect(ckpt.tensors.get('lm_head.weight')!.shape).toEqual([32001, 64]);
    await ckpt.close();
  });

  it('validates lm_head when present, and accepts a clean map', () => {
    const { dims } = planTestModel({ preset: 'tiny' });
    const infos = new Map([...expectedTensors(dims)].map(([n, shape]) => [n, { shape }]));
    expect(() => validateCheckpoint(dims, infos)).not.toThrow();
    infos.set('lm_head.weight', { shape: [dims.V, dims.H] });
    expect(() => validateCheckpoint(dims, infos)).not.toThrow();
    infos.set('lm_head.weight', { shape: [dims.H, dims.V] });
    expect(() => validateCheckpoint(dims, infos)).toThrow(/lm_head\.weight: expected \[32001, 64\], got \[64, 32001\]/);
  });

  it('reports a missing config or weights file', async () => {
    const empty: CheckpointSource = { readText: async () => null, open: async () => null };
    await expectRejects(openCheckpoint(empty), /config\.json not found/);
    const dir = join(root, 'no-weights');
    await mkdir(dir);
    await copyFile(join(tinyDir, 'config.json'), join(dir, 'config.json'));
    await expectRejects(
      openCheckpoint(dirCheckpointSource(dir)),
      /neither model\.safetensors nor model\.safetensors\.index\.json/,
    );
  });

  it('gives a clear error for corrupt headers', async () => {
    const good = await toBytes([{ name: 'a', dtype: 'F32', shape: [2] }], new Map([['a', new Float32Array([1, 2])]]));
    const header = (json: string, extra = 0): Uint8Array => {
      const text = new TextEncoder().encode(json);
      const out = new Uint8Array(8 + text.length + extra);
      new DataView(out.buffer).setUint32(0, text.length, true);
      out.set(text, 8);
      return out;
    };
    const cases: [Uint8Array, RegExp][] = [
      [new Uint8Array(5), /only 5 bytes, too short/],
      [Uint8Array.from([0, 0, 0, 0, 1, 0, 0, 0, 123]), /header length 4294967296 is not sane/],
      [Uint8Array.from([200, 0, 0, 0, 0, 0, 0, 0, 123]), /header length 200 runs past the end of the file \(9 bytes\)/],
      [header('{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]'), /not valid JSON/],
      [header('[1, 2]'), /not an object/],
      [Uint8Array.from([4, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe, 0x7b, 0x7d]), /not valid UTF-8/],
      [
        header(
          '{"b": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}, "c": {"dtype": "F64", "shape": [], "data_offsets": [8, 16]}}',
          16,
        ),
        /unsupported dtype \(supported: BF16, F16, F32\) in 2 tensor\(s\):\n\s+b \(I64\)\n\s+c \(F64\)/,
      ],
      [
        header('{"a": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 8]}}', 8),
        /a: BF16 \[3\] needs 6 bytes, data_offsets \[0, 8\] hold 8/,
      ],
      [
        header('{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 8]}}', 8),
        /shape \[-1\] is not a list of non-negative integers/,
      ],
      [
        header('{"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}', 8),
        /data_offsets \[8,0\] is not \[begin, end\]/,
      ],
      [
        header(
          '{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}',
          12,
        ),
        /b overlaps a/,
      ],
      [header('{"__metadata__": {"format": 1}}'), /__metadata__ must be an object of strings/],
      [
        good.subarray(0, good.length - 1),
        /a: data ends at byte \d+, past the end of the file \(\d+ bytes\): the file is truncated/,
      ],
    ];
    for (const [bytes, msg] of cases) {
      const err = await expectRejects(parseSafetensorsHeader(memSource(bytes)), msg, /^mem\.safetensors: /);
      expect(err).toBeInstanceOf(SafetensorsError);
    }
    expect((await parseSafetensorsHeader(memSource(good))).tensors.get('a')).toMatchObject({
      dtype: 'F32',
      shape: [2],
    });
  });

  it('reports a truncated model file when opening the checkpoint', async () => {
    const dir = join(root, 'truncated');
    await mkdir(dir);
    await copyFile(join(tinyDir, 'config.json'), join(dir, 'config.json'));
    const bytes = await readFile(join(tinyDir, 'model.safetensors'));
    await writeFile(join(dir, 'model.safetensors'), bytes.subarray(0, Math.floor(bytes.length / 2)));
    await expectRejects(openCheckpoint(dirCheckpointSource(dir)), /model\.safetensors: invalid header:/, /truncated/);
    await writeFile(join(dir, 'model.safetensors'), bytes.subarray(0, 100));
    await expectRejects(openCheckpoint(dirCheckpointSource(dir)), /runs past the end of the file \(100 bytes\)/);
  });
});

describe('safetensors writer and reader', () => {
  it('reads f16, bf16 and f32 tensors, also from misaligned buffers', async () => {
    const values = new Float32Array([0, -0, 1, -2.5, 65504, 2 ** -24, 1 / 3, -7]);
    const specs: TensorSpec[] = [
      { name: 'h', dtype: 'F16', shape: [2, 4] },
      { name: 'b', dtype: 'BF16', shape: [8] },
      { name: 'f', dtype: 'F32', shape: [4, 2] },
      { name: 'empty', dtype: 'BF16', shape: [0, 3] },
      { name: 'scalar', dtype: 'F32', shape: [] },
    ];
    const data = new Map([
      ['h', values],
      ['b', values],
      ['f', values],
      ['empty', new Float32Array(0)],
      ['scalar', new Float32Array([42])],
    ]);
    const bytes = await toBytes(specs, data);
    const json = headerJsonOf(bytes);
    expect(Object.keys(json)).toEqual(['__metadata__', 'f', 'scalar', 'b', 'empty', 'h']); // dtype order, then name
    for (const misalign of [false, true]) {
      const src = memSource(bytes, misalign);
      const header = await parseSafetensorsHeader(src);
      const read = async (n: string): Promise<number[]> => Array.from(await readTensorF32(src, header.tensors.get(n)!));
      expect(await read('f')).toEqual(Array.from(values));
      expect(await read('b')).toEqual(Array.from(roundToBf16(values.slice())));
      expect(await read('h')).toEqual([0, -0, 1, -2.5, 65504, 2 ** -24, 0.333251953125, -7]);
      expect(await read('empty')).toEqual([]);
      expect(await read('scalar')).toEqual([42]);
    }
    // the bf16 bytes are the RNE-rounded values
    const src = memSource(bytes);
    const header = await parseSafetensorsHeader(src);
    const raw = await readTensorBytes(src, header.tensors.get('b')!);
    expect(Array.from(bf16ToF32(new Uint16Array(raw.slice().buffer)))).toEqual(Array.from(roundToBf16(values.slice())));
  });

  it('writes the header first with space padding and rejects out-of-order or wrong-sized writes', async () => {
    const chunks: Uint8Array[] = [];
    const w = new SafetensorsWriter(
      [
        { name: 'z', dtype: 'BF16', shape: [3] },
        { name: 'a', dtype: 'BF16', shape: [1] },
      ],
      async (c) => {
        chunks.push(c);
      },
      { metadata: null },
    );
    expect(w.order).toEqual(['a', 'z']);
    await expect(w.write('z', new Float32Array(3))).rejects.toThrow(/expected tensor a next, got z/);
    await expect(w.write('a', new Float32Array(2))).rejects.toThrow(/needs 1 values, got 2/);
    await w.write('a', new Float32Array([1]));
    await expect(w.finish()).rejects.toThrow(/1 tensor\(s\) not written:\n\s+z/);
    await w.write('z', new Float32Array([1, 2, 3]));
    await w.finish();
    const head = chunks[0]!;
    const n = Number(new DataView(head.buffer, head.byteOffset).getBigUint64(0, true));
    expect(n % 8).toBe(0);
    expect(head.length).toBe(8 + n);
    const text = new TextDecoder().decode(head.subarray(8));
    expect(text).toMatch(/^\{"a":\{"dtype":"BF16","shape":\[1\],"data_offsets":\[0,2\]\},"z":.*\} *$/);
    expect(text.trimEnd().length + (text.length - text.trimEnd().length)).toBe(n);
    // a failing sink leaves the writer unusable rather than writing a corrupt file
    let calls = 0;
    const failing = new SafetensorsWriter(
      [
        { name: 'a', dtype: 'F32', shape: [1] },
        { name: 'b', dtype: 'F32', shape: [1] },
      ],
      async () => {
        if (++calls === 2) throw new Error('disk full');
      },
    );
    await expect(failing.write('a', new Float32Array([1]))).rejects.toThrow(/disk full/);
    await expect(failing.write('a', new Float32Array([1]))).rejects.toThrow(/earlier write failed/);
    await expect(failing.finish()).rejects.toThrow(/earlier write failed/);
    expect(() =>
      safetensorsLayout([
        { name: 'a', dtype: 'F32', shape: [1] },
        { name: 'a', dtype: 'F32', shape: [1] },
      ]),
    ).toThrow(/listed twice/);
  });
});

describe('test model generation', () => {
  it('is deterministic in the seed', async () => {
    const a = join(root, 'det-a');
    const b = join(root, 'det-b');
    const c = join(root, 'det-c');
    await makeTestModel(a, { preset: 'tiny', layers: 3, seed: 1, tokenizer: false });
    await makeTestModel(b, { preset: 'tiny', layers: 3, seed: 1, tokenizer: false });
    await makeTestModel(c, { preset: 'tiny', layers: 3, seed: 2, tokenizer: false });
    const [ha, hb, hc] = await Promise.all([a, b, c].map((d) => sha256(join(d, 'model.safetensors'))));
    expect(ha).toBe(hb);
    expect(hc).not.toBe(ha);
    expect(await readFile(join(a, 'config.json'), 'utf8')).toBe(await readFile(join(c, 'config.json'), 'utf8'));
    // cutting layers keeps the values of the layers that remain
    const full = await openCheckpoint(dirCheckpointSource(tinyDir));
    const cut = await openCheckpoint(dirCheckpointSource(join(root, 'det-a')));
    const name = 'model.layers.1.moe.experts.0.up_proj.weight';
    expect((await cut.readTensor(name)).dims).toEqual((await full.readTensor(name)).dims);
    expect(sameBits(roundToBf16(initTensor(name, [160, 64], cut.dims, 1)), (await cut.readTensor(name)).data)).toBe(
      true,
    );
    await full.close();
    await cut.close();
  });

  it('runs as a CLI and writes the tokenizer files', async () => {
    const dir = join(root, 'cli');
    const log = console.log;
    console.log = () => {};
    try {
      expect(await main([dir, '--preset', 'tiny', '--layers', '2', '--seed', '5'])).toBe(0);
    } finally {
      console.log = log;
    }
    for (const f of [
      'config.json',
      'generation_config.json',
      'model.safetensors',
      'tokenizer.json',
      'tokenizer_config.json',
    ])
      expect((await stat(join(dir, f))).size, f).toBeGreaterThan(0);
    const ckpt = await openCheckpoint(dirCheckpointSource(dir));
    expect(ckpt.dims.L).toBe(2);
    await ckpt.close();
    await expect(main([dir, '--preset', 'huge'])).rejects.toThrow(/unknown preset huge/);
  });

  it('writes a 2-layer hymba-1.5b with the real 1.5B shapes', async () => {
    const dir = join(root, 'b2');
    const t0 = performance.now();
    await makeTestModel(dir, { preset: 'hymba-1.5b', layers: 2, seed: 3, tokenizer: false });
    const seconds = (performance.now() - t0) / 1000;
    const ckpt = await openCheckpoint(dirCheckpointSource(dir));
    try {
      expect(ckpt.dims).toMatchObject({ H: 1600, L: 2, heads: 25, kvHeads: 5, dv: 128, dIn: 3200, V: 32001, M: 128 });
      expect(ckpt.tensors.get('model.layers.1.mamba.in_proj.weight')!.shape).toEqual([8960, 1600]);
      expect(ckpt.tensors.get('model.layers.0.moe.experts.0.gate_proj.weight')!.shape).toEqual([5504, 1600]);
      const d = (await ckpt.readTensor('model.layers.1.mamba.D.0')).data;
      expect(d.length).toBe(3200);
      expect(d.every((x) => x === 1)).toBe(true);
      expect((await stat(join(dir, 'model.safetensors'))).size).toBeGreaterThan(280e6);
    } finally {
      await ckpt.close();
      await rm(dir, { recursive: true, force: true });
    }
    console.info(`2-layer hymba-1.5b written in ${seconds.toFixed(1)} s`);
  });
});
