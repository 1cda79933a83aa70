// Pipeline replica assignment: jump consistent hashing over FNV-1a.

import { describe, expect, it } from 'vitest';
import { fnv1a64, jumpHash, replicaOf } from '../../durable-objects/stage/replicas.js';

const keys = Array.from({ length: 4000 }, (_, i) => `session-${i}-${(i * 2654435761) % 1000003}`);

describe('replica assignment', () => {
  it('FNV-1a 64 matches the published test vectors', () => {
    expect(fnv1a64('')).toBe(0xcbf29ce484222325n);
    expect(fnv1a64('a')).toBe(0xaf63dc4c8601ec8cn);
    expect(fnv1a64('foobar')).toBe(0x85944171f73967e8n);
  });

  it('puts every key in range, the same way every time', () => {
    for (const n of [1, 2, 3, 7, 16])
      for (const k of keys.slice(0, 500)) {
        const r = replicaOf(k, n);
        expect(r).toBeGreaterThanOrEqual(0);
        expect(r).toBeLessThan(n);
        expect(replicaOf(k, n)).toBe(r);
      }
  });

  it('spreads sessions evenly', () => {
    const n = 4;
    const counts = new Array<number>(n).fill(0);
    for (const k of keys) counts[replicaOf(k, n)]!++;
    for (const c of counts) expect(Math.abs(c - keys.length / n)).toBeLessThan(0.1 * (keys.length / n));
  });

  it('moves only the sessions the new replica takes when replicas are added', () => {
    for (let n = 1; n < 8; n++) {
      let moved = 0;
      for (const k of keys) {
        const before = replicaOf(k, n);
        const after = replicaOf(k, n + 1);
        if (after !== before) {
          expect(after).toBe(n); // a key only ever moves to the new bucket
          moved++;
        }
      }
      expect(Math.abs(moved / keys.length - 1 / (n + 1))).toBeLessThan(0.05);
    }
  });

  it('refuses a replica count that is not a positive integer', () => {
    expect(() => jumpHash(1n, 0)).toThrow(/positive integer/);
    expect(() => jumpHash(1n, 1.5)).toThrow(/positive integer/);
  });
});
