// Small deterministic PRNG for test checkpoints: xoshiro128** seeded through splitmix32, normals by ziggurat.
// A stream is keyed by (seed, label), so every tensor gets its own sequence whatever the order of writing.

const INV_2_32 = 1 / 4294967296;

/** Start of the ziggurat's tail, for 128 layers (Marsaglia & Tsang 2000). */
const ZIG_R = 3.442619855899;

/**
 * Ziggurat tables for 128 layers over a 24-bit magnitude (the low 7 bits of each draw pick the layer,
 * the other 25 give sign and magnitude, so the two are independent). k: acceptance thresholds,
 * w: scale from integer to value, f: density at each layer edge.
 */
const ZIG = ((): { k: Float64Array; w: Float64Array; f: Float64Array } => {
  const m = 2 ** 24;
  const v = 9.91256303526217e-3; // area of each layer
  const k = new Float64Array(128);
  const w = new Float64Array(128);
  const f = new Float64Array(128);
  let dn = ZIG_R;
  let tn = dn;
  const q = v / Math.exp(-0.5 * dn * dn);
  k[0] = (dn / q) * m;
  k[1] = 0;
  w[0] = q / m;
  w[127] = dn / m;
  f[0] = 1;
  f[127] = Math.exp(-0.5 * dn * dn);
  for (let i = 126; i >= 1; i--) {
    dn = Math.sqrt(-2 * Math.log(v / dn + Math.exp(-0.5 * dn * dn)));
    k[i + 1] = (dn / tn) * m;
    tn = dn;
    f[i] = Math.exp(-0.5 * dn * dn);
    w[i] = dn / m;
  }
  return { k, w, f };
})();

/** FNV-1a over the UTF-16 code units of a string. */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** splitmix32 step: returns [output, next state]. */
function splitmix32(state: number): [number, number] {
  const next = (state + 0x9e3779b9) | 0;
  let z = next;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return [(z ^ (z >>> 16)) >>> 0, next];
}

export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /** `seed` is any integer (uses its low 32 bits and the next 21); `label` selects an independent stream. */
  constructor(seed: number, label = '') {
    let st = (fnv1a(label) ^ Math.imul(seed | 0, 0x27d4eb2f) ^ Math.floor(seed / 4294967296)) | 0;
    const words: number[] = [];
    for (let i = 0; i < 4; i++) {
      const [w, next] = splitmix32(st);
      words.push(w | 0);
      st = next;
    }
    [this.s0, this.s1, this.s2, this.s3] = words as [number, number, number, number];
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1; // the one state xoshiro cannot leave
  }

  /** Next uint32. */
  nextU32(): number {
    const s0 = this.s0;
    const s1 = this.s1;
    const s2 = this.s2 ^ s0;
    const s3 = this.s3 ^ s1;
    const m = Math.imul(s1, 5);
    const r = Math.imul((m << 7) | (m >>> 25), 9);
    this.s1 = s1 ^ s2;
    this.s0 = s0 ^ s3;
    this.s2 = s2 ^ (s1 << 9);
    this.s3 = (s3 << 11) | (s3 >>> 21);
    return r >>> 0;
  }

  /** Uniform in [0, 1). */
  uniform(): number {
    return this.nextU32() * INV_2_32;
  }

  /** One N(0, 1) value (ziggurat). */
  normal(): number {
    const z = ZIG;
    const hz = this.nextU32() | 0;
    const iz = hz & 127;
    const j = hz >> 7; // signed 25-bit magnitude, independent of the layer bits
    if (Math.abs(j) < z.k[iz]!) return j * z.w[iz]!;
    return this.normalSlow(j, iz);
  }

  /** The ziggurat's rare path: the wedge of a layer, or the tail beyond R. */
  private normalSlow(j: number, iz: number): number {
    const z = ZIG;
    for (;;) {
      if (iz === 0) {
        // tail beyond R (Marsaglia's method)
        let x: number;
        let y: number;
        do {
          x = -Math.log(1 - this.uniform()) / ZIG_R;
          y = -Math.log(1 - this.uniform());
        } while (y + y < x * x);
        return j > 0 ? ZIG_R + x : -ZIG_R - x;
      }
      const x = j * z.w[iz]!;
      if (z.f[iz]! + this.uniform() * (z.f[iz - 1]! - z.f[iz]!) < Math.exp(-0.5 * x * x)) return x;
      const hz = this.nextU32() | 0;
      iz = hz & 127;
      j = hz >> 7;
      if (Math.abs(j) < z.k[iz]!) return j * z.w[iz]!;
    }
  }

  /** Fill with N(mean, std^2). */
  fillNormal(out: Float32Array, mean = 0, std = 1): Float32Array {
    const n = out.length;
    const { k, w } = ZIG;
    for (let i = 0; i < n; i++) {
      const hz = this.nextU32() | 0;
      const iz = hz & 127;
      const j = hz >> 7;
      out[i] = mean + std * (Math.abs(j) < k[iz]! ? j * w[iz]! : this.normalSlow(j, iz));
    }
    return out;
  }

  /** Fill with uniform values in [lo, hi). */
  fillUniform(out: Float32Array, lo: number, hi: number): Float32Array {
    const span = hi - lo;
    for (let i = 0; i < out.length; i++) out[i] = lo + span * this.uniform();
    return out;
  }
}
