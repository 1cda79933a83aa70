// Hymba config.json: parsing, validation, and the derived dimensions every other module uses.
// Keys keep their snake_case spelling from the Hugging Face file; derived values are computed once.

/** The keys of a Hymba `config.json` that change the maths, spelled as in the file. */
export interface HymbaConfig {
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  attn_hidden_size: number; // -1 = hidden_size
  kq_head_dim: number; // -1 = hidden_size / heads
  v_head_dim: number; // informative: the code recomputes it as d_inner / heads
  intermediate_size: number;
  mlp_hidden_act: string;
  hidden_act: string;
  vocab_size: number;
  mamba_d_state: number;
  mamba_d_conv: number;
  mamba_expand: number;
  mamba_dt_rank: number;
  mamba_conv_bias: boolean;
  mamba_proj_bias: boolean;
  mamba_inner_layernorms: boolean;
  num_mamba: number;
  num_memory_tokens: number;
  memory_tokens_interspersed_every: number;
  sliding_window: number | null;
  global_attn_idx: number[];
  kv_reuse_group: number[][] | null;
  kv_reuse_every_i_layer: number;
  rope: boolean;
  rope_theta: number;
  rope_type: string;
  max_position_embeddings: number;
  orig_max_position_embeddings: number;
  rms_norm_eps: number;
  tie_word_embeddings: boolean;
  bos_token_id: number;
  eos_token_id: number;
  pad_token_id: number;
  num_experts: number;
  kq_norm: string;
  conv_dim: Record<string, number> | null;
  layer_type: string[] | null;
}

/** How one layer attends and where its K/V live. */
export interface LayerRole {
  index: number;
  /** global layers see every earlier key; sliding layers see the meta tokens plus the last W keys */
  attention: 'global' | 'sliding';
  /** a producer computes K/V from its own in_proj; a consumer reads its producer's cache */
  kv: { kind: 'producer' } | { kind: 'consumer'; producer: number };
}

/** Dimensions derived once from a validated config (symbols as in docs/model.md). */
export interface HymbaDims {
  H: number; // hidden size
  L: number; // layers
  heads: number;
  kvHeads: number;
  dqk: number; // query/key head width
  dv: number; // value head width = d_in / heads (twice dqk in Hymba-1.5B)
  kHidden: number; // kvHeads * dqk
  vHidden: number; // kvHeads * dv
  dIn: number; // d_inner = expand * H
  dState: number; // N
  dConv: number;
  dtRank: number;
  I: number; // MLP width
  V: number; // vocabulary
  M: number; // meta (memory) tokens
  W: number; // sliding window; Infinity when the config has none
  eps: number;
  ropeBase: number; // after the static NTK base change
  maxPositions: number;
  layers: LayerRole[];
}

export interface ModelConfig {
  config: HymbaConfig;
  dims: HymbaDims;
}

export class ConfigError extends Error {
  constructor(
    readonly key: string,
    readonly value: unknown,
    reason: string,
  ) {
    super(`config.json: ${key} = ${JSON.stringify(value)}: ${reason}`);
    this.name = 'ConfigError';
  }
}

type Json = Record<string, unknown>;

const DEFAULTS: Partial<HymbaConfig> = {
  attn_hidden_size: -1,
  kq_head_dim: -1,
  mlp_hidden_act: 'silu',
  hidden_act: 'silu',
  mamba_d_state: 16,
  mamba_d_conv: 4,
  mamba_expand: 2,
  mamba_conv_bias: true,
  mamba_proj_bias: false,
  mamba_inner_layernorms: true,
  num_mamba: 1,
  num_memory_tokens: 0,
  memory_tokens_interspersed_every: 0,
  sliding_window: null,
  global_attn_idx: [],
  kv_reuse_group: null,
  kv_reuse_every_i_layer: -1,
  rope: true,
  rope_theta: 10000,
  rope_type: 'default',
  rms_norm_eps: 1e-6,
  tie_word_embeddings: true,
  bos_token_id: 1,
  eos_token_id: 2,
  pad_token_id: 0,
  num_experts: 1,
  kq_norm: 'none',
  conv_dim: null,
  layer_type: null,
};

function int(raw: Json, key: string, min = 0): number {
  const v = raw[key] ?? DEFAULTS[key as keyof HymbaConfig];
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new ConfigError(key, v, 'expected an integer');
  if (v < min) throw new ConfigError(key, v, `expected an integer >= ${min}`);
  return v;
}

