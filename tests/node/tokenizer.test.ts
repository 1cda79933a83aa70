import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, expect, beforeAll } from 'vitest';
import { Tokenizer } from '@huggingface/tokenizers';
import llamaTokenizer from 'llama-tokenizer-js';
import { buildTokenizerFiles, writeTokenizerFiles } from '../../infra/test-model/tokenizer-files.js';
import { HymbaTokenizer } from '../../engine/text/tokenizer.js';
import { HYMBA_INSTRUCT_CHAT_TEMPLATE } from '../../engine/text/chat-template.js';

type Files = ReturnType<typeof buildTokenizerFiles>;
interface TokenizerJsonShape {
  added_tokens: unknown[];
  normalizer: unknown;
  pre_tokenizer: unknown;
  post_processor: unknown;
  decoder: unknown;
  model: {
    type: string;
    byte_fallback: boolean;
    fuse_unk: boolean;
    unk_token: string;
    vocab: Record<string, number>;
    merges: string[];
  };
}

const CORPUS = [
  'Hello world',
  'The quick brown fox jumps over the lazy dog.',
  ' leading space',
  '   three leading spaces and trailing   ',
  'whitespace    runs\t\ttabs \t mixed',
  'line one\nline two\n\n\nline five\n',
  '\n starts with a newline',
  'function add(a, b) {\n  return a + b; // sum\n}\n',
  'const xs = [1, 2, 3].map((x) => x ** 2);',
  'def f(x):\n    if x > 0:\n        return "pos"\n',
  'Numbers: 0 7 42 1234567890 3.14159 -273.15 1e-9 0x1F',
  'Emoji: 😀🎉👍🏽 ❤️ 🇫🇷',
  '日本語のテキストです。中文文本，한국어 텍스트',
  'Привет, мир! Ελληνικά κείμενα',
  'Café, naïve, résumé, façade, Ångström, Straße, São Paulo',
  '<extra_id_1>User\nWhat is 2+2?\n<extra_id_1>Assistant\n',
  '<extra_id_0>System\n\n',
  'URL https://example.com/a?b=c&d=e#frag and email a.b@c.io',
  'Mixed: tab\there, CR\r\nLF, nbsp\u00a0here, zero-width\u200bjoin',
  '▁ literal sentencepiece underline',
  '!!!???...,,,;;;:::',
  'x',
];

/** Deterministic mixed strings: letters, digits, punctuation, whitespace runs, multi-byte characters. */
function fuzzCorpus(count: number): string[] {
  let seed = 20241120;
  const rnd = (): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
  const chars = Array.from(
    'abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ  0123456789\n\t.,;:!?()[]{}<>/\\\'"-_=+*&^%$#@~`éèàüößñçøå日本語中文한국어Привет😀🎉👍🏽∑√≠→★',
  );
  const words = [' the', ' of', 'tion', 'ing', ' and', 'function', 'return', '    ', '\n', ' Hello', 'über', '東京'];
  const out: string[] = [];
  for (let n = 0; n < count; n++) {
    let s = '';
    const len = 1 + Math.floor(rnd() * 30);
    for (let i = 0; i < len; i++) {
      s += rnd() < 0.5 ? chars[Math.floor(rnd() * chars.length)]! : words[Math.floor(rnd() * words.length)]!;
    }
    out.push(s);
  }
  return out;
}

let files: Files;
let tok: HymbaTokenizer;

beforeAll(() => {
  files = buildTokenizerFiles();
  tok = new HymbaTokenizer(files.tokenizerJson, files.tokenizerConfig);
});

