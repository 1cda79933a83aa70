// A session's SQLite storage: transcript, turn log and the index of model-state snapshots (their bytes live
// in the stages that hold the layers, durable-objects/stage/store.ts). Every turn commits in one transaction;
// the transcript is the source of truth and snapshots are a cache that can always be recomputed from it.

import type { ChatMessage } from '../../engine/text/chat-template.js';
import type { CommitTurn, NewSnapshot, TurnStore } from '../../engine/serve/turn-store.js';

/**
 * 2: snapshot bytes moved to the stages (version 1 kept them here; those rows are dropped on upgrade).
 * 3: the `responses` table (Responses API ids of turns); earlier data is kept as it is.
 */
const SCHEMA_VERSION = 3;

export interface SnapshotInfo {
  id: number;
  fingerprint: string;
  /** the token ids the state has processed, meta tokens excluded */
  tokens: number[];
  bytes: number;
  turn: number;
}

export interface TurnRecord {
  turn: number;
  promptTokens: number;
  completionTokens: number;
  cachedTokens: number;
  finishReason: string;
  snapshotId: number | null;
  created: number;
}

export interface StoredMessage extends ChatMessage {
  turn: number;
}

export interface SessionMeta {
  created: number;
  owner: string | null;
  kind: 'session' | 'cache';
}

/** A stored Responses API response: the turn that answered it and its saved JSON body. */
export interface ResponseRecord {
  id: string;
  turn: number;
  created: number;
  /** the response object as the API returned it (null until saved after the turn) */
  body: string | null;
  deleted: boolean;
}

/** Turns a client ran elsewhere (session handoff), committed with the state it uploaded. */
export interface CommitHandoff {
  /** the session's last turn the uploaded turns follow; the commit fails if the session has moved on */
  baseTurn: number;
  /** each new turn's messages (one or more user/tool messages, then one assistant message) */
  turns: ChatMessage[][];
  /** the uploaded state, which the stages have just stored under `id`: the last new turn's snapshot */
  snapshot: NewSnapshot;
  keepSnapshots: number;
}

/** finish_reason of a turn that was not run here but uploaded with its state (session handoff) */
export const HANDOFF_FINISH_REASON = 'handoff';

const idsToBlob = (ids: number[]): ArrayBuffer => Uint32Array.from(ids).buffer;
const blobToIds = (b: ArrayBuffer): number[] => Array.from(new Uint32Array(b.slice(0)));

export class SessionStore implements TurnStore {
  constructor(
    private readonly sql: SqlStorage,
    private readonly storage: DurableObjectStorage,
  ) {
    this.migrate();
  }

  private migrate(): void {
    this.sql.exec(`CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)`);
    const row = this.sql.exec<{ value: string }>(`SELECT value FROM meta WHERE key = 'schema'`).toArray()[0];
    if (row && Number(row.value) === SCHEMA_VERSION) return;
    this.storage.transactionSync(() => {
      if (row && Number(row.value) === 1) {
        // version 1 stored snapshot bytes here: the stages have none of them, so they are recomputed
        this.sql.exec(`DROP TABLE IF EXISTS snapshot_chunks`);
        this.sql.exec(`DROP TABLE IF EXISTS snapshots`);
        this.sql.exec(`UPDATE turns SET snapshot_id = NULL`);
      }
      this.sql.exec(`CREATE TABLE IF NOT EXISTS messages (
        seq INTEGER PRIMARY KEY, turn INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL, extra TEXT)`);
      this.sql.exec(`CREATE TABLE IF NOT EXISTS turns (
        turn INTEGER PRIMARY KEY, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL, finish_reason TEXT NOT NULL, snapshot_id INTEGER, created INTEGER NOT NULL)`);
      this.sql.exec(`CREATE TABLE IF NOT EXISTS snapshots (
        id INTEGER PRIMARY KEY, turn INTEGER NOT NULL, fingerprint TEXT NOT NULL, tokens BLOB NOT NULL,
        n_tokens INTEGER NOT NULL, bytes INTEGER NOT NULL)`);
      this.sql.exec(`CREATE TABLE IF NOT EXISTS responses (
        id TEXT PRIMARY KEY, turn INTEGER NOT NULL, created INTEGER NOT NULL, body TEXT, deleted INTEGER NOT NULL)`);
      this.sql.exec(`INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)`, String(SCHEMA_VERSION));
    });
  }

  meta(): SessionMeta | null {
    const rows = this.sql.exec<{ key: string; value: string }>(`SELECT key, value FROM meta`).toArray();
    const m = new Map(rows.map((r) => [r.key, r.value]));
    if (!m.has('created')) return null;
    return {
      created: Number(m.get('created')),
      owner: m.get('owner') ?? null,
      kind: m.get('kind') === 'cache' ? 'cache' : 'session',
    };
  }

