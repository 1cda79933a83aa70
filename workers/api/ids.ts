// Unguessable identifiers (api.md: >= 128 random bits) and the Unix timestamp the wire formats use.

const ID_BYTES = 18; // 144 bits

/** `prefix-` + 36 hex digits from the platform CSPRNG, e.g. `chatcmpl-3f9c...`. */
export function randomId(prefix: string): string {
  const bytes = crypto.getRandomValues(new Uint8Array(ID_BYTES));
  let hex = '';
  for (const b of bytes) hex += b.toString(16).padStart(2, '0');
  return `${prefix}-${hex}`;
}

/** Seconds since the epoch (the `created` field). */
export function unixSeconds(now: number = Date.now()): number {
  return Math.floor(now / 1000);
}
