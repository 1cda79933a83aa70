// The session's side of a stage worker thread (stage-worker.ts): what SessionDO's stub of a StageDO is in
// production, a request/reply channel to a stage with its own ORT instance.

import { Worker } from 'node:worker_threads';
import type { StageInput } from '../../../engine/run/stage-runner.js';
import type { RunReply, WorkerMessage } from './stage-worker.js';

/** A worker thread running infra/bench/stages/stage-worker.ts (through tsx), with request/reply over messages. */
export class StageThread {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();

  private constructor(private readonly worker: Worker) {
    worker.on('message', (m: { id: number; ok: boolean; error?: string }) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m);
      else p.reject(new Error(`stage worker: ${m.error}`));
    });
    worker.on('error', (e) => {
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    });
  }

  /** Start a thread and wait for its ready message (id 0). */
  static async start(): Promise<StageThread> {
    const tsx = import.meta.resolve('tsx/esm/api');
    const script = new URL('./stage-worker.ts', import.meta.url).href;
    const boot = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(script)}); });`;
    const worker = new Worker(boot, { eval: true });
    const thread = new StageThread(worker);
    await new Promise<void>((resolve, reject) => {
      thread.pending.set(0, { resolve: () => resolve(), reject });
      worker.once('exit', (code) => reject(new Error(`stage worker exited ${code} before it was ready`)));
    });
    return thread;
  }

  call<T>(msg: WorkerMessage): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ ...msg, id });
    });
  }

  run(input: StageInput, logitsFrom: number): Promise<RunReply> {
    return this.call<RunReply>({ type: 'run', input, logitsFrom });
  }

  terminate(): Promise<number> {
    return this.worker.terminate();
  }
}
