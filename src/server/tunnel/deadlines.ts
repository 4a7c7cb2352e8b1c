/**
 * Deadlines of many waiting things on a few timers: each waits in the bucket of its deadline
 * rounded up to RESOLUTION_MS, and one timer per bucket expires what is still in it. Ten
 * thousand commands sent in one pass share a handful of timers instead of owning one each (a
 * timer, its closure and its async bookkeeping per command were most of what a rollout's send
 * left for the garbage collector: P1 in docs/benchmarks.md). A deadline fires up to
 * RESOLUTION_MS late, never early.
 */
const RESOLUTION_MS = 100;

interface Bucket<T> {
  readonly waiting: Set<T>;
  readonly timer: NodeJS.Timeout;
}

/** A thing that waits: its bucket (the deadline rounded up) is kept on it, so that it leaves in O(1). */
export interface Waiting {
  deadlineAt: number | undefined;
}

export class Deadlines<T extends Waiting> {
  readonly #buckets = new Map<number, Bucket<T>>();

  readonly #expire: (item: T) => void;

  constructor(expire: (item: T) => void) {
    this.#expire = expire;
  }

  /** `item` expires `waitMs` from now (to the bucket's end) unless it leaves first. */
  add(item: T, waitMs: number): void {
    const now = Date.now();
    const at = Math.ceil((now + waitMs) / RESOLUTION_MS) * RESOLUTION_MS;
    let bucket = this.#buckets.get(at);
    if (!bucket) {
      bucket = { waiting: new Set(), timer: setTimeout(() => this.#fire(at), at - now) };
      this.#buckets.set(at, bucket);
    }
    bucket.waiting.add(item);
    item.deadlineAt = at;
  }

  /** `item` no longer waits (answered, or its link closed); a bucket left empty stops its timer. */
  remove(item: T): void {
    const at = item.deadlineAt;
    if (at === undefined) return;
    item.deadlineAt = undefined;
    const bucket = this.#buckets.get(at)!;
    bucket.waiting.delete(item);
    if (bucket.waiting.size === 0) {
      clearTimeout(bucket.timer);
      this.#buckets.delete(at);
    }
  }

  #fire(at: number): void {
    const bucket = this.#buckets.get(at);
    if (!bucket) return;
    this.#buckets.delete(at);
    for (const item of bucket.waiting) {
      item.deadlineAt = undefined;
      this.#expire(item);
    }
  }
}
