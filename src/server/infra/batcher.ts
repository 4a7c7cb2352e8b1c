/**
 * Coalesces calls made within a few milliseconds into one call with all their inputs, so a
 * burst of 10,000 devices connecting costs tens of statements, not tens of thousands.
 */
export class Batcher<In, Out> {
  readonly #flush: (items: In[]) => Promise<Out[]>;
  readonly #maxSize: number;
  readonly #maxDelayMs: number;
  #queue: { item: In; resolve(out: Out): void; reject(error: unknown): void }[] = [];
  #timer: NodeJS.Timeout | undefined;

  /** `flush` answers one output per input, in the same order. */
  constructor(flush: (items: In[]) => Promise<Out[]>, options: { maxSize: number; maxDelayMs: number }) {
    this.#flush = flush;
    this.#maxSize = options.maxSize;
    this.#maxDelayMs = options.maxDelayMs;
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
    const batch = this.#queue;
    this.#queue = [];
    if (batch.length === 0) return;
    this.#flush(batch.map((entry) => entry.item)).then(
      (outputs) => {
        for (const [index, entry] of batch.entries()) entry.resolve(outputs[index] as Out);
      },
      (error: unknown) => {
        for (const entry of batch) entry.reject(error);
      },
    );
  }
}
