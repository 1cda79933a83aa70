// The tokenizer files a Hymba-1.5B-Instruct checkpoint ships (tokenizer.json, tokenizer_config.json,
// special_tokens_map.json), rebuilt from the Llama-2 vocabulary and merges that llama-tokenizer-js embeds, in
// the Hugging Face layout. Test models use them so that the engine is exercised with the real tokenizer.
//
// How llama-tokenizer-js stores the data (see its llama-tokenizer.js and data-conversion.py):
// - vocabulary: base64 of the UTF-8 pieces joined by "\n", the line number being the id (0..31999);
// - merges: base64 of little-endian uint16 pairs (left piece id, right piece id), one pair per merge, in the
//   order of the original tokenizer.json merges list. The package decodes it into `merges`, a Map from
//   "left right" to the priority 2 * rank + 1 (lower merges first; equal merges left to right).
// Sorting that map by priority therefore gives the merges in rank order, which is what makes the Hugging Face
// BPE model tokenize exactly as SentencePiece / llama-tokenizer-js do.

import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import llamaTokenizer from 'llama-tokenizer-js';
import { HYMBA_INSTRUCT_CHAT_TEMPLATE } from '../../engine/text/chat-template.js';

const SPIECE_UNDERLINE = '▁';
const PAD_ID = 32000;
const MODEL_MAX_LENGTH = 8192; // Hymba-1.5B max_position_embeddings

interface AddedTokenJson {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

function specialToken(id: number, content: string): AddedTokenJson {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

/** Vocabulary pieces by id and merges ("left right") in rank order, from llama-tokenizer-js. */
function llamaData(): { vocab: string[]; merges: string[] } {
  const vocab = [...llamaTokenizer.vocabById];
  if (vocab.length !== 32000) throw new Error(`llama-tokenizer-js: expected 32000 pieces, got ${vocab.length}`);
  const merges = [...llamaTokenizer.merges.entries()].sort((a, b) => a[1] - b[1]).map(([pair]) => pair);
  for (const pair of merges) {
    const parts = pair.split(' ');
    if (parts.length !== 2 || !llamaTokenizer.vocabByString.has(parts.join(''))) {
      throw new Error(`llama-tokenizer-js: malformed merge ${JSON.stringify(pair)}`);
    }
  }
  return { vocab, merges };
}

/** Fresh objects per call: callers may edit the documents they get. */
const addedTokens = (): AddedTokenJson[] => [
  specialToken(0, '<unk>'),
  specialToken(1, '<s>'),
  specialToken(2, '</s>'),
  specialToken(PAD_ID, '[PAD]'),
];

/** tokenizer.json: SentencePiece-style normalizer and decoder around a byte-fallback BPE model. */
function tokenizerJsonOf(vocab: string[], merges: string[]): object {
  const vocabMap: Record<string, number> = {};
  vocab.forEach((piece, id) => {
    vocabMap[piece] = id;
  });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens(),
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: SPIECE_UNDERLINE },
        { type: 'Replace', pattern: { String: ' ' }, content: SPIECE_UNDERLINE },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: '<s>', type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '<s>', type_id: 1 } },
        { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: SPIECE_UNDERLINE }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab: vocabMap,
      merges,
    },
  };
}

/** tokenizer_config.json: the LlamaTokenizer settings and Hymba-1.5B-Instruct's chat template. */
function tokenizerConfigOf(): object {
  const addedTokensDecoder: Record<string, Omit<AddedTokenJson, 'id'>> = {};
  for (const { id, ...rest } of addedTokens()) addedTokensDecoder[String(id)] = rest;
  return {
    add_bos_token: true,
    add_eos_token: false,
    added_tokens_decoder: addedTokensDecoder,
    bos_token: '<s>',
    chat_template: HYMBA_INSTRUCT_CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: '</s>',
    legacy: false,
    model_max_length: MODEL_MAX_LENGTH,
    pad_token: '[PAD]',
    padding_side: 'left',
    sp_model_kwargs: {},
    spaces_between_special_tokens: false,
    tokenizer_class: 'LlamaTokenizer',
    unk_token: '<unk>',
    use_default_system_prompt: false,
  };
}

/** special_tokens_map.json */
function specialTokensMapOf(): object {
  const mapEntry = (content: string) => ({
    content,
    lstrip: false,
    normalized: false,
    rstrip: false,
    single_word: false,
  });
  return {
    bos_token: mapEntry('<s>'),
    eos_token: mapEntry('</s>'),
    pad_token: mapEntry('[PAD]'),
    unk_token: mapEntry('<unk>'),
  };
}

/** The three JSON documents, as objects. */
export function buildTokenizerFiles(): { tokenizerJson: object; tokenizerConfig: object; specialTokensMap: object } {
  const { vocab, merges } = llamaData();
  return {
    tokenizerJson: tokenizerJsonOf(vocab, merges),
    tokenizerConfig: tokenizerConfigOf(),
    specialTokensMap: specialTokensMapOf(),
  };
}

/**
 * JSON text of tokenizer.json with the vocab written in id order, as Hugging Face writes it (a JS object would
 * put integer-like keys such as "0".."9" first; the meaning is the same, the file layout would not be).
 */
function stringifyTokenizerJson(tokenizerJson: object): string {
  const json = tokenizerJson as { model: { vocab: Record<string, number> } };
  const placeholder = '\u0000vocab\u0000';
  const entries = Object.entries(json.model.vocab).sort((a, b) => a[1] - b[1]);
  const vocabText = `{\n${entries.map(([piece, id]) => `      ${JSON.stringify(piece)}: ${id}`).join(',\n')}\n    }`;
  const text = JSON.stringify({ ...json, model: { ...json.model, vocab: placeholder } }, null, 2);
  return text.replace(JSON.stringify(placeholder), () => vocabText) + '\n';
}

/** Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json into `dir` (created if needed). */
export async function writeTokenizerFiles(dir: string): Promise<void> {
  const { tokenizerJson, tokenizerConfig, specialTokensMap } = buildTokenizerFiles();
  await mkdir(dir, { recursive: true });
  await Promise.all([
    writeFile(join(dir, 'tokenizer.json'), stringifyTokenizerJson(tokenizerJson), 'utf8'),
    writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig, null, 2) + '\n', 'utf8'),
    writeFile(join(dir, 'special_tokens_map.json'), JSON.stringify(specialTokensMap, null, 2) + '\n', 'utf8'),
  ]);
}