describe('tokenizer files built from llama-tokenizer-js', () => {
  it('have the Llama-2 tokenizer.json layout', () => {
    const json = files.tokenizerJson as TokenizerJsonShape;
    expect(json.model.type).toBe('BPE');
    expect(json.model.byte_fallback).toBe(true);
    expect(json.model.fuse_unk).toBe(true);
    expect(json.model.unk_token).toBe('<unk>');
    expect(Object.keys(json.model.vocab)).toHaveLength(32000);
    expect(json.model.vocab['<unk>']).toBe(0);
    expect(json.model.vocab['<s>']).toBe(1);
    expect(json.model.vocab['</s>']).toBe(2);
    expect(json.model.vocab['<0x0A>']).toBe(13);
    expect(json.model.vocab['▁']).toBe(29871);
    expect(json.model.merges).toHaveLength(61249);
    // rank order: the first merges of the Llama-2 tokenizer
    expect(json.model.merges.slice(0, 5)).toEqual(['▁ t', 'e r', 'i n', '▁ a', 'e n']);
    expect(json.normalizer).toEqual({
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: '▁' },
        { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
      ],
    });
    expect(json.pre_tokenizer).toBeNull();
    expect(json.decoder).toEqual({
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    });
    expect(json.post_processor).toMatchObject({
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    });
    const added = json.added_tokens as { id: number; content: string; special: boolean; normalized: boolean }[];
    expect(added.map((t) => [t.id, t.content, t.special, t.normalized])).toEqual([
      [0, '<unk>', true, false],
      [1, '<s>', true, false],
      [2, '</s>', true, false],
      [32000, '[PAD]', true, false],
    ]);
  });

  it('every merge joins two pieces into a vocabulary piece', () => {
    const json = files.tokenizerJson as TokenizerJsonShape;
    for (const m of json.model.merges) {
      const parts = m.split(' ');
      expect(parts).toHaveLength(2);
      expect(json.model.vocab[parts.join('')]).toBeTypeOf('number');
    }
  });

  it('tokenizer_config.json and special_tokens_map.json', () => {
    expect(files.tokenizerConfig).toMatchObject({
      add_bos_token: true,
      add_eos_token: false,
      bos_token: '<s>',
      eos_token: '</s>',
      unk_token: '<unk>',
      pad_token: '[PAD]',
      model_max_length: 8192,
      tokenizer_class: 'LlamaTokenizer',
      chat_template: HYMBA_INSTRUCT_CHAT_TEMPLATE,
      clean_up_tokenization_spaces: false,
    });
    const decoder = (files.tokenizerConfig as { added_tokens_decoder: Record<string, { content: string }> })
      .added_tokens_decoder;
    expect(Object.keys(decoder).sort()).toEqual(['0', '1', '2', '32000']);
    expect(decoder['32000']).toEqual({
      content: '[PAD]',
      lstrip: false,
      normalized: false,
      rstrip: false,
      single_word: false,
      special: true,
    });
    expect(files.specialTokensMap).toMatchObject({
      bos_token: { content: '<s>' },
      eos_token: { content: '</s>' },
      unk_token: { content: '<unk>' },
      pad_token: { content: '[PAD]' },
    });
  });

  it('the raw @huggingface/tokenizers Tokenizer adds BOS through the post-processor', () => {
    const hf = new Tokenizer(files.tokenizerJson, files.tokenizerConfig);
    expect(hf.encode('Hello world').ids).toEqual([1, 15043, 3186]);
    expect(hf.encode('Hello world', { add_special_tokens: false }).ids).toEqual([15043, 3186]);
  });
});

