/**
 * The bytes of small blobs while they are being downloaded, kept in memory: a rollout downloads
 * one firmware thousands of times, and reading the file again for every device (a fresh 64 KiB
 * buffer and a read through the thread pool per chunk) was most of the server's time in P2
 * (10,000 devices, 1 MiB). Bounded in total and per blob; an entry not read for `idleMs` is
 * dropped, so an idle server holds none. The store forgets a key it deletes or replaces.
 */
export interface HotBlobsOptions {
  /** A larger blob is never kept (a 1 GiB image is read from its file, chunk by chunk). */
  maxBlobBytes: number;
  /** All entries together; the least recently read go first. */
  maxTotalBytes: number;
  idleMs: number;
}

interface Entry {
  bytes: Buffer;
  readAtMs: number;
}

export class HotBlobs {
  readonly #options: HotBlobsOptions;
  /** In order of last read, oldest first (a Map keeps insertion order; a read re-inserts). */
  readonly #entries = new Map<string, Entry>();
  /** Loads under way: the devices that ask at once share one read of the file. */
  readonly #loading = new Map<string, Promise<Buffer>>();
  #totalBytes = 0;
  #sweeper: NodeJS.Timeout | undefined;

  constructor(options: HotBlobsOptions) {
    this.#options = options;
  }

  /** Whether a blob of `size` bytes may be kept. */
  fits(size: number): boolean {
    return size <= this.#options.maxBlobBytes && size <= this.#options.maxTotalBytes;
  }

  /** The kept bytes of a blob (a read: it stays), or undefined. */
  peek(key: string): Buffer | undefined {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    this.#entries.delete(key);
    entry.readAtMs = Date.now();
    this.#entries.set(key, entry);
    return entry.bytes;
  }

  /** The blob's bytes: kept ones at once, else `load`ed (once for concurrent callers) and kept. */
  async get(key: string, load: () => Promise<Buffer>): Promise<Buffer> {
    const kept = this.peek(key);
    if (kept) return kept;
    let loading = this.#loading.get(key);
    if (!loading) {
      loading = load().then(
        (bytes) => {
          if (this.#loading.get(key) === loading) {
            this.#loading.delete(key);
            this.#keep(key, bytes);
          }
          return bytes;
        },
        (error: unknown) => {
          if (this.#loading.get(key) === loading) this.#loading.delete(key);
          throw error;
        },
      );
      this.#loading.set(key, loading);
    }
    return loading;
  }

  /** The blob changed or is gone: a load under way is not kept either. */
  forget(key: string): void {
    this.#loading.delete(key);
    const entry = this.#entries.get(key);
    if (!entry) return;
    this.#entries.delete(key);
    this.#totalBytes -= entry.bytes.length;
    if (this.#entries.size === 0) this.#stopSweeping();
  }

  get totalBytes(): number {
    return this.#totalBytes;
  }

  close(): void {
    this.#entries.clear();
    this.#loading.clear();
    this.#totalBytes = 0;
    this.#stopSweeping();
  }

  #keep(key: string, bytes: Buffer): void {
    if (!this.fits(bytes.length)) return;
    this.forget(key);
    for (const [oldest, entry] of this.#entries) {
      if (this.#totalBytes + bytes.length <= this.#options.maxTotalBytes) break;
      this.#entries.delete(oldest);
      this.#totalBytes -= entry.bytes.length;
    }
    this.#entries.set(key, { bytes, readAtMs: Date.now() });
    this.#totalBytes += bytes.length;
    this.#sweeper ??= setInterval(() => this.#sweep(), Math.max(10, this.#options.idleMs / 2)).unref();
  }

  #sweep(): void {
    const before = Date.now() - this.#options.idleMs;
    for (const [key, entry] of this.#entries) {
      if (entry.readAtMs > before) break;
      this.forget(key);
    }
  }

  #stopSweeping(): void {
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
  }
}
