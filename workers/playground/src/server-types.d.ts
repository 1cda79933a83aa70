// The in-browser engine (local-engine.ts) runs engine/serve/turn.ts, whose type-only imports reach the
// session store (durable-objects/session/store.ts). The Workers runtime types cannot join this DOM program (they
// redefine Response, Element.remove, ...), so the two storage types that file names are declared here, as far
// as it uses them. Nothing of the session store is bundled into the page (runTurn gets a PageStore).
type SqlStorageValue = ArrayBuffer | string | number | null;

interface SqlStorageCursor<T extends Record<string, SqlStorageValue>> {
  toArray(): T[];
}

interface SqlStorage {
  exec<T extends Record<string, SqlStorageValue>>(query: string, ...bindings: unknown[]): SqlStorageCursor<T>;
}

interface DurableObjectStorage {
  transactionSync<T>(closure: () => T): T;
}
