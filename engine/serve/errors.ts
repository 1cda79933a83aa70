// The error vocabulary of the whole server: every failure a client may see has a kind (what went wrong, in
// the client's terms), a stable code, the offending parameter and a message. The turn code and the Durable
// Objects raise these; workers/api/errors.ts alone maps a kind to an HTTP status and the OpenAI error object.
//
// Errors cross Durable Object RPC as plain data (ServeErrorInfo): a thrown class does not survive RPC (only
// its message does), so an RPC method that can fail in a defined way returns `{ error }` (see `Failed`) and
// the route rethrows it; a turn stream sends it as its `error` event. Routes never read message text.

/** What went wrong. Status: invalid 400, unauthorized 401, forbidden 403, not_found 404, busy / conflict 409,
 * too_large 413, too_long 422, rate_limited 429, internal 500, unavailable 503. */
export type ErrorKind =
  | 'invalid'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  /** the session is running another turn: retry in a moment */
  | 'busy'
  /** the request no longer fits the stored state (superseded turn, moved-on session, no snapshot) */
  | 'conflict'
  | 'too_large'
  /** the prompt does not fit the context or the prompt limit */
  | 'too_long'
  | 'rate_limited'
  | 'internal'
  | 'unavailable';

/** An error as data: what crosses RPC and turn streams. */
export interface ServeErrorInfo {
  kind: ErrorKind;
  message: string;
  /** stable machine-readable code (`session_busy`, `context_length_exceeded`, ...) */
  code: string | null;
  /** the request field it is about (`messages[1].content`) */
  param: string | null;
  /** seconds the client should wait before retrying */
  retryAfter?: number;
}

/** The value an RPC method returns instead of throwing a defined error. */
export interface Failed {
  error: ServeErrorInfo;
}

export const isFailed = (v: unknown): v is Failed =>
  typeof v === 'object' && v !== null && 'error' in v && typeof (v as Failed).error?.kind === 'string';

/** A defined failure, thrown inside one runtime (the turn code, a Durable Object's own methods). */
export class ServeError extends Error {
  override readonly name = 'ServeError';
  constructor(readonly info: ServeErrorInfo) {
    super(info.message);
  }
}

const make = (kind: ErrorKind, message: string, code: string | null = null, param: string | null = null): ServeError =>
  new ServeError({ kind, message, code, param });

export const GENERIC_INTERNAL_MESSAGE = 'The server had an error while processing your request.';

/** The errors with a fixed wording, written once (the Worker's own errors use the same constructors). */
export const errors = {
  invalid: (message: string, param: string | null = null, code: string | null = null): ServeError =>
    make('invalid', message, code, param),
  notFound: (what: string, param: string | null = null, code = 'not_found'): ServeError =>
    make('not_found', `${what} not found`, code, param),
  busy: (): ServeError =>
    new ServeError({
      kind: 'busy',
      message: 'The session is busy with another turn; retry when it has finished.',
      code: 'session_busy',
      param: null,
      retryAfter: 1,
    }),
  superseded: (): ServeError =>
    make('conflict', 'The session has moved past the turn this request continues.', 'turn_superseded'),
  noSnapshot: (turn: number, why: string): ServeError =>
    make(
      'conflict',
      `The session has no stored state for its last turn (turn ${turn}): ${why}. Send the session a message (its state is stored after every turn) or continue it from its transcript.`,
      'no_snapshot',
    ),
  snapshotInvalid: (message: string, code = 'snapshot_invalid', param: string | null = 'state'): ServeError =>
    make('invalid', message, code, param),
  /** OpenAI's wording, which clients match on */
  contextLengthExceeded: (promptTokens: number, contextLength: number, param = 'messages'): ServeError =>
    make(
      'too_long',
      `This model's maximum context length is ${contextLength} tokens. ` +
        `However, your prompt resulted in ${promptTokens} tokens. Please reduce the length of the prompt.`,
      'context_length_exceeded',
      param,
    ),
  internal: (): ServeError => make('internal', GENERIC_INTERNAL_MESSAGE, 'internal_error'),
};

/** A thrown value as the client may see it: defined errors as they are, anything else as a generic 500. */
export function errorInfo(e: unknown): ServeErrorInfo {
  return e instanceof ServeError ? e.info : errors.internal().info;
}

/** Run `fn`; a defined error becomes the `{ error }` value RPC can carry, anything else stays thrown. */
export async function asResult<T>(fn: () => T | Promise<T>): Promise<T | Failed> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof ServeError) return { error: e.info };
    throw e;
  }
}
