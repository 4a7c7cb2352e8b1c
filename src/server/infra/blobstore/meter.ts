import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { FileTooLargeError } from '../errors.ts';

/**
 * Hashes and counts the bytes flowing through, and errors the stream the moment the count
 * passes `maxBytes`, so an oversized upload is cut off instead of stored first and refused later.
 */
export class HashingMeter extends Transform {
  readonly #hash: Hash = createHash('sha256');
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
    this.#hash.update(chunk);
    callback(null, chunk);
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** Only meaningful once the stream has ended. */
  digestHex(): string {
    return this.#hash.digest('hex');
  }
}
