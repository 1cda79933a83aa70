// The HTTP API as the page uses it: JSON calls with the optional API key, errors as ApiError, and SSE streams
// read as chat.completion.chunk objects. Nothing here touches the DOM.

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string | null;
  tool_calls?: ToolCall[];
  tool_call_id?: string;
}

/** A message of a stored session: `turn` is the turn that added it (0: the system message). */
export interface SessionMessage extends ChatMessage {
  turn: number;
}

export interface ToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details?: { cached_tokens?: number };
}

/** One turn of GET /v1/sessions/:id */
export interface TurnRecord {
  turn: number;
  promptTokens: number;
  completionTokens: number;
  cachedTokens: number;
  finishReason: string;
}

export interface SessionInfo {
  id: string;
  messages: SessionMessage[];
  turns: TurnRecord[];
  state: { tokens: number; snapshots: number; snapshot_bytes: number };
}

export interface ToolCallDelta {
  index: number;
  id?: string;
  function?: { name?: string; arguments?: string };
}

export interface ChatChunk {
  choices: { delta: { content?: string | null; tool_calls?: ToolCallDelta[] }; finish_reason: string | null }[];
  usage?: Usage | null;
}

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

export class Api {
  constructor(private readonly key: () => string) {}

  private headers(json: boolean): Record<string, string> {
    const h: Record<string, string> = json ? { 'content-type': 'application/json' } : {};
    const key = this.key().trim();
    if (key) h.authorization = `Bearer ${key}`;
    return h;
  }

  /** fetch + the error body (`{error: {message}}`) turned into an ApiError */
  async request(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<Response> {
    const res = await fetch(path, {
      method,
      headers: this.headers(body !== undefined),
      body: body === undefined ? null : JSON.stringify(body),
      signal: signal ?? null,
    });
    if (!res.ok) throw await errorOf(res);
    return res;
  }

  /** GET (or POST a FormData) with the key, the error body turned into an ApiError: files and handoff */
  async send(method: string, path: string, form?: FormData): Promise<Response> {
    const res = await fetch(path, { method, headers: this.headers(false), body: form ?? null });
    if (!res.ok) throw await errorOf(res);
    return res;
  }

  async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    return (await (await this.request(method, path, body)).json()) as T;
  }

  models = (): Promise<{ data: { id: string }[] }> => this.json('GET', '/v1/models');
  createSession = (system?: string): Promise<{ id: string }> =>
    this.json('POST', '/v1/sessions', system ? { system } : {});
  session = (id: string): Promise<SessionInfo> => this.json('GET', `/v1/sessions/${encodeURIComponent(id)}`);
  fork = (id: string, turn: number): Promise<{ id: string }> =>
    this.json('POST', `/v1/sessions/${encodeURIComponent(id)}/fork`, { turn });
  deleteSession = (id: string): Promise<unknown> => this.json('DELETE', `/v1/sessions/${encodeURIComponent(id)}`);

  /** POST a streaming request and yield its chunks until `data: [DONE]`. */
  async *stream(path: string, body: unknown, signal: AbortSignal): AsyncGenerator<ChatChunk> {
    const res = await this.request('POST', path, body, signal);
    if (!res.body) throw new ApiError('the response has no body', res.status);
    for await (const data of sseData(res.body)) {
      if (data === '[DONE]') return;
      const payload = JSON.parse(data) as ChatChunk & { error?: { message: string } };
      if (payload.error) throw new ApiError(payload.error.message, 500);
      yield payload;
    }
    throw new ApiError('the stream ended before [DONE]', 500);
  }
}

async function errorOf(res: Response): Promise<ApiError> {
  const text = await res.text();
  try {
    const body = JSON.parse(text) as { error?: { message?: string } };
    if (body.error?.message) return new ApiError(`${res.status}: ${body.error.message}`, res.status);
  } catch {
    // not JSON: use the text
  }
  return new ApiError(`${res.status}: ${text.slice(0, 200) || res.statusText}`, res.status);
}

/** The `data:` payloads of a Server-Sent Events body (comment lines, used as keep-alives, are skipped). */
export async function* sseData(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const lines = frame.split('\n').filter((l) => l.startsWith('data:'));
        if (lines.length > 0) yield lines.map((l) => l.slice(5).trimStart()).join('\n');
      }
    }
  } finally {
    // early exit (the consumer stopped): stop reading the response
    void reader.cancel().catch(() => {});
  }
}