function num(raw: Json, key: string): number {
  const v = raw[key] ?? DEFAULTS[key as keyof HymbaConfig];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ConfigError(key, v, 'expected a number');
  return v;
}

function bool(raw: Json, key: string): boolean {
  const v = raw[key] ?? DEFAULTS[key as keyof HymbaConfig];
  if (typeof v !== 'boolean') throw new ConfigError(key, v, 'expected true or false');
  return v;
}

function str(raw: Json, key: string): string {
  const v = raw[key] ?? DEFAULTS[key as keyof HymbaConfig];
  if (typeof v !== 'string') throw new ConfigError(key, v, 'expected a string');
  return v;
}

function intList(raw: Json, key: string): number[] {
  const v = raw[key] ?? DEFAULTS[key as keyof HymbaConfig];
  if (v === null) return [];
  if (!Array.isArray(v) || !v.every((x) => Number.isInteger(x)))
    throw new ConfigError(key, v, 'expected a list of integers');
  return v as number[];
}

/** Parse a config.json object, keeping only the keys that change the maths, with defaults as in HF. */
export function parseConfig(raw: unknown): HymbaConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw new ConfigError('(root)', raw, 'config.json must be a JSON object');
  const r = raw as Json;
  const rawGroups = r.kv_reuse_group ?? null;
  if (
    rawGroups !== null &&
    !(Array.isArray(rawGroups) && rawGroups.every((g) => Array.isArray(g) && g.every((x) => Number.isInteger(x))))
  )
    throw new ConfigError('kv_reuse_group', rawGroups, 'expected a list of lists of layer indices');
  const window = r.sliding_window ?? null;
  if (window !== null && (typeof window !== 'number' || !Number.isInteger(window) || window < 1))
    throw new ConfigError('sliding_window', window, 'expected a positive integer or null');
  const convDim = r.conv_dim ?? null;
  if (convDim !== null && (typeof convDim !== 'object' || Array.isArray(convDim)))
    throw new ConfigError('conv_dim', convDim, 'expected an object of layer -> width');
  const layerType = r.layer_type ?? null;
  if (layerType !== null && (!Array.isArray(layerType) || !layerType.every((t) => typeof t === 'string')))
    throw new ConfigError('layer_type', layerType, 'expected a list of strings');
  const hidden = int(r, 'hidden_size', 1);
  const dtRankRaw = r.mamba_dt_rank ?? 'auto';
  const dtRank = dtRankRaw === 'auto' ? Math.ceil(hidden / 16) : int(r, 'mamba_dt_rank', 1);
  return {
    hidden_size: hidden,
    num_hidden_layers: int(r, 'num_hidden_layers', 1),
    num_attention_heads: int(r, 'num_attention_heads', 1),
    num_key_value_heads: int(r, 'num_key_value_heads', 1),
    attn_hidden_size: int(r, 'attn_hidden_size', -1),
    kq_head_dim: int(r, 'kq_head_dim', -1),
    v_head_dim: r.v_head_dim === undefined ? -1 : int(r, 'v_head_dim', -1),
    intermediate_size: int(r, 'intermediate_size', 1),
    mlp_hidden_act: str(r, 'mlp_hidden_act'),
    hidden_act: str(r, 'hidden_act'),
    vocab_size: int(r, 'vocab_size', 1),
    mamba_d_state: int(r, 'mamba_d_state', 1),
    mamba_d_conv: int(r, 'mamba_d_conv', 1),
    mamba_expand: int(r, 'mamba_expand', 1),
    mamba_dt_rank: dtRank,
    mamba_conv_bias: bool(r, 'mamba_conv_bias'),
    mamba_proj_bias: bool(r, 'mamba_proj_bias'),
    mamba_inner_layernorms: bool(r, 'mamba_inner_layernorms'),
    num_mamba: int(r, 'num_mamba', 0),
    num_memory_tokens: int(r, 'num_memory_tokens', 0),
    memory_tokens_interspersed_every: int(r, 'memory_tokens_interspersed_every', 0),
    sliding_window: window as number | null,
    global_attn_idx: intList(r, 'global_attn_idx'),
    kv_reuse_group: rawGroups as number[][] | null,
    kv_reuse_every_i_layer: int(r, 'kv_reuse_every_i_layer', -1),
    rope: bool(r, 'rope'),
    rope_theta: num(r, 'rope_theta'),
    rope_type: r.rope_type === null ? 'default' : str(r, 'rope_type'),
    max_position_embeddings: int(r, 'max_position_embeddings', 1),
    orig_max_position_embeddings:
      r.orig_max_position_embeddings == null
        ? int(r, 'max_position_embeddings', 1)
        : int(r, 'orig_max_position_embeddings', 1),
    rms_norm_eps: num(r, 'rms_norm_eps'),
    tie_word_embeddings: bool(r, 'tie_word_embeddings'),
    bos_token_id: int(r, 'bos_token_id', 0),
    eos_token_id: eosId(r),
    pad_token_id: r.pad_token_id === null ? 0 : int(r, 'pad_token_id', 0),
    num_experts: int(r, 'num_experts', 1),
    kq_norm: r.kq_norm === null ? 'none' : str(r, 'kq_norm'),
    conv_dim: convDim as Record<string, number> | null,
    layer_type: layerType as string[] | null,
  };
}

