// Model sizes for generated test checkpoints, and their config.json / generation_config.json exactly as
// Hugging Face writes them (keys sorted, 2-space indent, Python float spelling).

export type PresetName = 'tiny' | 'hymba-125m' | 'hymba-350m' | 'hymba-1.5b';

export const PRESET_NAMES: readonly PresetName[] = ['tiny', 'hymba-125m', 'hymba-350m', 'hymba-1.5b'];

/** The numbers that differ between sizes. */
export interface PresetShape {
  vocab: number;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  mlp: number;
  dState: number;
  dConv: number;
  expand: number;
  dtRank: number;
  meta: number;
  window: number;
  global: number[];
  groups: number[][];
  maxPositions: number;
  origMaxPositions: number;
}

/**
 * KV sharing as Hymba-1.5B does it: each run of consecutive sliding-window layers is cut into pairs
 * (producer, consumer); a run of odd length starts with a triple. A run of one layer shares nothing.
 */
export function pairGroups(layers: number, global: readonly number[]): number[][] {
  const groups: number[][] = [];
  const isGlobal = new Set(global);
  let i = 0;
  while (i < layers) {
    if (isGlobal.has(i)) {
      i++;
      continue;
    }
    let end = i;
    while (end < layers && !isGlobal.has(end)) end++;
    const run = Array.from({ length: end - i }, (_, k) => i + k);
    if (run.length >= 2) {
      let k = 0;
      if (run.length % 2 === 1) {
        groups.push(run.slice(0, 3));
        k = 3;
      }
      for (; k < run.length; k += 2) groups.push(run.slice(k, k + 2));
    }
    i = end;
  }
  return groups;
}

/** kv_reuse_group of nvidia/Hymba-1.5B-Base, verbatim. */
const HYMBA_1_5B_GROUPS = [
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
];

const PAPER_COMMON = {
  vocab: 32001,
  dState: 16,
  dConv: 4,
  expand: 2,
  meta: 128,
  window: 1024,
  maxPositions: 8192,
  origMaxPositions: 2048,
};

export const PRESETS: Readonly<Record<PresetName, PresetShape>> = {
  tiny: {
    vocab: 32001,
    hidden: 64,
    layers: 8,
    heads: 4,
    kvHeads: 2,
    mlp: 160,
    dState: 16,
    dConv: 4,
    expand: 2,
    dtRank: 8,
    meta: 8,
    window: 16,
    global: [0, 4, 7],
    groups: [
      [1, 2, 3],
      [5, 6],
    ],
    maxPositions: 8192,
    origMaxPositions: 2048,
  },
  'hymba-125m': {
    ...PAPER_COMMON,
    hidden: 512,
    layers: 24,
    heads: 8,
    kvHeads: 4,
    mlp: 1664,
    dtRank: Math.ceil(512 / 16),
    global: [0, 12, 23],
    groups: pairGroups(24, [0, 12, 23]),
  },
  'hymba-350m': {
    ...PAPER_COMMON,
    hidden: 768,
    layers: 32,
    heads: 12,
    kvHeads: 4,
    mlp: 2432,
    dtRank: Math.ceil(768 / 16),
    global: [0, 15, 31],
    groups: HYMBA_1_5B_GROUPS,
  },
  'hymba-1.5b': {
    ...PAPER_COMMON,
    hidden: 1600,
    layers: 32,
    heads: 25,
    kvHeads: 5,
    mlp: 5504,
    dtRank: 100,
    global: [0, 15, 31],
    groups: HYMBA_1_5B_GROUPS,
  },
};

/** Keep the first `layers` layers: global layers and KV groups are filtered, groups left alone dropped. */
export function cutShape(shape: PresetShape, layers: number): PresetShape {
  if (!Number.isInteger(layers) || layers < 1 || layers > shape.layers)
    throw new RangeError(`layers must be an integer in 1..${shape.layers}, got ${layers}`);
  return {
    ...shape,
    layers,
    global: shape.global.filter((i) => i < layers),
    groups: shape.groups.map((g) => g.filter((i) => i < layers)).filter((g) => g.length >= 2),
  };
}

/** A config.json value; floats are tagged so they are written the way Python writes them. */
export type ConfigValue = null | boolean | number | string | PyFloat | ConfigValue[] | { [key: string]: ConfigValue };

/** A number Python holds as a float (written 10000.0, 1e-06). */
export class PyFloat {
  constructor(readonly value: number) {}
  toJSON(): number {
    return this.value;
  }
}

