// What every part of a SessionDO shares: its storage, its turn lock, who owns it, and the stage objects that
// hold its state. The SessionDO's RPC methods (session-do.ts) hand this to the module of their concept.

import type { ModelFront } from '../../engine/run/loaded-model.js';
import type { StatePipeline } from '../../engine/run/pipeline.js';
import { errors } from '../../engine/serve/errors.js';
import type { Env } from '../env.js';
import { settingsOf } from '../settings.js';
import { StagePipeline, stageRoutes, type StageRoute } from './stage-pipeline.js';
import { SessionStore, type SessionMeta } from './store.js';

export class Session {
  /** a turn or a handoff upload runs: another one gets 409 session_busy */
  busy = false;
  /** set while a DELETE runs: every request meanwhile finds the session gone (404), never half-deleted */
  deleting = false;
  private storeCache: SessionStore | null = null;

  constructor(
    readonly ctx: DurableObjectState,
    readonly env: Env,
  ) {}

  get store(): SessionStore {
    this.storeCache ??= new SessionStore(this.ctx.storage.sql, this.ctx.storage);
    return this.storeCache;
  }

  /** After the storage was wiped: the next use starts a fresh store (schema included). */
  forgetStore(): void {
    this.storeCache = null;
  }

  /** The key the stages file this conversation's state under. */
  get key(): string {
    return this.ctx.id.toString();
  }

  /** The stage objects serving session `key` (this one's unless given: a fork's source, a scratch state). */
  routes(front: ModelFront, key = this.key): StageRoute[] {
    return stageRoutes(this.env, front, settingsOf(this.env).modelPrefix, key);
  }

  pipeline(front: ModelFront, key = this.key): StatePipeline {
    return new StagePipeline(front, this.routes(front, key), key);
  }

  /** This object's meta if `owner` owns it, else 404: another key's session is not found, never shown. */
  owned(owner: string | null): SessionMeta {
    const meta = this.store.meta();
    if (this.deleting || !meta || meta.owner !== owner) throw errors.notFound('session', 'session_id');
    return meta;
  }

  /** As owned, and a session of the session API (a prompt_cache_key object is not reachable as a session). */
  ownedSession(owner: string | null): void {
    if (this.owned(owner).kind !== 'session') throw errors.notFound('session', 'session_id');
  }
}