  create(meta: { owner: string | null; kind: SessionMeta['kind']; messages?: ChatMessage[] }): void {
    this.storage.transactionSync(() => {
      this.sql.exec(`INSERT OR REPLACE INTO meta (key, value) VALUES ('created', ?)`, String(Date.now()));
      this.sql.exec(`INSERT OR REPLACE INTO meta (key, value) VALUES ('kind', ?)`, meta.kind);
      if (meta.owner !== null)
        this.sql.exec(`INSERT OR REPLACE INTO meta (key, value) VALUES ('owner', ?)`, meta.owner);
      for (const m of meta.messages ?? []) this.insertMessage(0, m);
    });
  }

  messages(upToTurn = Infinity): StoredMessage[] {
    return this.sql
      .exec<{ turn: number; role: string; content: string; extra: string | null }>(
        `SELECT turn, role, content, extra FROM messages ORDER BY seq`,
      )
      .toArray()
      .filter((r) => r.turn <= upToTurn)
      .map((r) => ({
        turn: r.turn,
        role: r.role as ChatMessage['role'],
        content: r.content,
        ...(r.extra ? JSON.parse(r.extra) : {}),
      }));
  }

  turns(): TurnRecord[] {
    return this.sql
      .exec<{
        turn: number;
        prompt_tokens: number;
        completion_tokens: number;
        cached_tokens: number;
        finish_reason: string;
        snapshot_id: number | null;
        created: number;
      }>(`SELECT * FROM turns ORDER BY turn`)
      .toArray()
      .map((r) => ({
        turn: r.turn,
        promptTokens: r.prompt_tokens,
        completionTokens: r.completion_tokens,
        cachedTokens: r.cached_tokens,
        finishReason: r.finish_reason,
        snapshotId: r.snapshot_id,
        created: r.created,
      }));
  }

  lastTurn(): number {
    const r = this.sql.exec<{ t: number | null }>(`SELECT MAX(turn) AS t FROM turns`).toArray()[0];
    return r?.t ?? 0;
  }

  /** Snapshot descriptions, newest first (without their bytes). */
  snapshots(): SnapshotInfo[] {
    return this.sql
      .exec<{ id: number; turn: number; fingerprint: string; tokens: ArrayBuffer; bytes: number }>(
        `SELECT id, turn, fingerprint, tokens, bytes FROM snapshots ORDER BY id DESC`,
      )
      .toArray()
      .map((r) => ({
        id: r.id,
        turn: r.turn,
        fingerprint: r.fingerprint,
        tokens: blobToIds(r.tokens),
        bytes: r.bytes,
      }));
  }

  /**
   * A fresh snapshot id for the stages to store under before the commit. Ids are never reused, so a stray
   * slice left by a failed turn can never be mistaken for a later snapshot.
   */
  allocateSnapshotId(): number {
    return this.storage.transactionSync(() => {
      const row = this.sql.exec<{ value: string }>(`SELECT value FROM meta WHERE key = 'next_snapshot'`).toArray()[0];
      const max = this.sql.exec<{ m: number | null }>(`SELECT MAX(id) AS m FROM snapshots`).toArray()[0]?.m ?? 0;
      const id = Math.max(Number(row?.value ?? 1), max + 1);
      this.sql.exec(`INSERT OR REPLACE INTO meta (key, value) VALUES ('next_snapshot', ?)`, String(id + 1));
      return id;
    });
  }

  deleteSnapshot(id: number): void {
    this.storage.transactionSync(() => this.dropSnapshot(id));
  }

  /** Append the turn's messages, its log row and its snapshot atomically; then trim old snapshots. */
  commitTurn(c: CommitTurn): { turn: number; snapshotId: number | null; keep: number[] } {
    return this.storage.transactionSync(() => {
      const turn = this.lastTurn() + 1;
      for (const m of c.messages) this.insertMessage(turn, m);
      const snapshotId = c.snapshot ? this.insertSnapshot(turn, c.snapshot) : null;
      this.sql.exec(
        `INSERT INTO turns (turn, prompt_tokens, completion_tokens, cached_tokens, finish_reason, snapshot_id, created)
         VALUES (?, ?, ?, ?, ?, ?, ?)`,
        turn,
        c.promptTokens,
        c.completionTokens,
        c.cachedTokens,
        c.finishReason,
        snapshotId,
        Date.now(),
      );
      if (c.responseId !== undefined)
        this.sql.exec(
          `INSERT INTO responses (id, turn, created, body, deleted) VALUES (?, ?, ?, NULL, 0)`,
          c.responseId,
          turn,
          Date.now(),
        );
      const all = this.snapshots();
      for (const s of all.slice(c.keepSnapshots)) this.dropSnapshot(s.id);
      return { turn, snapshotId, keep: all.slice(0, c.keepSnapshots).map((s) => s.id) };
    });
  }

