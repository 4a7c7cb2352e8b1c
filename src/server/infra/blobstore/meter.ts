import { Transform, type TransformCallback } from 'node:stream';
import { FileTooLargeError } from '../errors.ts';
import { WorkerSha256 } from './worker-sha256.ts';

/**
 * Counts and hashes an upload's bytes as a store writes them, and refuses the chunk that takes
 * the count past `maxBytes`, so an oversized upload is cut off instead of stored first and
 * refused later. Its SHA256 is computed on a worker thread meanwhile. Not a stream: a store's
 * own sink calls it (no stream hop per chunk), or HashingMeter wraps it as one.
 */
export class UploadMeter {
  readonly #hash = new WorkerSha256();
  readonly #maxBytes: number;
  #bytes = 0;

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  /**
   * Counts and hashes `chunk`, which the caller may pass on at once. Throws past `maxBytes`;
   * answers a promise when the worker is a few MiB behind: take the next chunk once it settles.
   */
  add(chunk: Buffer): Promise<void> | undefined {
    this.#bytes += chunk.length;
    if (this.#bytes > this.#maxBytes) throw new FileTooLargeError(this.#maxBytes);
    return this.#hash.update(chunk);
  }

  /** The last chunk was added: the worker finishes hashing while the store finishes writing. */
  end(): void {
    void this.#hash.digestHex();
  }

  /** The upload failed; harmless after end(). */
  abort(): void {
    this.#hash.abort();
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** Once ended: the digest, as soon as the worker has hashed the last bytes. */
  digestHex(): Promise<string> {
    return this.#hash.digestHex();
  }
}

/** An UploadMeter as a stream the bytes flow through, for a sink that takes a Readable (S3). */
export class HashingMeter extends Transform {
  readonly #meter: UploadMeter;

  constructor(maxBytes: number) {
    super();
    this.#meter = new UploadMeter(maxBytes);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    let copying: Promise<void> | undefined;
    try {
      copying = this.#meter.add(chunk);
    } catch (error) {
      callback(error as Error);
      return;
    }
    if (copying === undefined) {
      callback(null, chunk);
      return;
    }
    // The worker is a few MiB behind: pass the chunk on, take the next once it is copied.
    this.push(chunk);
    copying.then(() => callback(), callback);
  }

  override _flush(callback: TransformCallback): void {
    this.#meter.end();
    callback();
  }

  /** Also called after a successful end (autoDestroy), when the hash has ended already. */
  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#meter.abort();
    callback(error);
  }

  get bytes(): number {
    return this.#meter.bytes;
  }

  digestHex(): Promise<string> {
    return this.#meter.digestHex();
  }
}