function eosId(r: Json): number {
  // generation configs sometimes give a list; the model config keeps the first one
  const v = r.eos_token_id;
  if (Array.isArray(v) && v.length > 0 && Number.isInteger(v[0])) return v[0] as number;
  return int(r, 'eos_token_id', 0);
}

/** Reject what the engine cannot honour, naming the key and the value. */
function checkSupported(c: HymbaConfig): void {
  const fail = (key: keyof HymbaConfig, why: string): never => {
    throw new ConfigError(key, c[key], why);
  };
  if (c.num_experts !== 1) fail('num_experts', 'only a single MLP expert (no router) is supported');
  if (c.memory_tokens_interspersed_every > 0)
    fail('memory_tokens_interspersed_every', 'interspersed meta tokens are not supported');
  if (c.kq_norm !== 'none') fail('kq_norm', 'only "none" is supported');
  if (c.rope_type !== 'ntk' && c.rope_type !== 'default') fail('rope_type', 'only "ntk" and "default" are supported');
  if (!c.rope) fail('rope', 'attention without RoPE is not supported');
  if (c.mlp_hidden_act !== 'silu') fail('mlp_hidden_act', 'only "silu" (gated MLP) is supported');
  if (c.hidden_act !== 'silu') fail('hidden_act', 'only "silu" is supported');
  if (c.num_mamba !== 1) fail('num_mamba', 'exactly one SSM per layer is supported');
  if (!c.mamba_inner_layernorms) fail('mamba_inner_layernorms', 'only true is supported');
  if (c.mamba_proj_bias) fail('mamba_proj_bias', 'projection biases are not supported');
  if (!c.mamba_conv_bias) fail('mamba_conv_bias', 'only true is supported');
  if (!c.tie_word_embeddings) fail('tie_word_embeddings', 'only tied embeddings are supported');
  if (c.attn_hidden_size !== -1 && c.attn_hidden_size !== c.hidden_size)
    fail('attn_hidden_size', 'must be -1 or hidden_size');
  if (c.hidden_size % c.num_attention_heads !== 0)
    fail('num_attention_heads', `must divide hidden_size ${c.hidden_size}`);
  if (c.num_attention_heads % c.num_key_value_heads !== 0)
    fail('num_key_value_heads', `must divide num_attention_heads ${c.num_attention_heads}`);
  const dqk = c.hidden_size / c.num_attention_heads;
  if (c.kq_head_dim !== -1 && c.kq_head_dim !== dqk) fail('kq_head_dim', `must be -1 or ${dqk}`);
  if (dqk % 2 !== 0) fail('num_attention_heads', 'the query/key head width must be even for RoPE');
  const dIn = c.mamba_expand * c.hidden_size;
  if (dIn % c.num_attention_heads !== 0) fail('mamba_expand', 'd_inner must divide evenly into the heads');
  const L = c.num_hidden_layers;
  for (const i of c.global_attn_idx) if (i < 0 || i >= L) fail('global_attn_idx', `layer ${i} is outside 0..${L - 1}`);
  if (c.layer_type !== null) {
    if (c.layer_type.length !== L) fail('layer_type', `must list ${L} layers`);
    if (c.layer_type.some((t) => t !== 'h')) fail('layer_type', 'only hybrid "h" layers are supported');
  }
  if (c.conv_dim !== null)
    for (const [k, v] of Object.entries(c.conv_dim))
      if (v !== dIn) fail('conv_dim', `layer ${k} has width ${v}, expected d_inner ${dIn}`);
}

