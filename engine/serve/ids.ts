// Unguessable identifiers (>= 128 random bits each) and the Unix timestamp the wire formats use.

const ID_BYTES = 18; // 144 bits

/** `bytes` random bytes from the platform CSPRNG as 2 * bytes hex digits. */
export function randomHex(bytes: number): string {
  let hex = '';
  for (const b of crypto.getRandomValues(new Uint8Array(bytes))) hex += b.toString(16).padStart(2, '0');
  return hex;
}

/** `prefix-` + 36 hex digits, e.g. `chatcmpl-3f9c...`. */
export function randomId(prefix: string): string {
  return `${prefix}-${randomHex(ID_BYTES)}`;
}

/** Seconds since the epoch (the `created` field). */
export function unixSeconds(now: number = Date.now()): number {
  return Math.floor(now / 1000);
}
