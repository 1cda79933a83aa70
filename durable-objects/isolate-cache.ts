// Loads shared by every object of a class in an isolate (the model front, a stage's graph): Durable Objects
// of one class share the isolate's module state, so a module-level cache loads each key once for all of them.

/** One load per key per isolate; a failed load is forgotten, so the next call retries it. */
export class IsolateCache<T> {
  private readonly loads = new Map<string, Promise<T>>();

  get(key: string, load: () => Promise<T>): Promise<T> {
    const cached = this.loads.get(key);
    if (cached) return cached;
    const p = load();
    this.loads.set(key, p);
    p.catch(() => {
      if (this.loads.get(key) === p) this.loads.delete(key);
    });
    return p;
  }
}
