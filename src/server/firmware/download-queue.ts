/**
 * When a download refused for want of a slot should come back. The devices already told to come
 * back form a queue, served at the rate downloads finish; each newcomer is given the next place.
 * Ten thousand devices sent away together then return about when a slot frees for each, instead
 * of at random within a few seconds (most of them to be refused again, on and on: at 10,000
 * devices the downloads took three times as long as the bytes). Pure but for the clock it is given.
 */
export interface DownloadQueueOptions {
  /** Downloads served at once (EDGEFLOW_MAX_CONCURRENT_DOWNLOADS). */
  slots: number;
  /** The longest wait given (the agent may wait a little longer, to spread its return). */
  maxSeconds: number;
}

/** Finishes remembered for the rate. */
const RATE_WINDOW = 64;
/** Fewer finishes than this (or none lately) say nothing yet of the rate. */
const RATE_MIN_FINISHES = 8;
const RATE_STALE_MS = 10_000;

export class DownloadQueue {
  readonly #options: DownloadQueueOptions;
  readonly #finishedAtMs: number[] = [];
  #nextPlaceAtMs = 0;

  constructor(options: DownloadQueueOptions) {
    this.#options = options;
  }

  /** A download ended (served or cut): a slot freed. */
  finished(nowMs: number): void {
    this.#finishedAtMs.push(nowMs);
    if (this.#finishedAtMs.length > RATE_WINDOW) this.#finishedAtMs.shift();
  }

  /**
   * Downloads finishing per second: measured over the latest finishes; until there are enough
   * (the first wave is still downloading), as if each slot freed once a second.
   */
  ratePerSecond(nowMs: number): number {
    const finishes = this.#finishedAtMs;
    const first = finishes[0];
    const last = finishes.at(-1);
    if (finishes.length >= RATE_MIN_FINISHES && first !== undefined && last !== undefined && last > first) {
      if (nowMs - last <= RATE_STALE_MS) return ((finishes.length - 1) * 1000) / (last - first);
    }
    return this.#options.slots;
  }

  /** The next place in the queue, in whole seconds from now (Retry-After): at least 1, at most maxSeconds. */
  comeBackInSeconds(nowMs: number): number {
    this.#nextPlaceAtMs = Math.max(this.#nextPlaceAtMs, nowMs) + 1000 / this.ratePerSecond(nowMs);
    const seconds = Math.ceil((this.#nextPlaceAtMs - nowMs) / 1000);
    return Math.min(this.#options.maxSeconds, Math.max(1, seconds));
  }
}
