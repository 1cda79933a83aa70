// Model fingerprints: a snapshot is valid only for the exact weights, dtype and graph version it came from.

const hex = (d: ArrayBuffer): string => Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, '0')).join('');

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  return hex(await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>));
}

/** sha-256 over the canonical description and each stage's weight digest (never all weights at once). */
export async function modelFingerprint(description: object, stageWeightDigests: string[]): Promise<string> {
  const text = JSON.stringify({ description, stageWeightDigests });
  return (await sha256Hex(new TextEncoder().encode(text))).slice(0, 32);
}
