// SessionDO: one SQLite-backed Durable Object per conversation: transcript, turn log, the index of state
// snapshots. The model's layers run in StageDOs (durable-objects/stage/stage-do.ts), which hold the state
// slices; a one-stage model is the same code with one stage. The class is the object's RPC surface (what
// workers/do-client.ts and workers/routes/ call); each concept is its own module:
//   front.ts        the isolate's model front (loaded once per isolate), health, /tokenize
//   session.ts      what they share: storage, the turn lock, ownership, the stage objects
//   lifecycle.ts    create, read, delete (session API)
//   turn-stream.ts  a turn, streamed as NDJSON, aborted when nobody reads it
//   responses.ts    Responses API storage
//   fork.ts         fork at a turn
//   handoff.ts      the whole state out to a client and back
// Errors a client may see come back as `{ error }` values (engine/serve/errors.ts): RPC loses error classes.

import { DurableObject } from 'cloudflare:workers';
import type { Failed } from '../../engine/serve/errors.js';
import type { TokenizeInput } from '../../engine/serve/prepare.js';
import type { TurnRequest } from '../../engine/serve/protocol.js';
import type { ChatMessage } from '../../engine/text/chat-template.js';
import type { Env } from '../env.js';
import { exportFork, importFork, type ForkData } from './fork.js';
import { detokenize, frontStatus, tokenize, type FrontStatus } from './front.js';
import { exportHandoff, importHandoff, type HandoffMeta, type HandoffResult, type HandoffUpload } from './handoff.js';
import { createSession, destroySession, sessionInfo, type SessionInfo } from './lifecycle.js';
import {
  deleteResponse,
  locateResponse,
  readResponse,
  saveResponse,
  type ResponseLocation,
  type StoredResponse,
} from './responses.js';
import { Session } from './session.js';
import { turnStream, type TurnCall } from './turn-stream.js';

// the RPC vocabulary, for the Worker
export type { ForkData } from './fork.js';
export type { HandoffMeta, HandoffResult, HandoffUpload } from './handoff.js';
export type { SessionInfo } from './lifecycle.js';
export type { ResponseLocation, StoredResponse } from './responses.js';
export type { StreamEvent, TurnCall, TurnMode } from './turn-stream.js';

export class SessionDO extends DurableObject<Env> {
  protected readonly session = new Session(this.ctx, this.env);
  /**
   * A running turn whose stream nobody has pulled for this long is aborted: its reader is gone (see
   * turn-stream.ts). The Worker reads turn streams as fast as they come, so a healthy turn never waits this
   * long between pulls.
   */
  turnIdleAbortMs = 10_000;

  /** Whether this isolate's model front is loaded; starts loading it if not (health checks). */
  async status(): Promise<FrontStatus> {
    return frontStatus(this.env);
  }

  async tokenize(input: TokenizeInput): Promise<{ tokens: number[]; maxModelLen: number } | Failed> {
    return tokenize(this.env, input);
  }

  async detokenize(ids: number[]): Promise<{ prompt: string } | Failed> {
    return detokenize(this.env, ids);
  }

  // ---- session API ----

  async create(owner: string | null, messages: ChatMessage[]): Promise<void> {
    createSession(this.session, owner, messages);
  }

  async info(owner: string | null): Promise<SessionInfo | Failed> {
    return sessionInfo(this.session, owner);
  }

  async destroy(owner: string | null): Promise<{ deleted: true } | Failed> {
    return destroySession(this.session, owner);
  }

  /** Run one turn; its events as an NDJSON stream whose first event is `accepted` or an `error`. */
  async turn(req: TurnRequest, call: TurnCall): Promise<ReadableStream<Uint8Array>> {
    return turnStream(this.session, req, call, this.turnIdleAbortMs);
  }

  async exportFork(owner: string | null, turn: number): Promise<ForkData | Failed> {
    return exportFork(this.session, owner, turn);
  }

  async importFork(owner: string | null, data: ForkData): Promise<void> {
    return importFork(this.session, owner, data);
  }

  // ---- Responses API: a chain of responses is one session; each response is one of its turns ----

  async locateResponse(owner: string | null, id: string): Promise<ResponseLocation | Failed> {
    return locateResponse(this.session, owner, id);
  }

  async saveResponse(owner: string | null, id: string, body: string): Promise<void> {
    saveResponse(this.session, owner, id, body);
  }

  async readResponse(owner: string | null, id: string): Promise<StoredResponse | Failed> {
    return readResponse(this.session, owner, id);
  }

  async deleteResponse(owner: string | null, id: string): Promise<{ deleted: true } | Failed> {
    return deleteResponse(this.session, owner, id);
  }

  // ---- session handoff: the state leaves the edge (a browser continues locally) and comes back ----

  async exportHandoff(
    owner: string | null,
    withState: boolean,
  ): Promise<{ meta: HandoffMeta; state: ReadableStream<Uint8Array> | null } | Failed> {
    return exportHandoff(this.session, owner, withState);
  }

  async importHandoff(
    owner: string | null,
    upload: HandoffUpload,
    state: ReadableStream<Uint8Array>,
    maxBytes: number,
  ): Promise<HandoffResult | Failed> {
    return importHandoff(this.session, owner, upload, state, maxBytes);
  }
}
