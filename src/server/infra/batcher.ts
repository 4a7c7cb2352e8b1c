/**
 * Coalesces calls made within a few milliseconds into one call with all their inputs, so a
 * burst of 10,000 devices connecting costs tens of statements, not tens of thousands.
 *
 * The inputs of a batch come from unrelated callers (devices of different organizations), so
 * one bad input must not fail the others: when a flush fails, the batch is retried in halves,
 * down to single inputs, and only the inputs that still fail alone see the error. One bad
 * input among n costs about 2·log2(n) extra statements, not n.
 */
type Entry<In, Out> = { item: In; resolve(out: Out): void; reject(error: unknown): void };

export interface BatcherOptions {
  maxSize: number;
  maxDelayMs: number;
  /**
   * Flushes running at once (default: no limit). A writer of rows that its own flushes share
   * (progress and results of the same updates) runs one at a time: the inputs that arrive while
   * it runs make the next flush, which grows with the database's latency instead of queueing
   * statements that wait on each other's row locks.
   */
  maxInFlight?: number;
}

export class Batcher<In, Out> {
  readonly #flush: (items: In[]) => Promise<Out[]>;
  readonly #maxSize: number;
  readonly #maxDelayMs: number;
  readonly #maxInFlight: number;
  #inFlight = 0;
  #queue: Entry<In, Out>[] = [];
  #timer: NodeJS.Timeout | undefined;
  readonly #running = new Set<Promise<void>>();

  /** `flush` answers one output per input, in the same order. */
  constructor(flush: (items: In[]) => Promise<Out[]>, options: BatcherOptions) {
    this.#flush = flush;
    this.#maxSize = options.maxSize;
    this.#maxDelayMs = options.maxDelayMs;
    this.#maxInFlight = options.maxInFlight ?? Number.POSITIVE_INFINITY;
  }

  add(item: In): Promise<Out> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ item, resolve, reject });
      if (this.#queue.length >= this.#maxSize) this.#run();
      else this.#timer ??= setTimeout(() => this.#run(), this.#maxDelayMs);
    });
  }

  #run(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    // At the limit, the flush that ends next runs what is queued.
    while (this.#queue.length > 0 && this.#inFlight < this.#maxInFlight) {
      const batch = this.#queue.splice(0, this.#maxSize);
      this.#inFlight += 1;
      const settled = this.#settle(batch).finally(() => {
        this.#inFlight -= 1;
        this.#running.delete(settled);
        if (this.#queue.length > 0) this.#run();
      });
      this.#running.add(settled);
    }
  }

  /**
   * Writes what is queued now, without waiting for its timer, and resolves once nothing is queued
   * or in flight: what a shutdown calls before the database it writes to closes.
   */
  async drain(): Promise<void> {
    while (this.#queue.length > 0 || this.#running.size > 0) {
      this.#run();
      await Promise.all([...this.#running]);
    }
  }

  /** Never rejects: every entry is resolved or rejected on its own. */
  async #settle(batch: Entry<In, Out>[]): Promise<void> {
    let outputs: Out[];
    try {
      outputs = await this.#flush(batch.map((entry) => entry.item));
    } catch (error) {
      if (batch.length === 1) {
        batch[0]!.reject(error);
        return;
      }
      const middle = Math.ceil(batch.length / 2);
      await Promise.all([this.#settle(batch.slice(0, middle)), this.#settle(batch.slice(middle))]);
      return;
    }
    for (const [index, entry] of batch.entries()) entry.resolve(outputs[index] as Out);
  }
}
