import type { Readable } from 'node:stream';

/** What a finished streamed write produced. */
export interface StagedObject {
  /** Where the bytes wait until `promote` or `discard`. */
  tempKey: string;
  size: number;
  /** Lower-case hex SHA256 computed while the bytes were stored. */
  sha256: string;
}

export interface DownloadLink {
  url: string;
  /** RFC 3339. */
  expires_at: string;
}

/**
 * Firmware blob storage. Two real implementations: the local directory (links signed by us,
 * served by the server) and S3/MinIO (real presigned GET URLs).
 *
 * Writes are staged: bytes stream into a temporary object while they are hashed, and only a
 * verified object is promoted to its final key, so a bad or cut-off upload leaves nothing.
 */
export interface BlobStore {
  readonly kind: 'local' | 's3';
  /**
   * Streams `body` into a temporary object, hashing while storing; never holds it whole in
   * memory. Rejects with FileTooLargeError past `maxBytes`, or with the stream's error if it
   * is cut off; in both cases the partial object is already removed.
   */
  stage(body: Readable, options: { maxBytes: number }): Promise<StagedObject>;
  /** Moves a staged object to `key` (overwriting: keys are content-addressed). */
  promote(tempKey: string, key: string): Promise<void>;
  /** Removes a staged object; no error if it is gone. */
  discard(tempKey: string): Promise<void>;
  /**
   * Removes an object; no error if it is gone. A store that refuses (read-only, unreachable)
   * rejects with StorageUnavailableError, so the caller can keep its record of the object.
   */
  delete(key: string): Promise<void>;
  exists(key: string): Promise<boolean>;
  /** A GET link valid for `ttlSeconds`. */
  downloadLink(key: string, ttlSeconds: number): Promise<DownloadLink>;
  /** Every key under `prefix` (staged objects included when the prefix covers them); for tests and sweeps. */
  listKeys(prefix: string): Promise<string[]>;
  /**
   * Removes staged objects older than `olderThanMs` (left by a crash); 0 removes them all, which
   * only the store's single owner may do (the local store, behind the data-directory lock).
   */
  sweepStaged(olderThanMs: number): Promise<number>;
  /** Throws if the store cannot take a write (readiness): probes with a small write. */
  ping(): Promise<void>;
  /** Space left for new objects, or undefined where the store cannot tell (S3). */
  freeBytes(): Promise<number | undefined>;
  close(): Promise<void>;
}
