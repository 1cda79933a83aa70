// Request validation: JSON body -> a zod schema's output, or an ApiError (400) whose `param` is the path of the
// offending field in the wire's notation (`messages[1].content[0].type`) and whose message says what was expected.

import { z } from 'zod';
import { ApiError } from './errors.js';

type Issue = z.core.$ZodIssue;

export interface ParseBodyOptions {
  /** reject bodies over this many bytes with a 413 */
  maxBytes?: number;
}

/**
 * Reads `request`'s body as JSON and validates it. Malformed JSON, a body that is not a JSON object and schema
 * violations become 400s; a body over `maxBytes` a 413. An empty body reads as `{}`.
 */
export async function parseBody<S extends z.ZodType>(
  schema: S,
  request: Request,
  opts: ParseBodyOptions = {},
): Promise<z.output<S>> {
  const { maxBytes } = opts;
  const declared = Number(request.headers.get('content-length') ?? NaN);
  if (maxBytes !== undefined && declared > maxBytes) throw tooLarge(maxBytes);
  let text: string;
  try {
    text = await request.text();
  } catch (err) {
    throw new ApiError('invalid', 'Could not read the request body.', { cause: err });
  }
  if (maxBytes !== undefined && (text.length > maxBytes || new TextEncoder().encode(text).byteLength > maxBytes)) {
    throw tooLarge(maxBytes);
  }
  // an empty body is an empty object: "missing parameter" is a clearer error than "bad JSON"
  if (text.trim() === '') return parseValue(schema, {});
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    const detail = err instanceof SyntaxError ? ` (${err.message})` : '';
    throw ApiError.invalidRequest(
      `We could not parse the JSON body of your request${detail}. Send a JSON object with "Content-Type: application/json".`,
      null,
      'invalid_json',
    );
  }
  return parseValue(schema, json);
}

/**
 * How deeply arrays and objects may nest in a request body (the body itself is level 1). No request of these
 * APIs needs more (a tool's JSON schema nested 25 deep is about level 55), and deeper values would exhaust the
 * stack of what walks them recursively: the JSON-schema grammar compiler, the chat template, the RPC serializer.
 */
export const MAX_BODY_DEPTH = 64;

/** Validates an already-parsed JSON value (the body must be an object). */
export function parseValue<S extends z.ZodType>(schema: S, value: unknown): z.output<S> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw ApiError.invalidRequest(`The request body must be a JSON object, not ${typeName(value)}.`);
  }
  const deep = tooDeep(value, MAX_BODY_DEPTH);
  if (deep !== null) {
    const where = formatPath(deep);
    throw ApiError.invalidRequest(
      `Invalid value for '${where.length > 80 ? `${where.slice(0, 77)}...` : where}': ` +
        `arrays and objects nest more than ${MAX_BODY_DEPTH} levels deep.`,
      typeof deep[0] === 'string' ? deep[0] : null,
    );
  }
  const result = schema.safeParse(value, { reportInput: true, error: defaultMessage });
  if (result.success) return result.data;
  throw issueToError(result.error.issues);
}

/**
 * The path of the first array or object (depth first) nested deeper than `max` levels, or null. Iterative: the
 * value may nest deeper than the stack allows (JSON.parse reads any depth).
 */
function tooDeep(value: object, max: number): PropertyKey[] | null {
  const todo: { v: object; path: PropertyKey[] }[] = [{ v: value, path: [] }];
  for (let next = todo.pop(); next !== undefined; next = todo.pop()) {
    const { v, path } = next;
    if (path.length >= max) return path;
    const entries: [PropertyKey, unknown][] = Array.isArray(v) ? v.map((x: unknown, i) => [i, x]) : Object.entries(v);
    for (const [k, x] of entries) if (typeof x === 'object' && x !== null) todo.push({ v: x, path: [...path, k] });
  }
  return null;
}

