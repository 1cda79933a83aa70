// The continuous-batching queue: steps that wait together run together, in order, within the bounds.

import { describe, expect, it } from 'vitest';
import { DecodeBatcher } from '../../engine/run/decode-batcher.js';

const tick = (ms = 0): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('DecodeBatcher', () => {
  it('runs steps submitted together as one batch and answers each with its own output', async () => {
    const batches: number[][] = [];
    const b = new DecodeBatcher<number, number>(
      async (xs) => {
        batches.push(xs);
        return xs.map((x) => x * 10);
      },
      { maxBatch: 8, maxWaitMs: 0 },
    );
    const outs = await Promise.all([1, 2, 3].map((x) => b.submit(x)));
    expect(outs).toEqual([10, 20, 30]);
    expect(batches).toEqual([[1, 2, 3]]);
    expect(b.stats).toEqual({ runs: 1, steps: 3, largest: 3 });
  });

  it('never exceeds maxBatch, and steps that arrive during a run go together in the next', async () => {
    const batches: number[][] = [];
    let release: () => void = () => undefined;
    const b = new DecodeBatcher<number, number>(
      async (xs) => {
        batches.push(xs);
        if (batches.length === 1) await new Promise<void>((r) => (release = r));
        return xs;
      },
      { maxBatch: 2, maxWaitMs: 0 },
    );
    const first = b.submit(0);
    await tick();
    const later = [1, 2, 3, 4, 5].map((x) => b.submit(x)); // all arrive while batch [0] runs
    await tick();
    release();
    expect(await Promise.all([first, ...later])).toEqual([0, 1, 2, 3, 4, 5]);
    expect(batches).toEqual([[0], [1, 2], [3, 4], [5]]);
    expect(b.stats.largest).toBe(2);
  });

  it('waits up to maxWaitMs for company', async () => {
    const batches: number[][] = [];
    const b = new DecodeBatcher<number, number>(
      async (xs) => {
        batches.push(xs);
        return xs;
      },
      { maxBatch: 8, maxWaitMs: 30 },
    );
    const a = b.submit(1);
    await tick(5);
    const c = b.submit(2);
    await Promise.all([a, c]);
    expect(batches).toEqual([[1, 2]]);
  });

  it('a failed run rejects its steps only; the next batch runs', async () => {
    let calls = 0;
    const b = new DecodeBatcher<number, number>(
      async (xs) => {
        if (calls++ === 0) throw new Error('boom');
        return xs;
      },
      { maxBatch: 8, maxWaitMs: 0 },
    );
    await expect(Promise.all([b.submit(1), b.submit(2)])).rejects.toThrow('boom');
    expect(await b.submit(3)).toBe(3);
  });
});