  /**
   * Append turns run elsewhere (session handoff) with the uploaded state as the last one's snapshot, atomically;
   * then trim old snapshots. Their token counts are unknown here: 0, finish_reason "handoff".
   */
  commitHandoff(c: CommitHandoff): { turn: number; keep: number[] } {
    return this.storage.transactionSync(() => {
      if (this.lastTurn() !== c.baseTurn)
        throw new Error(`the session's last turn is ${this.lastTurn()}, not ${c.baseTurn}`);
      if (c.turns.length === 0) throw new Error('a handoff commits at least one turn');
      let turn = c.baseTurn;
      c.turns.forEach((messages, k) => {
        turn++;
        for (const m of messages) this.insertMessage(turn, m);
        const snapshotId = k === c.turns.length - 1 ? this.insertSnapshot(turn, c.snapshot) : null;
        this.sql.exec(
          `INSERT INTO turns (turn, prompt_tokens, completion_tokens, cached_tokens, finish_reason, snapshot_id, created)
           VALUES (?, 0, 0, 0, ?, ?, ?)`,
          turn,
          HANDOFF_FINISH_REASON,
          snapshotId,
          Date.now(),
        );
      });
      const all = this.snapshots();
      for (const s of all.slice(c.keepSnapshots)) this.dropSnapshot(s.id);
      return { turn, keep: all.slice(0, c.keepSnapshots).map((s) => s.id) };
    });
  }

  /** A response of this session by id (deleted ones included), or null. */
  response(id: string): ResponseRecord | null {
    const r = this.sql
      .exec<{ id: string; turn: number; created: number; body: string | null; deleted: number }>(
        `SELECT id, turn, created, body, deleted FROM responses WHERE id = ?`,
        id,
      )
      .toArray()[0];
    return r ? { id: r.id, turn: r.turn, created: r.created, body: r.body, deleted: r.deleted !== 0 } : null;
  }

  /** Save a response's body (a response that was deleted meanwhile stays deleted). */
  saveResponseBody(id: string, body: string): void {
    this.sql.exec(`UPDATE responses SET body = ? WHERE id = ? AND deleted = 0`, body, id);
  }

  /** Mark a response deleted and drop its body; its turn stays in the transcript. */
  deleteResponse(id: string): void {
    this.sql.exec(`UPDATE responses SET deleted = 1, body = NULL WHERE id = ?`, id);
  }

  /** Bytes of all stored snapshots. */
  snapshotBytesTotal(): number {
    const r = this.sql.exec<{ b: number | null }>(`SELECT SUM(bytes) AS b FROM snapshots`).toArray()[0];
    return r?.b ?? 0;
  }

  /** Index a snapshot the stages already hold (forks). */
  importSnapshot(turn: number, s: NewSnapshot): void {
    this.storage.transactionSync(() => void this.insertSnapshot(turn, s));
  }

  importTurns(turns: TurnRecord[], messages: StoredMessage[]): void {
    this.storage.transactionSync(() => {
      for (const m of messages) this.insertMessage(m.turn, m);
      for (const t of turns)
        this.sql.exec(
          `INSERT INTO turns (turn, prompt_tokens, completion_tokens, cached_tokens, finish_reason, snapshot_id, created)
           VALUES (?, ?, ?, ?, ?, NULL, ?)`,
          t.turn,
          t.promptTokens,
          t.completionTokens,
          t.cachedTokens,
          t.finishReason,
          t.created,
        );
    });
  }

  private insertMessage(turn: number, m: ChatMessage): void {
    const { role, content, ...rest } = m;
    delete (rest as { turn?: number }).turn;
    const extra = Object.keys(rest).length > 0 ? JSON.stringify(rest) : null;
    this.sql.exec(`INSERT INTO messages (turn, role, content, extra) VALUES (?, ?, ?, ?)`, turn, role, content, extra);
  }

  private insertSnapshot(turn: number, s: NewSnapshot): number {
    this.sql.exec(
      `INSERT INTO snapshots (id, turn, fingerprint, tokens, n_tokens, bytes) VALUES (?, ?, ?, ?, ?, ?)`,
      s.id,
      turn,
      s.fingerprint,
      idsToBlob(s.tokens),
      s.tokens.length,
      s.bytes,
    );
    return s.id;
  }

  private dropSnapshot(id: number): void {
    this.sql.exec(`DELETE FROM snapshots WHERE id = ?`, id);
    this.sql.exec(`UPDATE turns SET snapshot_id = NULL WHERE snapshot_id = ?`, id);
  }
}