/** The KV role of every layer: from kv_reuse_group, else kv_reuse_every_i_layer, else all producers. */
function layerRoles(c: HymbaConfig): LayerRole[] {
  const L = c.num_hidden_layers;
  const producerOf: (number | null)[] = new Array<number | null>(L).fill(null);
  if (c.kv_reuse_group !== null) {
    const seen = new Set<number>();
    for (const group of c.kv_reuse_group) {
      if (group.length < 2) throw new ConfigError('kv_reuse_group', group, 'a group needs a producer and a consumer');
      for (const i of group) {
        if (i < 0 || i >= L) throw new ConfigError('kv_reuse_group', group, `layer ${i} is outside 0..${L - 1}`);
        if (seen.has(i)) throw new ConfigError('kv_reuse_group', group, `layer ${i} is in two groups`);
        seen.add(i);
      }
      for (const consumer of group.slice(1)) {
        if (consumer <= group[0]!)
          throw new ConfigError('kv_reuse_group', group, 'consumers must come after their producer');
        producerOf[consumer] = group[0]!;
      }
    }
  } else if (c.kv_reuse_every_i_layer > 0) {
    const every = c.kv_reuse_every_i_layer;
    for (let i = 0; i < L; i++) if (i % every !== 0) producerOf[i] = i - (i % every);
  }
  const global = new Set(c.global_attn_idx);
  const attention = (i: number): 'global' | 'sliding' =>
    c.sliding_window === null || global.has(i) ? 'global' : 'sliding';
  return producerOf.map((p, index) => {
    if (p === null) return { index, attention: attention(index), kv: { kind: 'producer' } };
    // a consumer reads its producer's cache as stored, so both must keep the same keys
    if (attention(p) !== attention(index))
      throw new ConfigError(
        'global_attn_idx',
        c.global_attn_idx,
        `layer ${index} (${attention(index)}) shares K/V with layer ${p} (${attention(p)})`,
      );
    return { index, attention: attention(index), kv: { kind: 'consumer', producer: p } };
  });
}

/** Static NTK base change (docs/model.md, "RoPE"): base = theta * (2*max/orig - 1)^(d/(d-2)). */
function ropeBase(c: HymbaConfig, dqk: number): number {
  if (c.rope_type !== 'ntk') return c.rope_theta;
  const factor = (2 * c.max_position_embeddings) / c.orig_max_position_embeddings - 1;
  return c.rope_theta * Math.pow(factor, dqk / (dqk - 2));
}

export function deriveDims(c: HymbaConfig): HymbaDims {
  checkSupported(c);
  const H = c.hidden_size;
  const heads = c.num_attention_heads;
  const kvHeads = c.num_key_value_heads;
  const dqk = H / heads;
  const dIn = c.mamba_expand * H;
  const dv = dIn / heads;
  return {
    H,
    L: c.num_hidden_layers,
    heads,
    kvHeads,
    dqk,
    dv,
    kHidden: kvHeads * dqk,
    vHidden: kvHeads * dv,
    dIn,
    dState: c.mamba_d_state,
    dConv: c.mamba_d_conv,
    dtRank: c.mamba_dt_rank,
    I: c.intermediate_size,
    V: c.vocab_size,
    M: c.num_memory_tokens,
    W: c.sliding_window ?? Infinity,
    eps: c.rms_norm_eps,
    ropeBase: ropeBase(c, dqk),
    maxPositions: c.max_position_embeddings,
    layers: layerRoles(c),
  };
}

/** Parse, validate and derive in one step: the usual entry point. */
export function loadConfig(raw: unknown): ModelConfig {
  const config = parseConfig(raw);
  return { config, dims: deriveDims(config) };
}

/** The inverse RoPE frequencies, rounded to fp32 as the reference code computes them. */
export function ropeInvFreq(dims: HymbaDims): Float32Array {
  const half = dims.dqk / 2;
  const inv = new Float32Array(half);
  for (let j = 0; j < half; j++) inv[j] = 1 / Math.pow(dims.ropeBase, (2 * j) / dims.dqk);
  return inv;
}
