import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { constants, type Dirent, mkdirSync } from 'node:fs';
import { access, type FileHandle, mkdir, open, readdir, rename, rm, stat, statfs } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { NotFoundError } from '../errors.ts';
import { freeStoredChunks } from './body-chunks.ts';
import { fileSystemFault } from './faults.ts';
import { HotBlobs } from './hot-blobs.ts';
import { assertSafeKey, isSafeKey } from './keys.ts';
import { HashingMeter } from './meter.ts';
import type { BlobStore, DownloadLink, StagedObject } from './types.ts';

export interface LocalOptions {
  rootDir: string;
  /** Base URL of this server as devices reach it; links point at its `/dl/` route. */
  publicUrl: string;
  signingSecret: string;
}

export type LinkVerdict = 'ok' | 'expired' | 'invalid';

/** Extends NotFoundError so that a route which lets it escape answers 404 without a mapping of its own. */
export class BlobNotFoundError extends NotFoundError {
  constructor(readonly key: string) {
    super('blob_not_found', 'no such file');
  }
}

const STAGING_DIR = '.staging';
/**
 * With Node's default 16 KiB, every 64 KiB socket chunk became its own write and stalled the
 * upload on backpressure; 1 MiB doubled upload throughput in bench/p5-upload.ts (256 KiB and
 * 4 MiB measured worse).
 */
const WRITE_BUFFER_BYTES = 1024 * 1024;
/** Periodic datasync of a staged file (DurableFileSink); 32 and 64 MiB measured alike. */
const SYNC_EVERY_BYTES = 32 * 1024 * 1024;
const SIGNATURE_HEX = /^[0-9a-f]{64}$/;
/**
 * Firmware up to 16 MiB is served from memory while it is downloaded (hot-blobs.ts), 64 MiB of it
 * at most, dropped a minute after its last download.
 */
const HOT_BLOBS = { maxBlobBytes: 16 * 1024 * 1024, maxTotalBytes: 64 * 1024 * 1024, idleMs: 60_000 };

/**
 * Firmware in a local directory, one file per key. Downloads are links signed by us (HMAC over
 * key and expiry) that the server itself serves through `GET /dl/*`.
 */
export class LocalBlobStore implements BlobStore {
  readonly kind = 'local';
  readonly #rootDir: string;
  #publicUrl: string;
  readonly #signingSecret: string;
  readonly #hot = new HotBlobs(HOT_BLOBS);

