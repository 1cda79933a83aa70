// The SessionDO's side of the stages: a StatePipeline whose state lives in StageDOs. Calls go out from the
// session to each stage in turn (hidden states in, hidden states out; the last stage returns logits).
// The order of stages, parallel slices and how their outputs combine is engine/stages/steps.ts's; this module only
// carries the calls. Prefill chunks are pipelined: chunk i+1 enters stage 0 while chunk i is in stage 1, each
// stage taking a session's chunks in order.

import { concatFloat32 } from '../../engine/run/arrays.js';
import { stageSpecOf } from '../../engine/convert/manifest.js';
import type { ModelFront } from '../../engine/run/loaded-model.js';
import type { StageSpec } from '../../engine/stages/stage-spec.js';
import { pipelineSteps, runSteps, type Step } from '../../engine/stages/steps.js';
import type { Cursor, OpenResult, StatePipeline } from '../../engine/run/pipeline.js';
import { checkTextIds, InputError, type ForwardResult, type LogitsWanted } from '../../engine/run/runner.js';
import type { StageInput, StageOutput } from '../../engine/run/stage-runner.js';
import type { Env } from '../env.js';
import { runChunks } from '../../engine/run/run-chunks.js';
import { replicaOf } from '../stage/replicas.js';
import type { StageDO } from '../stage/stage-do.js';
import type { StageAddress } from '../stage/stage-load.js';
import { settingsOf } from '../settings.js';

type StageStub = DurableObjectStub<StageDO>;

export interface StageRoute {
  addr: StageAddress;
  stub: StageStub;
}

/** The stage objects of the replica that serves `session` (STAGE_REPLICAS, default 1). */
export function stageRoutes(env: Env, front: ModelFront, prefix: string, session: string): StageRoute[] {
  const r = replicaOf(session, settingsOf(env).stageReplicas);
  return front.manifest.stages.map((_, stage) => ({
    addr: { prefix, stage },
    stub: env.STAGES.getByName(`${front.fingerprint}/r${r}/s${stage}`),
  }));
}

let cursorCounter = 0;

export class StagePipeline implements StatePipeline {
  private readonly specs: StageSpec[];
  private readonly steps: Step[];

  constructor(
    private readonly front: ModelFront,
    private readonly stages: StageRoute[],
    /** the key the stages file this conversation's state under */
    readonly session: string,
  ) {
    this.specs = front.manifest.stages.map(stageSpecOf);
    this.steps = pipelineSteps(this.specs, front.model.dims);
  }

  async open(base: number | null): Promise<OpenResult> {
    const id = `t${Date.now().toString(36)}-${cursorCounter++}`;
    const results = await Promise.allSettled(this.stages.map((s) => s.stub.open(s.addr, this.session, id, base)));
    const failed = results.find((r) => r.status === 'rejected' || !r.value.ok);
    const positions = results.flatMap((r) => (r.status === 'fulfilled' && r.value.ok ? [r.value.position] : []));
    if (failed || new Set(positions).size !== 1) {
      await this.closeId(id);
      if (failed?.status === 'rejected') throw failed.reason; // an error, not a missing snapshot
      const reason = failed?.status === 'fulfilled' && !failed.value.ok ? failed.value.reason : 'stages disagree';
      return { ok: false, reason };
    }
    return { ok: true, cursor: { id, position: positions[0]! } };
  }

  async forward(c: Cursor, ids: number[], want: LogitsWanted): Promise<ForwardResult> {
    const { V } = this.front.model.dims;
    if (ids.length === 0) throw new InputError('no tokens to process');
    checkTextIds(this.front.model.dims, c.position, ids);
    const chunks = runChunks(ids, this.front.manifest.maxRunTokens, want);
    // Pipelining: every chunk starts at once; a stage takes chunk i only after it has run chunk i-1 (its
    // state is sequential), so chunk i+1 can be in stage 0 while chunk i is in stage 1.
    const turns = this.stages.map(() => chunks.map(() => deferred()));
    let failed = false;
    const runs = chunks.map(async (chunk, ci) => {
      const ran = new Set<number>();
      const call = async (k: number, input: StageInput, logitsFrom: number): Promise<StageOutput> => {
        if (ci > 0) await turns[k]![ci - 1]!.promise;
        try {
          if (failed) throw new Error('an earlier chunk failed');
          const s = this.stages[k]!;
          return await s.stub.run(s.addr, this.session, c.id, c.position + chunk.start, input, logitsFrom);
        } finally {
          ran.add(k);
          turns[k]![ci]!.resolve();
        }
      };
      try {
        return await runSteps(this.specs, this.steps, V, { ids: chunk.ids }, chunk.from, call);
      } catch (e) {
        failed = true;
        return Promise.reject(e);
      } finally {
        // stages this chunk never reached must not hold the later chunks back
        this.stages.forEach((_, k) => ran.has(k) || turns[k]![ci]!.resolve());
      }
    });
    const settled = await Promise.allSettled(runs);
    const failure = settled.find((r) => r.status === 'rejected');
    if (failure) throw failure.reason;
    c.position += ids.length;
    const rows = settled.flatMap((r, ci) => (r.status === 'fulfilled' && chunks[ci]!.keep ? [r.value] : []));
    const logits = concatFloat32(rows);
    return { logits, rows: logits.length / V };
  }

  async fork(c: Cursor): Promise<Cursor> {
    const id = `${c.id}.f${cursorCounter++}`;
    await Promise.all(this.stages.map((s) => s.stub.fork(this.session, c.id, id)));
    return { id, position: c.position };
  }

  async persist(c: Cursor, id: number): Promise<number> {
    const sizes = await Promise.all(this.stages.map((s) => s.stub.persist(s.addr, this.session, c.id, id)));
    return sizes.reduce((n, b) => n + b, 0);
  }

  async retain(keep: number[]): Promise<void> {
    await Promise.all(this.stages.map((s) => s.stub.retain(this.session, keep)));
  }

  async close(c: Cursor): Promise<void> {
    await this.closeId(c.id);
  }

  private async closeId(id: string): Promise<void> {
    await Promise.allSettled(this.stages.map((s) => s.stub.close(this.session, id)));
  }
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve: () => void = () => undefined;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}