describe('HymbaTokenizer', () => {
  it('vocabulary and special ids', () => {
    expect(tok.vocabSize).toBe(32001);
    expect(tok.bosId).toBe(1);
    expect(tok.eosId).toBe(2);
    expect(tok.bosToken).toBe('<s>');
    expect(tok.eosToken).toBe('</s>');
    expect(tok.idToPiece(0)).toBe('<unk>');
    expect(tok.idToPiece(13)).toBe('<0x0A>');
    expect(tok.idToPiece(29871)).toBe('▁');
    expect(tok.idToPiece(32000)).toBe('[PAD]');
    expect(tok.idToPiece(32001)).toBeUndefined();
    expect(tok.pieceToId('▁the')).toBe(278);
    expect(tok.isSpecial(2)).toBe(true);
    expect(tok.isSpecial(32000)).toBe(true);
    expect(tok.isSpecial(278)).toBe(false);
    expect(tok.chatTemplate).toBe(HYMBA_INSTRUCT_CHAT_TEMPLATE);
  });

  it('encodes the corpus to the same ids as llama-tokenizer-js (both add BOS by default)', () => {
    for (const text of CORPUS) {
      expect(tok.encode(text), JSON.stringify(text)).toEqual(llamaTokenizer.encode(text));
      expect(tok.encode(text, { addBos: false }), JSON.stringify(text)).toEqual(llamaTokenizer.encode(text, false));
    }
  });

  it('encodes 400 generated strings to the same ids as llama-tokenizer-js', () => {
    const mismatches = fuzzCorpus(400).filter(
      (text) => JSON.stringify(tok.encode(text)) !== JSON.stringify(llamaTokenizer.encode(text)),
    );
    expect(mismatches).toEqual([]);
  });

  it('known ids', () => {
    expect(tok.encode('Hello world')).toEqual([1, 15043, 3186]);
    expect(tok.encode('')).toEqual([1]);
    expect(tok.encode('', { addBos: false })).toEqual([]);
    // newline is a byte-fallback token; the emoji has no piece and falls back to its four UTF-8 bytes
    expect(tok.encode('\n', { addBos: false }).map((id) => tok.idToPiece(id))).toEqual(['▁', '<0x0A>']);
    expect(tok.encode('😀', { addBos: false }).map((id) => tok.idToPiece(id))).toEqual([
      '▁',
      '<0xF0>',
      '<0x9F>',
      '<0x98>',
      '<0x80>',
    ]);
  });

  it('decode(encode(x)) == x', () => {
    // a literal "▁" is the space marker itself: it decodes to " ", as with SentencePiece and HF (not round-trippable)
    expect(tok.decode(tok.encode('a▁b', { addBos: false }))).toBe('a b');
    const roundTrippable = CORPUS.filter((text) => !text.includes('▁'));
    expect(roundTrippable.length).toBe(CORPUS.length - 1);
    for (const text of [...roundTrippable, ...fuzzCorpus(200)]) {
      expect(tok.decode(tok.encode(text), { skipSpecial: true }), JSON.stringify(text)).toBe(text);
      expect(tok.decode(tok.encode(text, { addBos: false })), JSON.stringify(text)).toBe(text);
    }
  });

  it('special tokens: text "</s>" is the EOS id, <extra_id_1> is ordinary text', () => {
    expect(tok.encode('</s>')).toEqual([1, 2]);
    const ids = tok.encode('Hi</s>');
    expect(ids.at(-1)).toBe(2);
    expect(ids.filter((id) => tok.isSpecial(id))).toEqual([1, 2]);
    const extra = tok.encode('<extra_id_1>User', { addBos: false });
    expect(extra.length).toBeGreaterThan(3);
    expect(extra.some((id) => tok.isSpecial(id))).toBe(false);
    expect(tok.pieceToId('<extra_id_1>')).toBeUndefined();

    const withEos = [...tok.encode('Hello world'), tok.eosId];
    expect(tok.decode(withEos)).toBe('<s> Hello world</s>');
    expect(tok.decode(withEos, { skipSpecial: true })).toBe('Hello world');
    expect(tok.decode([32000], { skipSpecial: true })).toBe('');
    expect(tok.decode([])).toBe('');
    expect(() => tok.decode([32001])).toThrow(RangeError);
    expect(() => tok.decode([-1])).toThrow(RangeError);
  });
});

describe('IncrementalDecoder', () => {
  it('holds back a multi-byte emoji until its last byte token', () => {
    const ids = tok.encode('Hi 😀!', { addBos: false });
    const pieces = ids.map((id) => tok.idToPiece(id));
    expect(pieces).toEqual(['▁Hi', '▁', '<0xF0>', '<0x9F>', '<0x98>', '<0x80>', '!']);
    const dec = tok.incrementalDecoder();
    const deltas = ids.map((id) => dec.push(id));
    expect(deltas).toEqual(['Hi', ' ', '', '', '', '😀', '!']);
    expect(dec.flush()).toBe('');
    expect(dec.text).toBe('Hi 😀!');
  });

  it('a lone emoji at the start of the stream', () => {
    const dec = tok.incrementalDecoder();
    const deltas = tok.encode('😀', { addBos: false }).map((id) => dec.push(id));
    expect(deltas).toEqual(['', '', '', '', '😀']);
  });

  it('never emits half a character and concatenates to decode(ids)', () => {
    for (const text of [...CORPUS, ...fuzzCorpus(150)]) {
      const ids = tok.encode(text, { addBos: false });
      const dec = tok.incrementalDecoder();
      let out = '';
      for (const id of ids) {
        const delta = dec.push(id);
        expect(delta.includes('\uFFFD'), JSON.stringify(text)).toBe(false);
        // no lone surrogate either
        expect(/[\uD800-\uDBFF]$/.test(delta), JSON.stringify(text)).toBe(false);
        out += delta;
      }
      out += dec.flush();
      expect(out, JSON.stringify(text)).toBe(tok.decode(ids));
    }
  });

  it('long streams (window trimming) still concatenate to decode(ids)', () => {
    const text = CORPUS.join('\n').repeat(4);
    const ids = tok.encode(text, { addBos: false });
    expect(ids.length).toBeGreaterThan(500);
    const dec = tok.incrementalDecoder();
    const out = dec.pushAll(ids) + dec.flush();
    expect(out).toBe(tok.decode(ids));
    expect(out.length).toBe(text.length);
  });

  it('flush emits an unfinished character as U+FFFD', () => {
    const dec = tok.incrementalDecoder();
    const f0 = tok.pieceToId('<0xF0>')!;
    const x9f = tok.pieceToId('<0x9F>')!;
    expect(dec.push(tok.pieceToId('▁a')!)).toBe('a');
    expect(dec.push(f0)).toBe('');
    expect(dec.push(x9f)).toBe('');
    expect(dec.flush()).toBe('\uFFFD');
  });

  it('skipSpecial drops BOS/EOS from the stream', () => {
    const dec = tok.incrementalDecoder({ skipSpecial: true });
    const out = dec.pushAll([...tok.encode('Hello world'), tok.eosId]);
    expect(out + dec.flush()).toBe('Hello world');
    const raw = tok.incrementalDecoder();
    expect(raw.pushAll([tok.pieceToId('▁ok')!, tok.eosId]) + raw.flush()).toBe('ok</s>');
  });
});