/** The first issue -> a 400 naming the field. */
export function issueToError(issues: readonly Issue[]): ApiError {
  const first = issues[0];
  if (first === undefined) return ApiError.invalidRequest('Invalid request body.');
  const { issue, path } = mostSpecific(first, []);
  const param = formatPath(path);
  return ApiError.invalidRequest(issueMessage(issue, param), param === '' ? null : param);
}

/** `['messages', 1, 'content']` -> `messages[1].content` */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out === '' ? String(key) : `.${String(key)}`;
  }
  return out;
}

// A union reports one list of issues per branch (paths relative to the union). The branch that got furthest
// into the value is the one the client meant: `[{type: "image_url"}]` for string | TextPart[] fails the string
// branch at the root and the array branch at `[0].type`; report the latter. When no branch got past the
// root, the union's own message ("expected a string or an array of text parts") is the clearest.
function mostSpecific(issue: Issue, prefix: readonly PropertyKey[]): { issue: Issue; path: PropertyKey[] } {
  const path = [...prefix, ...issue.path];
  if (issue.code !== 'invalid_union' || issue.errors.length === 0) return { issue, path };
  let best: Issue | undefined;
  let bestScore = 0;
  for (const branch of issue.errors) {
    for (const candidate of branch) {
      const score = specificity(candidate);
      if (score > bestScore) [best, bestScore] = [candidate, score];
    }
  }
  return best === undefined ? { issue, path } : mostSpecific(best, path);
}

function specificity(issue: Issue): number {
  // deeper is better; at equal depth, anything beats "wrong type"
  return issue.path.length * 2 + (issue.code === 'invalid_type' ? 0 : 1);
}

function issueMessage(issue: Issue, param: string): string {
  const where = param === '' ? 'the request body' : `'${param}'`;
  const missing = !('input' in issue) || issue.input === undefined;
  if (missing && (issue.code === 'invalid_type' || issue.code === 'invalid_union')) {
    return `Missing required parameter: ${where}.`;
  }
  if (issue.code === 'invalid_type') {
    return `Invalid type for ${where}: expected ${article(issue.expected)}, but got ${typeName(issue.input)} instead.`;
  }
  const message = issue.message.replace(/^Invalid input: /, '');
  return `Invalid value for ${where}: ${message}${/[.!?]$/.test(message) ? '' : '.'}`;
}

// Messages for the checks the schemas use; a schema's own `error` takes precedence over these.
function defaultMessage(issue: z.core.$ZodRawIssue): string | undefined {
  switch (issue.code) {
    case 'too_big':
      if (issue.origin === 'array') return `must have at most ${issue.maximum} items`;
      if (issue.origin === 'string') return `must be at most ${issue.maximum} characters`;
      return `must be ${issue.inclusive === false ? 'less than' : 'at most'} ${issue.maximum}`;
    case 'too_small':
      if (issue.origin === 'array') return `must have at least ${issue.minimum} item${issue.minimum === 1 ? '' : 's'}`;
      if (issue.origin === 'string') return `must be at least ${issue.minimum} characters`;
      return `must be ${issue.inclusive === false ? 'greater than' : 'at least'} ${issue.minimum}`;
    case 'invalid_value':
      return `must be ${issue.values.map((v) => JSON.stringify(v)).join(' or ')}, got ${preview(issue.input)}`;
    default:
      return undefined;
  }
}

function article(expected: string): string {
  if (expected === 'int') return 'an integer';
  if (expected === 'array' || expected === 'object') return `an ${expected}`;
  return `a ${expected}`;
}

/** How a JSON value is described in messages ("a string", "an integer", "null"). */
export function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'an integer' : 'a decimal number';
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'undefined') return 'nothing';
  return `a ${typeof value}`;
}

/** A short, safe rendering of a client value for a message. */
export function preview(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

function tooLarge(maxBytes: number): ApiError {
  return ApiError.tooLarge(`The request body is larger than the limit of ${maxBytes} bytes.`);
}
