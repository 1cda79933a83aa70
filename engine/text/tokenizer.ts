// The Hymba tokenizer: a thin wrapper around @huggingface/tokenizers built from a checkpoint's tokenizer.json
// and tokenizer_config.json (Llama-2 SentencePiece BPE with byte fallback, plus [PAD] = 32000).
// No file I/O here: `fromFiles` takes a reader so any storage (fs, R2, KV, fetch) can supply the files.

import { Tokenizer } from '@huggingface/tokenizers';

export interface EncodeOptions {
  /** prepend BOS (`<s>`); default: tokenizer_config.json's add_bos_token (true for Hymba) */
  addBos?: boolean;
}

export interface DecodeOptions {
  /** drop special tokens (`<s>`, `</s>`, `<unk>`, `[PAD]`) from the output; default false, as in Hugging Face */
  skipSpecial?: boolean;
}

/** Reads one file of a model directory by name; null when the file does not exist. */
export type ModelFileReader = (name: string) => Promise<string | null>;

type JsonObject = Record<string, unknown>;

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A special-token entry of tokenizer_config.json: "<s>" or {"content": "<s>", ...}. */
function tokenText(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (isObject(v) && typeof v.content === 'string') return v.content;
  return null;
}

/** chat_template is a string, or a list of {name, template} of which "default" is the chat one. */
function chatTemplateOf(config: JsonObject): string | null {
  const t = config.chat_template;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const named = t.filter(isObject);
    const pick = named.find((x) => x.name === 'default') ?? named[0];
    if (pick && typeof pick.template === 'string') return pick.template;
  }
  return null;
}

