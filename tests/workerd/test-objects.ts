// The Durable Objects as the workerd tests run them: the production classes plus what only tests use (a
// load report and raw logits of the SessionDO, fault injection in the StageDO). Registered for the SESSIONS
// and STAGES bindings by the workerd project alone (vitest.config.ts, entry tests/workerd/test-worker.ts);
// the production Worker (wrangler.toml, workers/index.ts) never exports them.

import { env } from 'cloudflare:workers';
import type { StageInput, StageOutput } from '../../engine/run/stage-runner.js';
import type { LoadTiming } from '../../durable-objects/model-source/timed.js';
import { frontFor } from '../../durable-objects/session/front.js';
import { SessionDO } from '../../durable-objects/session/session-do.js';
import { StageDO } from '../../durable-objects/stage/stage-do.js';
import type { StageAddress, StageLoadInfo } from '../../durable-objects/stage/stage-load.js';
import { settingsOf } from '../../durable-objects/settings.js';

/** How the model was loaded: the front in the SessionDO, each stage in its own object. */
export interface EngineInfo extends LoadTiming {
  prefix: string;
  fingerprint: string;
  vocab: number;
  stages: number;
  /** ORT was instantiated through the precompiled-module redirect by some stage's load */
  redirected: boolean;
  /** wall time until the front and every stage were loaded (stages load in parallel) */
  loadMs: number;
  perStage: StageLoadInfo[];
}

export interface LogitsResult {
  /** row-major [rows, vocab], one row per input id */
  logits: Float32Array;
  rows: number;
  vocab: number;
  /** wall time of the forward pass */
  forwardMs: number;
}

export class TestSessionDO extends SessionDO {
  /** Load the model (the front here, each stage in its object) and describe that load. */
  async model(): Promise<EngineInfo> {
    const t0 = performance.now();
    const front = await frontFor(this.env);
    const perStage = await Promise.all(this.session.routes(front).map((s) => s.stub.load(s.addr)));
    const computeMs: Record<string, number> = {};
    for (const st of perStage)
      for (const [k, v] of Object.entries(st.computeMs)) computeMs[k] = (computeMs[k] ?? 0) + v;
    return {
      prefix: settingsOf(this.env).modelPrefix,
      fingerprint: front.fingerprint,
      vocab: front.model.dims.V,
      stages: perStage.length,
      redirected: perStage.some((st) => st.redirected),
      loadMs: performance.now() - t0,
      readMs: perStage.reduce((n, st) => n + st.readMs, 0),
      bytesRead: perStage.reduce((n, st) => n + st.bytesRead, 0),
      computeMs,
      perStage,
    };
  }

  /** Logits of every position of `ids`, run from a fresh session state (meta tokens already processed). */
  async logits(ids: number[]): Promise<LogitsResult> {
    const front = await frontFor(this.env);
    const pipeline = this.session.pipeline(front, `logits:${crypto.randomUUID()}`);
    const open = await pipeline.open(null);
    if (!open.ok) throw new Error(open.reason);
    try {
      const t0 = performance.now();
      const out = await pipeline.forward(open.cursor, ids, 'all');
      const forwardMs = performance.now() - t0;
      return { logits: out.logits, rows: out.rows, vocab: front.model.dims.V, forwardMs };
    } finally {
      await pipeline.close(open.cursor);
    }
  }
}

export class TestStageDO extends StageDO {
  /** Fault injection: the run call with this number (counting from 1) throws ... */
  failRunNumber: number | null = null;
  /** ... and persist throws while this is set. */
  failPersist = false;
  /** run calls this object has received */
  runCalls = 0;

  override async run(
    addr: StageAddress,
    session: string,
    cursor: string,
    position: number,
    input: StageInput,
    logitsFrom: number,
  ): Promise<StageOutput> {
    this.runCalls++;
    if (this.failRunNumber !== null && this.runCalls === this.failRunNumber)
      throw new Error(`stage ${addr.stage}: injected fault at run ${this.runCalls}`);
    return super.run(addr, session, cursor, position, input, logitsFrom);
  }

  override async persist(addr: StageAddress, session: string, cursor: string, id: number): Promise<number> {
    if (this.failPersist) throw new Error(`stage ${addr.stage}: injected fault in persist`);
    return super.persist(addr, session, cursor, id);
  }
}

/** The SESSIONS and STAGES bindings, typed as the test classes they point at in the workerd project. */
export const testSessions = (): DurableObjectNamespace<TestSessionDO> =>
  env.SESSIONS as unknown as DurableObjectNamespace<TestSessionDO>;
export const testStages = (): DurableObjectNamespace<TestStageDO> =>
  env.STAGES as unknown as DurableObjectNamespace<TestStageDO>;