/** The config.json object of a preset (optionally cut to fewer layers), every key of the released file. */
export function presetConfig(preset: PresetName, layers?: number): Record<string, ConfigValue> {
  const base = PRESETS[preset];
  if (base === undefined)
    throw new Error(`unknown preset ${JSON.stringify(preset)}; one of ${PRESET_NAMES.join(', ')}`);
  const s = layers === undefined ? base : cutShape(base, layers);
  const dIn = s.expand * s.hidden;
  const convDim: Record<string, ConfigValue> = {};
  for (let i = 0; i < s.layers; i++) convDim[String(i)] = dIn;
  return {
    architectures: ['HymbaForCausalLM'],
    attention_dropout: new PyFloat(0),
    attn_hidden_size: -1,
    attn_implementation: 'flex',
    attn_implementation_new: 'flex',
    auto_map: {
      AutoConfig: 'configuration_hymba.HymbaConfig',
      AutoModelForCausalLM: 'modeling_hymba.HymbaForCausalLM',
    },
    bos_token_id: 1,
    calc_logits_for_entire_prompt: false,
    conv_dim: convDim,
    eos_token_id: 2,
    global_attn_idx: [...s.global],
    hidden_act: 'silu',
    hidden_size: s.hidden,
    initializer_range: new PyFloat(0.02),
    intermediate_size: s.mlp,
    kq_head_dim: -1,
    kq_norm: 'none',
    kv_reuse_every_i_layer: -1,
    kv_reuse_group: s.groups.map((g) => [...g]),
    kv_weight_reuse: false,
    layer_type: Array.from({ length: s.layers }, () => 'h'),
    mamba_conv_bias: true,
    mamba_d_conv: s.dConv,
    mamba_d_state: s.dState,
    mamba_dt_rank: s.dtRank,
    mamba_expand: s.expand,
    mamba_inner_layernorms: true,
    mamba_proj_bias: false,
    max_position_embeddings: s.maxPositions,
    memory_tokens_interspersed_every: 0,
    mlp_hidden_act: 'silu',
    model_type: 'hymba',
    num_attention_heads: s.heads,
    num_experts: 1,
    num_experts_per_tok: 1,
    num_hidden_layers: s.layers,
    num_key_value_heads: s.kvHeads,
    num_mamba: 1,
    num_memory_tokens: s.meta,
    orig_max_position_embeddings: s.origMaxPositions,
    output_router_logits: false,
    pad_token_id: 0,
    rms_norm_eps: new PyFloat(1e-6),
    rope: true,
    rope_theta: new PyFloat(10000),
    rope_type: 'ntk',
    router_aux_loss_coef: new PyFloat(0.001),
    seq_length: s.maxPositions,
    sliding_window: s.window,
    tie_word_embeddings: true,
    torch_dtype: 'bfloat16',
    transformers_version: '4.44.0',
    use_cache: false,
    use_mamba_kernels: true,
    v_head_dim: dIn / s.heads,
    vocab_size: s.vocab,
  };
}

/** generation_config.json as transformers writes it for a model config. */
export function generationConfig(): Record<string, ConfigValue> {
  return {
    _from_model_config: true,
    bos_token_id: 1,
    eos_token_id: 2,
    pad_token_id: 0,
    transformers_version: '4.44.0',
  };
}

/** Python's repr of a float: 10000.0, 0.02, 1e-06. */
function pyFloat(x: number): string {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? 'NaN' : x > 0 ? 'Infinity' : '-Infinity';
  if (Number.isInteger(x) && Math.abs(x) < 1e16) return `${x}.0`;
  const abs = Math.abs(x);
  if (abs >= 1e-4 && abs < 1e16) return String(x);
  // exponent form, with Python's two-digit exponent
  return x.toExponential().replace(/e([+-])(\d)$/, 'e$10$2');
}

/** json.dumps(value, indent=2, sort_keys=True) as Python writes it (plus the trailing newline HF adds). */
export function pyJson(value: ConfigValue): string {
  const write = (v: ConfigValue, indent: string): string => {
    if (v instanceof PyFloat) return pyFloat(v.value);
    if (v === null || typeof v !== 'object') return JSON.stringify(v).replace(/[\u0080-\uffff]/g, escapeUnicode);
    const inner = `${indent}  `;
    if (Array.isArray(v)) {
      if (v.length === 0) return '[]';
      return `[\n${v.map((x) => inner + write(x, inner)).join(',\n')}\n${indent}]`;
    }
    const keys = Object.keys(v).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    if (keys.length === 0) return '{}';
    const items = keys.map(
      (k) => `${inner}${JSON.stringify(k).replace(/[\u0080-\uffff]/g, escapeUnicode)}: ${write(v[k]!, inner)}`,
    );
    return `{\n${items.join(',\n')}\n${indent}}`;
  };
  return `${write(value, '')}\n`;
}

/** Python's ensure_ascii escaping. */
function escapeUnicode(c: string): string {
  return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
}