  constructor(options: LocalOptions) {
    if (options.signingSecret.length === 0) throw new Error('LocalBlobStore needs a non-empty signingSecret');
    this.#rootDir = path.resolve(options.rootDir);
    // Created once, at start, so a fresh install is ready before its first upload.
    mkdirSync(this.#rootDir, { recursive: true });
    this.#publicUrl = withoutTrailingSlashes(options.publicUrl);
    this.#signingSecret = options.signingSecret;
  }

  /** A server listening on port 0 learns its own URL only after listen(), after this store exists. */
  setPublicUrl(publicUrl: string): void {
    this.#publicUrl = withoutTrailingSlashes(publicUrl);
  }

  async stage(body: Readable, options: { maxBytes: number }): Promise<StagedObject> {
    const tempKey = `${STAGING_DIR}/${randomUUID()}`;
    const file = this.#pathOf(tempKey);
    // Until pipeline() listens, an error from the body (a client hanging up) would be an
    // uncaught 'error' event; pipeline still sees it, since the stream is then destroyed.
    body.on('error', ignore);
    try {
      let handle: FileHandle;
      try {
        await mkdir(path.dirname(file), { recursive: true });
        handle = await open(file, 'wx');
      } catch (error) {
        throw fileSystemFault(error);
      }
      const meter = new HashingMeter(options.maxBytes);
      try {
        await pipeline(body, meter, new DurableFileSink(handle));
        const sha256 = await meter.digestHex();
        await handle.close();
        return { tempKey, size: meter.bytes, sha256 };
      } catch (error) {
        // close() waits for a write or sync still under way on the handle.
        await handle.close().catch(ignore);
        await rm(file, { force: true }).catch(ignore);
        throw fileSystemFault(error);
      }
    } finally {
      body.off('error', ignore);
    }
  }

  async promote(tempKey: string, key: string): Promise<void> {
    const target = this.#pathOf(key);
    try {
      await mkdir(path.dirname(target), { recursive: true });
      // rename is atomic on one filesystem (staging lives under the same root), so readers see
      // either no file or the whole file.
      await rename(this.#pathOf(tempKey), target);
    } catch (error) {
      throw fileSystemFault(error);
    } finally {
      this.#hot.forget(key);
    }
    await syncDirectory(path.dirname(target));
  }

  async discard(tempKey: string): Promise<void> {
    await rm(this.#pathOf(tempKey), { force: true });
  }

  async delete(key: string): Promise<void> {
    this.#hot.forget(key);
    const file = this.#pathOf(key);
    try {
      await rm(file, { force: true });
    } catch (error) {
      throw fileSystemFault(error);
    }
  }

  async exists(key: string): Promise<boolean> {
    try {
      return (await stat(this.#pathOf(key))).isFile();
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }

  async downloadLink(key: string, ttlSeconds: number): Promise<DownloadLink> {
    assertSafeKey(key);
    const expires = Math.floor(Date.now() / 1000) + ttlSeconds;
    const encodedKey = key.split('/').map(encodeURIComponent).join('/');
    const signature = this.#sign(key, expires);
    return {
      url: `${this.#publicUrl}/dl/${encodedKey}?expires=${expires}&signature=${signature}`,
      expires_at: new Date(expires * 1000).toISOString(),
    };
  }

  /**
   * Checks a link's `expires` and `signature` query values for `key` (the decoded path after
   * `/dl/`). Never throws: every malformed input is simply 'invalid'. The signature is checked
   * before the expiry so that 'expired' is only ever said of a link we really issued.
   */
  verifyLink(key: string, expires: string | number, signature: string, nowMs = Date.now()): LinkVerdict {
    if (!isSafeKey(key)) return 'invalid';
    const expiresText = String(expires);
    if (!/^\d{1,12}$/.test(expiresText) || !SIGNATURE_HEX.test(signature)) return 'invalid';
    const expected = Buffer.from(this.#sign(key, Number(expiresText)), 'hex');
    if (!timingSafeEqual(expected, Buffer.from(signature, 'hex'))) return 'invalid';
    return Number(expiresText) * 1000 <= nowMs ? 'expired' : 'ok';
  }

  /**
   * The size, for Content-Length and Range arithmetic: from memory while the blob is kept there (a
   * rollout's every download asks; the file system's stat was 3.8 s of the server's CPU in P2).
   */
  async stat(key: string): Promise<{ size: number }> {
    const kept = this.#hot.peek(key);
    if (kept) return { size: kept.length };
    try {
      const info = await stat(this.#pathOf(key));
      if (!info.isFile()) throw new BlobNotFoundError(key);
      return { size: info.size };
    } catch (error) {
      if (isNotFound(error)) throw new BlobNotFoundError(key);
      throw error;
    }
  }

  /**
   * A read stream over the whole object or over the inclusive byte range `start`..`end`
   * (`end` defaults to, and is clamped at, the last byte). `size` is always the object's total
   * size, as a Content-Range header needs it. A range that does not fit throws RangeError: the
   * caller answers 416 after comparing against `stat().size`.
   */
  async openRead(key: string, range?: { start: number; end?: number }): Promise<{ stream: Readable; size: number }> {
    const kept = this.#hot.peek(key);
    if (kept) return { stream: bytesStream(kept, byteRange(range, kept.length)), size: kept.length };
    let handle: Awaited<ReturnType<typeof open>>;
    try {
      handle = await open(this.#pathOf(key), 'r');
    } catch (error) {
      if (isNotFound(error)) throw new BlobNotFoundError(key);
      throw error;
    }
    let streaming = false;
    try {
      // The size comes from the open descriptor, so it matches the bytes the stream will read.
      const info = await handle.stat();
      if (!info.isFile()) throw new BlobNotFoundError(key);
      const { size } = info;
      const bounds = byteRange(range, size);
      if (this.#hot.fits(size)) {
        const bytes = await this.#hot.get(key, () => handle.readFile());
        return { stream: bytesStream(bytes, bounds), size };
      }
      streaming = true;
      return { stream: handle.createReadStream(bounds ?? {}), size };
    } finally {
      // The read stream closes its descriptor when it ends.
      if (!streaming) await handle.close();
    }
  }

  async listKeys(prefix: string): Promise<string[]> {
    // Walk only the deepest directory the prefix names, then filter the rest of it by text.
    const directoryPart = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
    if (directoryPart !== '') assertSafeKey(directoryPart);
    const keys: string[] = [];
    await walkFiles(path.join(this.#rootDir, ...directoryPart.split('/')), directoryPart, keys);
    return keys.filter((key) => key.startsWith(prefix)).sort();
  }

  async sweepStaged(olderThanMs: number): Promise<number> {
    // A cutoff of 0 sweeps everything, also files stamped a little in the future (clock skew).
    const cutoffMs = olderThanMs === 0 ? Number.POSITIVE_INFINITY : Date.now() - olderThanMs;
    const stagingDir = path.join(this.#rootDir, STAGING_DIR);
    let names: string[];
    try {
      names = await readdir(stagingDir);
    } catch (error) {
      if (isNotFound(error)) return 0;
      throw error;
    }
    let removed = 0;
    for (const name of names) {
      const file = path.join(stagingDir, name);
      try {
        // A live upload keeps touching its file, so only abandoned ones fall behind the cutoff.
        if ((await stat(file)).mtimeMs >= cutoffMs) continue;
        await rm(file, { force: true });
        removed++;
      } catch (error) {
        if (!isNotFound(error)) throw error;
      }
    }
    return removed;
  }

  /**
   * Writes, syncs and removes a small probe file. Creates nothing else: a root that vanished (an
   * unmounted volume) must read as not ready, not be recreated.
   */
  async ping(): Promise<void> {
    await access(this.#rootDir, constants.R_OK | constants.W_OK);
    const stagingDir = path.join(this.#rootDir, STAGING_DIR);
    await mkdir(stagingDir).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'EEXIST') throw error;
    });
    const probe = path.join(stagingDir, `probe-${randomUUID()}`);
    const handle = await open(probe, 'wx');
    try {
      await handle.writeFile('ready?');
      await handle.sync();
    } finally {
      await handle.close();
      await rm(probe, { force: true });
    }
  }

  async freeBytes(): Promise<number> {
    const info = await statfs(this.#rootDir);
    return info.bavail * info.bsize;
  }

  async close(): Promise<void> {
    this.#hot.close();
  }

  #sign(key: string, expires: number): string {
    return createHmac('sha256', this.#signingSecret).update(`${key}\n${expires}`).digest('hex');
  }

  #pathOf(key: string): string {
    assertSafeKey(key);
    return path.join(this.#rootDir, ...key.split('/'));
  }
}

/**
 * Writes a staged upload and makes it durable: fsync at the end, so that a promoted object
 * survives a power cut (otherwise the database could point at a file that is not on disk).
 * Along the way it asks for a datasync every SYNC_EVERY_BYTES without waiting for it, so the
 * disk writes the file while it arrives: the kernel itself starts writing back only past
 * vm.dirty_background_ratio (10 % of memory), so the final fsync used to write the whole file
 * after its last byte (~0.65 s per GiB in bench/p5-upload.ts; ~0.03 s now).
 */
class DurableFileSink extends Writable {
  readonly #handle: FileHandle;
  #position = 0;
  #unsynced = 0;
  #syncing: Promise<void> | undefined;
  #syncError: unknown;

  constructor(handle: FileHandle) {
    super({ highWaterMark: WRITE_BUFFER_BYTES });
    this.#handle = handle;
  }

  override _writev(chunks: { chunk: Buffer }[], callback: (error?: Error | null) => void): void {
    this.#write(chunks.map(({ chunk }) => chunk)).then(() => callback(), callback);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#write([chunk]).then(() => callback(), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#finish().then(() => callback(), callback);
  }

  async #write(buffers: Buffer[]): Promise<void> {
    if (this.#syncError !== undefined) throw this.#syncError;
    let size = 0;
    for (const buffer of buffers) size += buffer.length;
    let written = (await this.#handle.writev(buffers, this.#position)).bytesWritten;
    if (written < size) {
      // A short write (rare on a file, e.g. just before ENOSPC): the rest, until it errors.
      const all = Buffer.concat(buffers);
      while (written < size) {
        written += (await this.#handle.write(all, written, size - written, this.#position + written)).bytesWritten;
      }
    }
    this.#position += size;
    this.#unsynced += size;
    freeStoredChunks(buffers);
    if (this.#unsynced >= SYNC_EVERY_BYTES && this.#syncing === undefined) {
      this.#unsynced = 0;
      this.#syncing = this.#handle.datasync().then(
        () => {
          this.#syncing = undefined;
        },
        (error: unknown) => {
          this.#syncing = undefined;
          this.#syncError = error;
        },
      );
    }
  }

  async #finish(): Promise<void> {
    await this.#syncing;
    if (this.#syncError !== undefined) throw this.#syncError;
    await this.#handle.sync();
  }
}

function withoutTrailingSlashes(url: string): string {
  return url.replace(/\/+$/, '');
}

async function walkFiles(directory: string, keyPrefix: string, into: string[]): Promise<void> {
  let entries: Dirent[];
  try {
    entries = await readdir(directory, { withFileTypes: true });
  } catch (error) {
    if (isNotFound(error) || isNotDirectory(error)) return;
    throw error;
  }
  for (const entry of entries) {
    const key = keyPrefix === '' ? entry.name : `${keyPrefix}/${entry.name}`;
    if (entry.isDirectory()) await walkFiles(path.join(directory, entry.name), key, into);
    else if (entry.isFile()) into.push(key);
  }
}

/** Makes a rename durable; best effort, since not every platform can open a directory. */
async function syncDirectory(directory: string): Promise<void> {
  try {
    const handle = await open(directory, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch {
    // fsync of a directory is an extra, not a requirement
  }
}

function errorCode(error: unknown): unknown {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

function isNotFound(error: unknown): boolean {
  return errorCode(error) === 'ENOENT';
}

function isNotDirectory(error: unknown): boolean {
  return errorCode(error) === 'ENOTDIR';
}

function ignore(): void {}

/**
 * The inclusive byte range to read of an object of `size` bytes (`end` defaults to, and is
 * clamped at, the last byte), or undefined for the whole. A range that does not fit throws
 * RangeError (the caller answers 416).
 */
function byteRange(range: { start: number; end?: number } | undefined, size: number) {
  if (range === undefined) return undefined;
  const end = Math.min(range.end ?? size - 1, size - 1);
  if (!Number.isInteger(range.start) || range.start < 0 || range.start > end) {
    throw new RangeError(`range ${range.start}-${range.end ?? ''} does not fit an object of ${size} bytes`);
  }
  return { start: range.start, end };
}

/** A byte stream over kept bytes (a view: nothing is copied). */
function bytesStream(bytes: Buffer, bounds: { start: number; end: number } | undefined): Readable {
  return Readable.from([bounds ? bytes.subarray(bounds.start, bounds.end + 1) : bytes], { objectMode: false });
}
