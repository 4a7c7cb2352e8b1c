import { Transform, type TransformCallback } from 'node:stream';
import { FileTooLargeError } from '../errors.ts';
import { WorkerSha256 } from './worker-sha256.ts';

/**
 * Hashes and counts the bytes flowing through, and errors the stream the moment the count
 * passes `maxBytes`, so an oversized upload is cut off instead of stored first and refused later.
 * Each chunk goes on at once; its SHA256 is computed on a worker thread meanwhile.
 */
export class HashingMeter extends Transform {
  readonly #hash = new WorkerSha256();
  readonly #maxBytes: number;
  #bytes = 0;

  constructor(maxBytes: number) {
    super();
    this.#maxBytes = maxBytes;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#bytes += chunk.length;
    if (this.#bytes > this.#maxBytes) {
      callback(new FileTooLargeError(this.#maxBytes));
      return;
    }
    let copying: Promise<void> | undefined;
    try {
      copying = this.#hash.update(chunk);
    } catch (error) {
      callback(error as Error);
      return;
    }
    if (copying === undefined) {
      callback(null, chunk);
      return;
    }
    // The worker is a few MiB behind: pass the chunk on once it is copied, since the store may
    // free a chunk as soon as it has written it (body-chunks.ts).
    copying.then(() => callback(null, chunk), callback);
  }

  override _flush(callback: TransformCallback): void {
    // Ends the hash without waiting for its digest: the worker finishes hashing while the store
    // finishes writing.
    void this.#hash.digestHex();
    callback();
  }

  /** Also called after a successful end (autoDestroy), when the hash has ended already. */
  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#hash.abort();
    callback(error);
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** Once the stream has ended: the digest, as soon as the worker has hashed the last bytes. */
  digestHex(): Promise<string> {
    return this.#hash.digestHex();
  }
}
