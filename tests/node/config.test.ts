import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../engine/model/config.js';
import { presetConfig } from '../../infra/test-model/presets.js';

const hymba15 = (): Record<string, unknown> =>
  JSON.parse(JSON.stringify(presetConfig('hymba-1.5b'))) as Record<string, unknown>;

describe('config', () => {
  it('derives the Hymba-1.5B dimensions and layer roles', () => {
    const { dims } = loadConfig(hymba15());
    expect(dims).toMatchObject({ H: 1600, L: 32, heads: 25, kvHeads: 5, dqk: 64, dv: 128, kHidden: 320, vHidden: 640 });
    expect(dims).toMatchObject({ dIn: 3200, dState: 16, dConv: 4, dtRank: 100, I: 5504, V: 32001, M: 128, W: 1024 });
    expect(dims.ropeBase).toBeCloseTo(10000 * Math.pow(7, 64 / 62), 6);
    const roles = dims.layers;
    expect(roles[0]).toEqual({ index: 0, attention: 'global', kv: { kind: 'producer' } });
    expect(roles[1]).toEqual({ index: 1, attention: 'sliding', kv: { kind: 'producer' } });
    expect(roles[2]).toEqual({ index: 2, attention: 'sliding', kv: { kind: 'consumer', producer: 1 } });
    expect(roles[15]!.attention).toBe('global');
    expect(roles[17]!.kv).toEqual({ kind: 'consumer', producer: 16 });
    expect(roles[18]!.kv).toEqual({ kind: 'consumer', producer: 16 });
    expect(roles.filter((r) => r.kv.kind === 'producer')).toHaveLength(17);
    expect(roles.filter((r) => r.attention === 'global').map((r) => r.index)).toEqual([0, 15, 31]);
  });

  it('groups layers by kv_reuse_every_i_layer when no groups are given', () => {
    const raw = { ...hymba15(), kv_reuse_group: null, kv_reuse_every_i_layer: 3, sliding_window: null };
    const { dims } = loadConfig(raw);
    expect(dims.layers[3]!.kv).toEqual({ kind: 'producer' });
    expect(dims.layers[5]!.kv).toEqual({ kind: 'consumer', producer: 3 });
    expect(dims.W).toBe(Infinity);
  });

  const rejects: [string, unknown, RegExp][] = [
    ['num_experts', 2, /num_experts = 2.*single MLP expert/],
    ['memory_tokens_interspersed_every', 64, /memory_tokens_interspersed_every = 64/],
    ['kq_norm', 'rms', /kq_norm = "rms"/],
    ['rope_type', 'yarn', /rope_type = "yarn"/],
    ['mlp_hidden_act', 'gelu', /mlp_hidden_act = "gelu"/],
    ['hidden_size', '1600', /hidden_size = "1600": expected an integer/],
    ['num_key_value_heads', 4, /num_key_value_heads = 4: must divide num_attention_heads 25/],
    [
      'kv_reuse_group',
      [
        [1, 2],
        [2, 3],
      ],
      /layer 2 is in two groups/,
    ],
    ['kv_reuse_group', [[40, 41]], /outside 0..31/],
    ['global_attn_idx', [0, 2, 31], /layer 2 \(global\) shares K\/V with layer 1 \(sliding\)/],
    ['sliding_window', -5, /sliding_window = -5/],
  ];
  for (const [key, value, message] of rejects) {
    it(`rejects ${key} = ${JSON.stringify(value)} naming the key and value`, () => {
      const raw = { ...hymba15(), [key]: value };
      expect(() => loadConfig(raw)).toThrow(ConfigError);
      expect(() => loadConfig(raw)).toThrow(message);
    });
  }

  it('rejects a missing required key', () => {
    const raw = hymba15();
    delete raw.num_attention_heads;
    expect(() => loadConfig(raw)).toThrow(/num_attention_heads = undefined: expected an integer/);
  });

  it('ignores keys that do not change the maths', () => {
    expect(() =>
      loadConfig({ ...hymba15(), attn_implementation: 'flex', use_cache: false, seq_length: 8192 }),
    ).not.toThrow();
  });
});
