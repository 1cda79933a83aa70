// Hops: what one call from the session to a stage and back costs. Measured here between worker threads (a
// message round trip and a structuredClone of the rows that cross it); ASSUMED for Durable Object RPC, which
// only a production deployment can measure.

import { time, type Timing } from '../stats.js';
import { CHUNK } from './bench-model.js';
import { progress } from './report.js';
import { StageThread } from './stage-thread.js';

/** ASSUMED round trip of one Durable Object RPC call (session -> stage -> session), ms; see ASSUMED_HOP_TEXT */
export const ASSUMED_HOP_MS = 1;
/** hop latencies the per-token totals are also given at */
export const HOP_SENSITIVITY_MS = [1, 5, 20];

export const ASSUMED_HOP_TEXT =
  `ASSUMED Durable Object RPC hop: ${ASSUMED_HOP_MS} ms per call round trip (session -> stage -> session), not measured ` +
  'here: workerd runs locally in one process, so only a production deployment can measure it. Why 1 ms: the stage ' +
  'objects of a model are created by the same SessionDO calls, and Cloudflare places a new Durable Object near ' +
  'where it is first requested (docs: "Data location"), so the objects usually share a data center, where a ' +
  "round trip is a local network hop plus Cap'n Proto RPC and a structured clone of a 6.4 kB [1, 1600] row. " +
  `If an object lands in another data center the hop is many ms: the totals are also given at ${HOP_SENSITIVITY_MS.join(', ')} ms.`;

export interface HopResults {
  /** ms per worker_threads round trip carrying a [1, H] Float32Array each way */
  roundTrip1: Timing;
  /** the same with a [128, H] prefill chunk */
  roundTrip128: Timing;
  /** ms per structuredClone of a [1, H] / [128, H] Float32Array */
  clone1: Timing;
  clone128: Timing;
}

/** ms per call: 7 timed runs (after 1 warm-up) of `run`, which makes `n` calls, divided by n. */
async function perCall(n: number, run: () => Promise<void>): Promise<Timing> {
  const t = await time(run, 7, 1);
  return { median: t.median / n, min: t.min / n, max: t.max / n, runs: t.runs };
}

/** Round trips to a worker thread and structured clones of a [1, H] row and a [CHUNK, H] prefill chunk. */
export async function measureHops(H: number): Promise<HopResults> {
  progress('timing hops between worker threads');
  const thread = await StageThread.start();
  try {
    const trips = (data: Float32Array, n: number): Promise<Timing> =>
      perCall(n, async () => {
        for (let i = 0; i < n; i++) await thread.call({ type: 'echo', data });
      });
    const clones = (data: Float32Array, n: number): Promise<Timing> =>
      perCall(n, async () => {
        for (let i = 0; i < n; i++) structuredClone(data);
      });
    const row = new Float32Array(H).fill(0.5);
    const chunk = new Float32Array(CHUNK * H).fill(0.5);
    return {
      roundTrip1: await trips(row, 500),
      roundTrip128: await trips(chunk, 50),
      clone1: await clones(row, 2000),
      clone128: await clones(chunk, 100),
    };
  } finally {
    await thread.terminate();
  }
}
