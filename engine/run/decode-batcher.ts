// Continuous batching: decode steps of different sessions that wait at one stage at the same time go
// through the graph as one run. A step waits at most `maxWaitMs` for company (0: only steps that arrived
// while the previous run was busy, or in the same turn of the event loop); a batch holds at most `maxBatch`.

export interface BatchOptions {
  maxBatch: number;
  maxWaitMs: number;
}

export interface BatchStats {
  runs: number;
  steps: number;
  largest: number;
}

interface Waiting<I, O> {
  item: I;
  resolve: (out: O) => void;
  reject: (e: unknown) => void;
}

export class DecodeBatcher<I, O> {
  private queue: Waiting<I, O>[] = [];
  private timer: ReturnType<typeof setTimeout> | null = null;
  private running = false;
  readonly stats: BatchStats = { runs: 0, steps: 0, largest: 0 };

  constructor(
    /** runs a batch; returns one output per item, in order */
    private readonly runBatch: (items: I[]) => Promise<O[]>,
    readonly opts: BatchOptions,
  ) {}

  submit(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (this.queue.length >= this.opts.maxBatch) this.flushSoon(0);
      else this.flushSoon(this.opts.maxWaitMs);
    });
  }

  private flushSoon(ms: number): void {
    if (this.running) return; // the running batch flushes again when it ends
    if (this.timer !== null) {
      if (ms > 0) return;
      clearTimeout(this.timer);
    }
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.flush();
    }, ms);
  }

  private async flush(): Promise<void> {
    if (this.running || this.queue.length === 0) return;
    this.running = true;
    const batch = this.queue.splice(0, this.opts.maxBatch);
    try {
      const outs = await this.runBatch(batch.map((w) => w.item));
      this.stats.runs++;
      this.stats.steps += batch.length;
      this.stats.largest = Math.max(this.stats.largest, batch.length);
      batch.forEach((w, i) => w.resolve(outs[i]!));
    } catch (e) {
      batch.forEach((w) => w.reject(e));
    } finally {
      this.running = false;
      // steps that queued during the run go next, together, without waiting
      if (this.queue.length > 0) this.flushSoon(0);
    }
  }
}
