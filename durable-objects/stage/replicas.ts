// Which pipeline replica serves a session: jump consistent hashing (Lamping & Veach, 2014) over a 64-bit
// FNV-1a hash of the session key. Growing from n to n+1 replicas moves only 1/(n+1) of the sessions, and
// each session always lands on the same replica, where its stage snapshots are.

const FNV_OFFSET = 0xcbf29ce484222325n;
const FNV_PRIME = 0x100000001b3n;
const MASK = (1n << 64n) - 1n;

export function fnv1a64(text: string): bigint {
  let h = FNV_OFFSET;
  for (const byte of new TextEncoder().encode(text)) h = ((h ^ BigInt(byte)) * FNV_PRIME) & MASK;
  return h;
}

/** A bucket in [0, buckets) for `key`. */
export function jumpHash(key: bigint, buckets: number): number {
  if (!Number.isInteger(buckets) || buckets < 1) throw new Error(`replica count ${buckets} must be a positive integer`);
  let b = -1n;
  let j = 0n;
  let k = key;
  while (j < BigInt(buckets)) {
    b = j;
    k = (k * 2862933555777941757n + 1n) & MASK;
    j = BigInt(Math.floor(((Number(b) + 1) * 2 ** 31) / Number((k >> 33n) + 1n)));
  }
  return Number(b);
}

export const replicaOf = (session: string, replicas: number): number => jumpHash(fnv1a64(session), replicas);