function parseJson(text: string, name: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new Error(`${name}: invalid JSON: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

export class HymbaTokenizer {
  readonly bosId: number;
  readonly eosId: number;
  readonly bosToken: string;
  readonly eosToken: string;
  /** number of ids, added tokens included (32001 for Hymba) */
  readonly vocabSize: number;
  /** tokenizer_config.json's add_bos_token (default true) */
  readonly addBosToken: boolean;
  /** the checkpoint's chat template, or null when it ships none */
  readonly chatTemplate: string | null;

  private readonly hf: Tokenizer;
  private readonly pieces: string[];
  private readonly specialIds: Set<number>;
  /** byte value of each `<0xXX>` byte-fallback piece, -1 for every other id */
  private readonly byteValue: Int16Array;

  constructor(tokenizerJson: object, tokenizerConfig: object, chatTemplate?: string | null) {
    if (!isObject(tokenizerJson)) throw new Error('tokenizer.json must be a JSON object');
    if (!isObject(tokenizerConfig)) throw new Error('tokenizer_config.json must be a JSON object');
    // Llama-2 checkpoints set clean_up_tokenization_spaces=false; tokenizers.js would default it to true,
    // which rewrites " ." to "." and breaks decode(encode(x)) == x.
    const config: JsonObject = { clean_up_tokenization_spaces: false, ...tokenizerConfig };
    try {
      this.hf = new Tokenizer(tokenizerJson, config);
    } catch (err) {
      throw new Error(
        `tokenizer.json: cannot build the tokenizer: ${err instanceof Error ? err.message : String(err)}`,
        {
          cause: err,
        },
      );
    }

    const vocab = this.hf.get_vocab(true);
    let size = 0;
    for (const id of vocab.values()) size = Math.max(size, id + 1);
    this.vocabSize = size;
    this.pieces = new Array<string>(size).fill('');
    this.byteValue = new Int16Array(size).fill(-1);
    for (const [piece, id] of vocab) {
      this.pieces[id] = piece;
      const m = BYTE_PIECE.exec(piece);
      if (m) this.byteValue[id] = parseInt(m[1]!, 16);
    }
    this.specialIds = new Set<number>();
    for (const [id, added] of this.hf.get_added_tokens_decoder()) if (added.special) this.specialIds.add(id);

    const resolve = (key: string, fallbackText: string, fallbackId: number): [string, number] => {
      const text = tokenText(config[key]) ?? fallbackText;
      const id = this.hf.token_to_id(text);
      if (id !== undefined) return [text, id];
      if (config[key] !== undefined)
        throw new Error(`tokenizer_config.json: ${key} ${JSON.stringify(text)} is not in the vocabulary`);
      return [this.pieces[fallbackId] ?? fallbackText, fallbackId];
    };
    [this.bosToken, this.bosId] = resolve('bos_token', '<s>', 1);
    [this.eosToken, this.eosId] = resolve('eos_token', '</s>', 2);
    this.addBosToken = typeof config.add_bos_token === 'boolean' ? config.add_bos_token : true;
    this.chatTemplate = chatTemplate !== undefined ? chatTemplate : chatTemplateOf(config);
  }

  /**
   * Builds the tokenizer from a model directory through `read`: tokenizer.json (required: returns null when
   * it is missing), tokenizer_config.json (optional) and, when the config has no chat_template,
   * chat_template.jinja or chat_template.json (newer transformers save the template there).
   */
  static async fromFiles(read: ModelFileReader): Promise<HymbaTokenizer | null> {
    const tokenizerText = await read('tokenizer.json');
    if (tokenizerText === null) return null;
    const tokenizerJson = parseJson(tokenizerText, 'tokenizer.json');
    const configText = await read('tokenizer_config.json');
    const config = configText === null ? {} : parseJson(configText, 'tokenizer_config.json');
    if (!isObject(tokenizerJson)) throw new Error('tokenizer.json must be a JSON object');
    if (!isObject(config)) throw new Error('tokenizer_config.json must be a JSON object');

    let template = chatTemplateOf(config);
    if (template === null) template = await read('chat_template.jinja');
    if (template === null) {
      const jsonText = await read('chat_template.json');
      if (jsonText !== null) {
        const parsed = parseJson(jsonText, 'chat_template.json');
        template = isObject(parsed) ? chatTemplateOf(parsed) : null;
      }
    }
    return new HymbaTokenizer(tokenizerJson, config, template);
  }

  /** Token ids of `text`. Special-token text in `text` (e.g. "</s>") maps to the special id, as in HF. */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    const ids = text.length === 0 ? [] : this.hf.encode(text, { add_special_tokens: false }).ids;
    return (opts.addBos ?? this.addBosToken) ? [this.bosId, ...ids] : ids;
  }

  /** Text of `ids`, as HF `decode(ids, skip_special_tokens)` with clean_up_tokenization_spaces=false. */
  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    for (const id of ids) this.checkId(id);
    const kept = opts.skipSpecial ? ids.filter((id) => !this.specialIds.has(id)) : [...ids];
    if (kept.length === 0) return '';
    return this.hf.decode(kept, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }

  /** The vocabulary piece of `id` ("▁the", "<0x0A>", "</s>"), undefined when out of range. */
  idToPiece(id: number): string | undefined {
    return Number.isInteger(id) && id >= 0 && id < this.vocabSize ? this.pieces[id] : undefined;
  }

  /** The id of a vocabulary piece, undefined when absent. */
  pieceToId(piece: string): number | undefined {
    return this.hf.token_to_id(piece);
  }

  /** True for the special added tokens (`<unk>`, `<s>`, `</s>`, `[PAD]`). */
  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  /** The byte of a `<0xXX>` byte-fallback piece, or -1. */
  byteOf(id: number): number {
    return this.byteValue[id] ?? -1;
  }

  /** A streaming decoder for generated ids (see IncrementalDecoder). */
  incrementalDecoder(opts: DecodeOptions = {}): IncrementalDecoder {
    return new IncrementalDecoder(this, opts);
  }

  private checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new RangeError(`token id ${id} is outside the vocabulary (0..${this.vocabSize - 1})`);
    }
  }
}

/** Number of bytes of the UTF-8 sequence a lead byte starts (1 for ASCII, 0 for a continuation/invalid byte). */
function utf8Length(lead: number): number {
  if (lead < 0x80) return 1;
  if (lead >= 0xc2 && lead <= 0xdf) return 2;
  if (lead >= 0xe0 && lead <= 0xef) return 3;
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  return 0;
}

/**
 * Streaming detokenizer: `push(id)` returns only the text that `id` completes, so that concatenating every
 * push (and the final `flush()`) equals `decode(allIds)`. A multi-byte character split across byte-fallback
 * tokens (`<0xF0><0x9F><0x98><0x80>`) is held back until its last byte arrives: half a UTF-8 character is
 * never emitted. Works on a sliding window of ids (decoding from a few tokens back so that "▁" spaces and the
 * decoder's leading-space strip are accounted for the same way as a full decode).
 */
export class IncrementalDecoder {
  private ids: number[] = [];
  private prefixOffset = 0;
  private readOffset = 0;
  private emitted = '';

  constructor(
    private readonly tokenizer: HymbaTokenizer,
    private readonly opts: DecodeOptions = {},
  ) {}

  /** All text emitted so far. */
  get text(): string {
    return this.emitted;
  }

  /** Feeds one id; returns the newly completed text ('' while a character is incomplete). */
  push(id: number): string {
    if (this.tokenizer.idToPiece(id) === undefined) {
      throw new RangeError(`token id ${id} is outside the vocabulary (0..${this.tokenizer.vocabSize - 1})`);
    }
    if (this.opts.skipSpecial && this.tokenizer.isSpecial(id)) return '';
    this.ids.push(id);
    if (this.endsInsideCharacter()) return '';
    return this.advance();
  }

  /** Feeds several ids; returns the concatenated new text. */
  pushAll(ids: Iterable<number>): string {
    let out = '';
    for (const id of ids) out += this.push(id);
    return out;
  }

  /** Emits whatever is held back (an incomplete character decodes as U+FFFD) and resets the window. */
  flush(): string {
    const out = this.advance();
    this.ids = [];
    this.prefixOffset = 0;
    this.readOffset = 0;
    return out;
  }

  private advance(): string {
    const prefix = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const full = this.tokenizer.decode(this.ids.slice(this.prefixOffset));
    if (full.length <= prefix.length || !full.startsWith(prefix)) return '';
    const delta = full.slice(prefix.length);
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    // keep the window short: ids before prefixOffset are never decoded again
    if (this.prefixOffset > 64) {
      this.ids = this.ids.slice(this.prefixOffset);
      this.readOffset -= this.prefixOffset;
      this.prefixOffset = 0;
    }
    this.emitted += delta;
    return delta;
  }

  /** True when the trailing byte-fallback tokens are a valid but unfinished UTF-8 sequence. */
  private endsInsideCharacter(): boolean {
    const bytes: number[] = [];
    for (let i = this.ids.length - 1; i >= 0 && bytes.length < 4; i--) {
      const b = this.tokenizer.byteOf(this.ids[i]!);
      if (b < 0) break;
      bytes.unshift(b);
    }
    // find the lead byte of the last sequence among the trailing bytes
    for (let k = bytes.length - 1; k >= 0; k--) {
      const b = bytes[k]!;
      if ((b & 0xc0) === 0x80) continue; // continuation byte: keep looking back
      const need = utf8Length(b);
      const have = bytes.length - k;
      return need > 1 && have < need;
    }
    return false; // no lead byte (stray continuation bytes): invalid, emit as U+FFFD
  }
}