describe('HymbaTokenizer.fromFiles', () => {
  it('returns null without tokenizer.json', async () => {
    expect(await HymbaTokenizer.fromFiles(() => Promise.resolve(null))).toBeNull();
  });

  it('reads through any reader and falls back to chat_template.jinja', async () => {
    const config = { ...(files.tokenizerConfig as Record<string, unknown>) };
    delete config.chat_template;
    const store = new Map<string, string>([
      ['tokenizer.json', JSON.stringify(files.tokenizerJson)],
      ['tokenizer_config.json', JSON.stringify(config)],
      ['chat_template.jinja', '{{ messages[0].content }}'],
    ]);
    const read = (name: string): Promise<string | null> => Promise.resolve(store.get(name) ?? null);
    const t = await HymbaTokenizer.fromFiles(read);
    expect(t).not.toBeNull();
    expect(t!.chatTemplate).toBe('{{ messages[0].content }}');
    expect(t!.encode('Hello world')).toEqual([1, 15043, 3186]);

    store.delete('chat_template.jinja');
    expect((await HymbaTokenizer.fromFiles(read))!.chatTemplate).toBeNull();
    store.set('tokenizer.json', '{not json');
    await expect(HymbaTokenizer.fromFiles(read)).rejects.toThrow(/tokenizer\.json: invalid JSON/);
  });

  it('writeTokenizerFiles round trip through a temp dir', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hymba-tok-'));
    try {
      await writeTokenizerFiles(dir);
      const read = async (name: string): Promise<string | null> => {
        try {
          return await readFile(join(dir, name), 'utf8');
        } catch {
          return null;
        }
      };
      const tokenizerText = (await read('tokenizer.json'))!;
      expect(JSON.parse(tokenizerText)).toEqual(files.tokenizerJson);
      expect(JSON.parse((await read('tokenizer_config.json'))!)).toEqual(files.tokenizerConfig);
      expect(JSON.parse((await read('special_tokens_map.json'))!)).toEqual(files.specialTokensMap);
      // vocab written in id order, as Hugging Face writes it (a plain object would put the piece "0" first)
      const zeroId = (files.tokenizerJson as TokenizerJsonShape).model.vocab['0']!;
      expect(zeroId).toBeGreaterThan(1000);
      expect(tokenizerText.indexOf('"<unk>": 0')).toBeGreaterThan(0);
      expect(tokenizerText.indexOf('"<unk>": 0')).toBeLessThan(tokenizerText.indexOf(`"0": ${zeroId}`));

      const t = await HymbaTokenizer.fromFiles(read);
      expect(t).not.toBeNull();
      expect(t!.vocabSize).toBe(32001);
      expect(t!.chatTemplate).toBe(HYMBA_INSTRUCT_CHAT_TEMPLATE);
      for (const text of CORPUS) expect(t!.encode(text)).toEqual(llamaTokenizer.encode(text));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
