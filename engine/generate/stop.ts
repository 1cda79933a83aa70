// Stop strings over streamed text. Text is emitted as soon as it cannot be the start of a stop string; a
// suffix that could still grow into one is held back until the next delta settles it. The result does not
// depend on how the text is split into deltas (tokens): it is what a character-by-character scan would give.

export interface StopStep {
  /** Text safe to emit now: never part of a stop string, and if one matched, everything before it. */
  text: string;
  /** True once a stop string matched; later pushes return '' and stay stopped. */
  stopped: boolean;
  /** The stop string that matched, when `stopped`. */
  stop?: string;
}

export class StopMatcher {
  private readonly stops: string[];
  private readonly maxLen: number;
  private held = '';
  private matched: string | undefined;

  /** Empty stop strings are ignored: they would match before any text and end every generation at once. */
  constructor(stops: readonly string[]) {
    this.stops = [...new Set(stops.filter((s) => s.length > 0))];
    this.maxLen = Math.max(0, ...this.stops.map((s) => s.length));
  }

  get stopped(): boolean {
    return this.matched !== undefined;
  }

  /** Feed the next text delta. */
  push(delta: string): StopStep {
    if (this.matched !== undefined) return { text: '', stopped: true, stop: this.matched };
    const buf = this.held + delta;
    const hit = this.firstMatch(buf);
    if (hit) {
      this.held = '';
      this.matched = hit.stop;
      return { text: buf.slice(0, hit.start), stopped: true, stop: hit.stop };
    }
    const keep = this.heldSuffixLength(buf);
    this.held = buf.slice(buf.length - keep);
    return { text: buf.slice(0, buf.length - keep), stopped: false };
  }

  /** End of generation: the held-back text is no stop string after all. */
  flush(): string {
    const text = this.held;
    this.held = '';
    return text;
  }

  /**
   * The match that a character-by-character scan would see first: the smallest end position, and among
   * stops ending there the longest (earliest start). A string's first occurrence is also its earliest end.
   * Matches cannot start in already emitted text: any such start was held back as a stop-string prefix.
   */
  private firstMatch(buf: string): { start: number; stop: string } | undefined {
    let best: { start: number; end: number; stop: string } | undefined;
    for (const stop of this.stops) {
      const start = buf.indexOf(stop);
      if (start < 0) continue;
      const end = start + stop.length;
      if (!best || end < best.end || (end === best.end && start < best.start)) best = { start, end, stop };
    }
    return best;
  }

  /** Length of the longest suffix of `buf` that is a proper prefix of some stop string. */
  private heldSuffixLength(buf: string): number {
    for (let len = Math.min(buf.length, this.maxLen - 1); len > 0; len--) {
      const suffix = buf.slice(buf.length - len);
      if (this.stops.some((s) => s.startsWith(suffix))) return len;
    }
    return 0;
  }
}
