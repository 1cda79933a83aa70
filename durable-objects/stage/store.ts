// A stage's SQLite storage: each session's snapshots of this stage's layers, in the engine's snapshot format
// (engine/state/state.ts), chunked into rows of at most 1 MiB (the row limit is 2 MB). A slice is written in one
// transaction, so it is either all there or absent; the checksum inside catches anything else.

const SCHEMA_VERSION = 1;
const CHUNK_BYTES = 1 << 20;

export class StageStore {
  constructor(
    private readonly sql: SqlStorage,
    private readonly storage: DurableObjectStorage,
  ) {
    this.migrate();
  }

  private migrate(): void {
    this.sql.exec(`CREATE TABLE IF NOT EXISTS stage_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)`);
    const row = this.sql.exec<{ value: string }>(`SELECT value FROM stage_meta WHERE key = 'schema'`).toArray()[0];
    if (row && Number(row.value) === SCHEMA_VERSION) return;
    this.storage.transactionSync(() => {
      this.sql.exec(`CREATE TABLE IF NOT EXISTS slices (
        session TEXT NOT NULL, id INTEGER NOT NULL, bytes INTEGER NOT NULL, chunks INTEGER NOT NULL,
        PRIMARY KEY (session, id))`);
      this.sql.exec(`CREATE TABLE IF NOT EXISTS slice_chunks (
        session TEXT NOT NULL, id INTEGER NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL,
        PRIMARY KEY (session, id, seq))`);
      this.sql.exec(`INSERT OR REPLACE INTO stage_meta (key, value) VALUES ('schema', ?)`, String(SCHEMA_VERSION));
    });
  }

  /** Store (or replace) a slice atomically. */
  put(session: string, id: number, bytes: Uint8Array): void {
    const chunks = Math.ceil(bytes.length / CHUNK_BYTES);
    this.storage.transactionSync(() => {
      this.remove(session, id);
      this.sql.exec(
        `INSERT INTO slices (session, id, bytes, chunks) VALUES (?, ?, ?, ?)`,
        session,
        id,
        bytes.length,
        chunks,
      );
      for (let k = 0; k < chunks; k++)
        this.sql.exec(
          `INSERT INTO slice_chunks (session, id, seq, data) VALUES (?, ?, ?, ?)`,
          session,
          id,
          k,
          bytes.slice(k * CHUNK_BYTES, (k + 1) * CHUNK_BYTES).buffer,
        );
    });
  }

  /** The slice's bytes, reassembled; null when it or any of its rows is missing. */
  get(session: string, id: number): Uint8Array | null {
    const info = this.sql
      .exec<{ bytes: number; chunks: number }>(
        `SELECT bytes, chunks FROM slices WHERE session = ? AND id = ?`,
        session,
        id,
      )
      .toArray()[0];
    if (!info) return null;
    const rows = this.sql
      .exec<{ data: ArrayBuffer }>(
        `SELECT data FROM slice_chunks WHERE session = ? AND id = ? ORDER BY seq`,
        session,
        id,
      )
      .toArray();
    if (rows.length !== info.chunks) return null;
    const out = new Uint8Array(info.bytes);
    let o = 0;
    for (const r of rows) {
      const part = new Uint8Array(r.data);
      if (o + part.length > out.length) return null;
      out.set(part, o);
      o += part.length;
    }
    return o === info.bytes ? out : null;
  }

  ids(session: string): number[] {
    return this.sql
      .exec<{ id: number }>(`SELECT id FROM slices WHERE session = ? ORDER BY id`, session)
      .toArray()
      .map((r) => r.id);
  }

  /** Drop the session's slices except `keep`; returns the ids dropped. */
  retain(session: string, keep: number[]): number[] {
    const gone = this.ids(session).filter((id) => !keep.includes(id));
    if (gone.length > 0) this.storage.transactionSync(() => gone.forEach((id) => this.remove(session, id)));
    return gone;
  }

  private remove(session: string, id: number): void {
    this.sql.exec(`DELETE FROM slice_chunks WHERE session = ? AND id = ?`, session, id);
    this.sql.exec(`DELETE FROM slices WHERE session = ? AND id = ?`, session, id);
  }
}
