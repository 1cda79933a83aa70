// Tool calls in the model's output: the text format a model family emits (Hymba / Nemotron-Mini:
// `<toolcall> {"name": ..., "arguments": {...}} </toolcall>`), a streaming parser that splits generated text
// into message content and parsed calls, and the grammar that constrains decoding to valid calls.
//
// Parsing rules (the same for streamed and whole outputs, so both give the same result):
// - text outside call blocks is content; leading whitespace of the content and whitespace around blocks is
//   dropped (the chat template strips it too, so the stored conversation renders the same);
// - a block whose body is a JSON object with a string "name" naming an offered tool, and an object (or JSON
//   text of an object) "arguments", becomes a call; arguments are re-serialised compactly;
// - anything else (a block that does not parse, an unknown tool, an unterminated block) stays content,
//   verbatim: a model's malformed call is shown to the client, never silently dropped.

import { alt, lazy, lit, repeat, seq, type Grammar } from '../constrain/grammar.js';
import { anyJsonObjectGrammar, jsonSchemaGrammar } from '../constrain/json-schema.js';

/** How a model family writes a tool call. */
export interface ToolCallFormat {
  start: string;
  end: string;
}

export const HYMBA_TOOL_CALL_FORMAT: ToolCallFormat = { start: '<toolcall>', end: '</toolcall>' };

export interface ParsedToolCall {
  name: string;
  /** compact JSON text of an object */
  arguments: string;
}

/** What one push of text yields: content safe to emit now and the calls completed by it. */
export interface ParsedChunk {
  content: string;
  calls: ParsedToolCall[];
}

const isRecord = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

/** The call a block body describes, or null when it is not a valid call of one of `names`. */
export function parseToolCallBody(body: string, names: ReadonlySet<string>): ParsedToolCall | null {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    return null;
  }
  if (!isRecord(value) || typeof value.name !== 'string' || !names.has(value.name)) return null;
  let args: unknown = value.arguments ?? {};
  if (typeof args === 'string') {
    try {
      args = JSON.parse(args);
    } catch {
      return null;
    }
  }
  if (!isRecord(args)) return null;
  return { name: value.name, arguments: JSON.stringify(args) };
}

/**
 * Splits streamed text into content and tool calls. Text that may be the start of a call block, and
 * whitespace that may turn out to separate blocks, is held back until the following text decides it.
 */
export class ToolCallParser {
  private pending = '';
  /** inside a block: the text after the start marker */
  private block: string | null = null;
  private emittedContent = false;
  private heldSpace = '';

  constructor(
    private readonly names: ReadonlySet<string>,
    private readonly format: ToolCallFormat = HYMBA_TOOL_CALL_FORMAT,
  ) {}

  push(text: string): ParsedChunk {
    const out: ParsedChunk = { content: '', calls: [] };
    this.pending += text;
    for (;;) {
      if (this.block !== null) {
        const end = this.pending.indexOf(this.format.end);
        if (end < 0) {
          // keep a suffix that could begin the end marker
          const keep = partialSuffix(this.pending, this.format.end);
          this.block += this.pending.slice(0, this.pending.length - keep);
          this.pending = this.pending.slice(this.pending.length - keep);
          return out;
        }
        this.block += this.pending.slice(0, end);
        this.pending = this.pending.slice(end + this.format.end.length);
        const call = parseToolCallBody(this.block.trim(), this.names);
        if (call) {
          out.calls.push(call);
          this.heldSpace = ''; // whitespace before a call is a separator
        } else this.content(out, this.format.start + this.block + this.format.end);
        this.block = null;
        continue;
      }
      const start = this.pending.indexOf(this.format.start);
      if (start >= 0) {
        this.content(out, this.pending.slice(0, start));
        this.pending = this.pending.slice(start + this.format.start.length);
        this.block = '';
        continue;
      }
      // keep a suffix that could begin the start marker
      const keep = partialSuffix(this.pending, this.format.start);
      this.content(out, this.pending.slice(0, this.pending.length - keep));
      this.pending = this.pending.slice(this.pending.length - keep);
      return out;
    }
  }

  /**
   * The end of the output: held text is content, and so is an unterminated block — unless
   * `dropUnterminated`: under a tool-call grammar such a block can only be a call cut by max_tokens, which
   * is not message text.
   */
  flush(opts: { dropUnterminated?: boolean } = {}): ParsedChunk {
    const out: ParsedChunk = { content: '', calls: [] };
    const open = this.block !== null && !opts.dropUnterminated ? this.format.start + this.block : '';
    const rest = open + (this.block !== null && opts.dropUnterminated ? '' : this.pending);
    this.block = null;
    this.pending = '';
    this.content(out, rest);
    return out;
  }

  /** Emit content, dropping leading whitespace and holding trailing whitespace until more content follows. */
  private content(out: ParsedChunk, text: string): void {
    if (text === '') return;
    const trimmedEnd = text.replace(/\s+$/, '');
    const trailing = text.slice(trimmedEnd.length);
    if (trimmedEnd === '') {
      if (this.emittedContent) this.heldSpace += trailing;
      return;
    }
    const body = this.emittedContent ? this.heldSpace + trimmedEnd : trimmedEnd.replace(/^\s+/, '');
    out.content += body;
    this.emittedContent = true;
    this.heldSpace = trailing;
  }
}

/** Length of the longest suffix of `text` that is a proper prefix of `marker`. */
function partialSuffix(text: string, marker: string): number {
  for (let n = Math.min(marker.length - 1, text.length); n > 0; n--) {
    if (text.endsWith(marker.slice(0, n))) return n;
  }
  return 0;
}

/** Parse a whole output at once (the same result as streaming it). */
export function parseToolCalls(text: string, names: ReadonlySet<string>, format?: ToolCallFormat): ParsedChunk {
  const parser = new ToolCallParser(names, format);
  const a = parser.push(text);
  const b = parser.flush();
  return { content: a.content + b.content, calls: [...a.calls, ...b.calls] };
}

// ---- constrained decoding of calls ----

export interface ToolGrammarSpec {
  name: string;
  parameters?: Record<string, unknown>;
}

/** One call block: `<start> {"name": "<name>", "arguments": {...}} <end>`, arguments matching the tool's schema. */
function callGrammar(tools: readonly ToolGrammarSpec[], format: ToolCallFormat): Grammar {
  const space = repeat(lit(' '), 0, 1);
  const bodies = tools.map((t) =>
    seq(
      lit('{"name":'),
      space,
      lit(JSON.stringify(t.name)),
      lit(','),
      space,
      lit('"arguments":'),
      space,
      t.parameters ? jsonSchemaGrammar(t.parameters) : anyJsonObjectGrammar(),
      lit('}'),
    ),
  );
  return seq(lit(' '), alt(...bodies), lit(' ' + format.end));
}

/**
 * The grammar of an output that must call tools (tool_choice required, or a named tool: pass only that one),
 * or, with `lazy`, of an output that may call them (tool_choice auto): free text, unless it opens a call
 * block, which must then be a valid call. Several calls are separated by newlines when `parallel`.
 */
export function toolCallGrammar(
  tools: readonly ToolGrammarSpec[],
  opts: { parallel: boolean; lazy: boolean; format?: ToolCallFormat },
): Grammar {
  const format = opts.format ?? HYMBA_TOOL_CALL_FORMAT;
  const call = callGrammar(tools, format);
  const more = opts.parallel ? repeat(seq(lit('\n' + format.start), call), 0, Infinity) : seq();
  const rest = seq(call, more);
  return opts.lazy ? lazy(format.start, rest) : seq(lit(format.start), rest);
}
