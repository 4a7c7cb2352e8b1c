import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { constants, type Dirent, mkdirSync } from 'node:fs';
import { access, type FileHandle, mkdir, open, readdir, rename, rm, stat, statfs } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FileTooLargeError, NotFoundError } from '../errors.ts';
import { freeStoredChunks } from './body-chunks.ts';
import { fileSystemFault } from './faults.ts';
import { HotBlobs } from './hot-blobs.ts';
import { assertSafeKey, isSafeKey } from './keys.ts';
import type { BlobStore, DownloadLink, StagedObject } from './types.ts';
import { WorkerSha256 } from './worker-sha256.ts';

export interface LocalOptions {
  rootDir: string;
  /** Base URL of this server as devices reach it; links point at its `/dl/` route. */
  publicUrl: string;
  signingSecret: string;
  /**
   * Staged files are written with direct I/O where the file system takes it (DurableFileSink);
   * false writes them through the page cache, as a file system without direct I/O has it (tests).
   */
  directWrites?: boolean;
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
 * A staged file is written from slots of 1 MiB (DurableFileSink): one is filled while the others
 * are hashed and written; 8 MiB in all per upload. Writes of ~1 MiB doubled upload throughput in
 * bench/p5-upload.ts against Node's 16 KiB; 6 slots of 2 MiB and 16 of 512 KiB measured alike.
 */
const SLOT_BYTES = 1024 * 1024;
const SLOTS = 8;
/** Direct I/O's alignment of offsets and lengths: the largest logical block size of disks in use. */
const DIRECT_ALIGN_BYTES = 4096;
const WASM_PAGE_BYTES = 64 * 1024;
/** Periodic datasync of a staged file written through the page cache; 32 and 64 MiB measured alike. */
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
  readonly #directWrites: boolean;
  readonly #hot = new HotBlobs(HOT_BLOBS);

  constructor(options: LocalOptions) {
    if (options.signingSecret.length === 0) throw new Error('LocalBlobStore needs a non-empty signingSecret');
    this.#rootDir = path.resolve(options.rootDir);
    // Created once, at start, so a fresh install is ready before its first upload.
    mkdirSync(this.#rootDir, { recursive: true });
    this.#publicUrl = withoutTrailingSlashes(options.publicUrl);
    this.#signingSecret = options.signingSecret;
    this.#directWrites = options.directWrites ?? true;
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
      let direct: boolean;
      try {
        await mkdir(path.dirname(file), { recursive: true });
        ({ handle, direct } = await openStagingFile(file, this.#directWrites));
      } catch (error) {
        throw fileSystemFault(error);
      }
      const sink = new DurableFileSink(handle, { direct, maxBytes: options.maxBytes });
      try {
        await pipeline(body, sink);
        const sha256 = await sink.digestHex();
        await handle.close();
        return { tempKey, size: sink.bytes, sha256 };
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
 * Writes a staged upload, hashing and counting it, and makes it durable: fsync at the end, so
 * that a promoted object survives a power cut (otherwise the database could point at a file
 * that is not on disk). Errors the moment the count passes `maxBytes`, so an oversized upload is
 * cut off instead of stored first and refused later.
 *
 * The chunks are copied into slots of shared memory (SLOTS of SLOT_BYTES); a full slot is hashed
 * where it is by the SHA-256 worker (worker-sha256.ts) while it is written, and is filled again
 * once both are done. One copy per byte on the event loop: HashingMeter's copy into the worker's
 * slabs and a second one here were each ~0.13 s of the main thread per GiB in bench/p5-upload.ts.
 *
 * Where the file system allows it the file is opened with O_DIRECT (openStagingFile): the slots
 * go to the disk without a copy into the page cache. That copy, and the page cache it fills
 * (1 GiB of new pages per GiB uploaded), cost ~0.5–0.95 s of CPU per GiB on libuv's threads in
 * bench/p5-upload.ts, as much as SHA-256 itself; direct writes ~0.13 s. Direct I/O wants its
 * buffer, offsets and lengths aligned to the device's blocks: the slots are aligned
 * (alignedSlots), each is written whole at its own offset, and the last one is padded to a block
 * and the file cut back to its size before the fsync.
 *
 * Without direct I/O (a file system without it, tmpfs before Linux 6.6, not Linux) the same
 * slots are written through the page cache, with a datasync every SYNC_EVERY_BYTES not waited
 * for, so the disk writes the file while it arrives (the kernel starts writing back only past
 * vm.dirty_background_ratio: the final fsync used to write the whole file after its last byte).
 */
class DurableFileSink extends Writable {
  readonly #handle: FileHandle;
  readonly #direct: boolean;
  readonly #maxBytes: number;
  readonly #hash = new WorkerSha256();
  readonly #free: Buffer[];
  /** The slot being filled, and how far. */
  #slot: Buffer | undefined;
  #filled = 0;
  /** Chunks copied into slots, freed together when their slot is full. */
  #copied: Buffer[] = [];
  /** File offset of the next slot, and the bytes received so far. */
  #position = 0;
  #bytes = 0;
  readonly #storing = new Set<Promise<void>>();
  #failure: unknown;
  #waitingForSlot: (() => void) | undefined;
  #unsynced = 0;
  #syncing: Promise<void> | undefined;

  constructor(handle: FileHandle, options: { direct: boolean; maxBytes: number }) {
    super({ highWaterMark: SLOT_BYTES });
    this.#handle = handle;
    this.#direct = options.direct;
    this.#maxBytes = options.maxBytes;
    this.#free = alignedSlots(SLOTS, SLOT_BYTES);
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** Once the stream has finished: the digest, as soon as the worker has hashed the last slot. */
  digestHex(): Promise<string> {
    return this.#hash.digestHex();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#bytes += chunk.length;
    if (this.#bytes > this.#maxBytes) {
      callback(new FileTooLargeError(this.#maxBytes));
      return;
    }
    let offset: number;
    try {
      offset = this.#copy(chunk, 0);
    } catch (error) {
      callback(error as Error);
      return;
    }
    if (offset === chunk.length) {
      this.#copied.push(chunk);
      callback();
      return;
    }
    this.#copyRest(chunk, offset).then(() => {
      this.#copied.push(chunk);
      callback();
    }, callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#finish().then(() => callback(), callback);
  }

  /** Also called after a successful end (autoDestroy), when the hash has ended already. */
  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#hash.abort();
    callback(error);
  }

  /** Copies from `from` on while there is a free slot; returns where it stopped. */
  #copy(chunk: Buffer, from: number): number {
    if (this.#failure !== undefined) throw this.#failure;
    let offset = from;
    while (offset < chunk.length) {
      if (this.#slot === undefined) {
        const slot = this.#free.pop();
        if (slot === undefined) return offset;
        this.#slot = slot;
        this.#filled = 0;
      }
      const length = Math.min(SLOT_BYTES - this.#filled, chunk.length - offset);
      copyIntoShared(this.#slot, this.#filled, chunk.subarray(offset, offset + length));
      offset += length;
      this.#filled += length;
      if (this.#filled === SLOT_BYTES) this.#store(SLOT_BYTES);
    }
    return offset;
  }

  async #copyRest(chunk: Buffer, from: number): Promise<void> {
    let offset = from;
    while (offset < chunk.length) {
      await new Promise<void>((resolve) => {
        this.#waitingForSlot = resolve;
      });
      offset = this.#copy(chunk, offset);
    }
  }

  /**
   * Hashes the current slot's filled bytes and writes its first `length` bytes (padding
   * included) at the slot's offset, both in the background; the slot is free again after both.
   */
  #store(length: number): void {
    const slot = this.#slot as Buffer;
    const position = this.#position;
    const filled = this.#filled;
    this.#slot = undefined;
    this.#position += SLOT_BYTES;
    freeStoredChunks(this.#copied);
    this.#copied = [];
    const storing: Promise<void> = Promise.all([
      this.#hash.updateShared(slot.subarray(0, filled)),
      writeFully(this.#handle, slot, length, position),
    ]).then(
      () => {
        this.#storing.delete(storing);
        this.#free.push(slot);
        this.#afterWrite(length);
      },
      (error: unknown) => {
        this.#storing.delete(storing);
        this.#failure ??= error;
        this.#wake();
      },
    );
    this.#storing.add(storing);
  }

  #afterWrite(length: number): void {
    this.#unsynced += length;
    if (!this.#direct && this.#unsynced >= SYNC_EVERY_BYTES && this.#syncing === undefined) {
      this.#unsynced = 0;
      this.#syncing = this.#handle.datasync().then(
        () => {
          this.#syncing = undefined;
        },
        (error: unknown) => {
          this.#syncing = undefined;
          this.#failure ??= error;
        },
      );
    }
    this.#wake();
  }

  #wake(): void {
    const wake = this.#waitingForSlot;
    this.#waitingForSlot = undefined;
    wake?.();
  }

  async #finish(): Promise<void> {
    if (this.#slot !== undefined && this.#filled > 0) {
      // Direct I/O writes whole blocks: the last one is padded, and the file cut back below.
      const length = this.#direct ? Math.ceil(this.#filled / DIRECT_ALIGN_BYTES) * DIRECT_ALIGN_BYTES : this.#filled;
      this.#slot.fill(0, this.#filled, length);
      this.#store(length);
    }
    freeStoredChunks(this.#copied);
    this.#copied = [];
    while (this.#storing.size > 0) await Promise.allSettled([...this.#storing]);
    await this.#syncing;
    if (this.#failure !== undefined) throw this.#failure;
    // Every slot is hashed by now: ends the hash, whose digest arrives while the file is synced.
    void this.#hash.digestHex();
    if (this.#direct && this.#bytes % DIRECT_ALIGN_BYTES !== 0) await this.#handle.truncate(this.#bytes);
    await this.#handle.sync();
  }
}

/**
 * Copies `source` into `target` (shared memory) at `offset`. Buffer#copy would go through
 * TypedArray#set, which copies into shared memory with relaxed atomics (twice the time of a
 * memmove: ~0.25 s per GiB on the main thread, see worker-sha256.ts); a fill with a source as
 * long as the range is one plain memcpy.
 */
function copyIntoShared(target: Buffer, offset: number, source: Buffer): void {
  target.fill(source, offset, offset + source.length);
}

/** Writes `length` bytes of `buffer` at `position`, again after a short write (rare on a file, e.g. just before ENOSPC). */
async function writeFully(handle: FileHandle, buffer: Buffer, length: number, position: number): Promise<void> {
  let written = 0;
  while (written < length) {
    written += (await handle.write(buffer, written, length - written, position + written)).bytesWritten;
  }
}

/**
 * `count` buffers of `bytes` each in shared memory (the hashing worker reads them where they
 * are), aligned for direct I/O. Node's own buffers come from malloc (16-byte aligned); a
 * WebAssembly memory is mapped whole, so it starts on a page, and `bytes` is a multiple of 64 KiB
 * (a WebAssembly page, and a multiple of every block size direct I/O asks for).
 */
function alignedSlots(count: number, bytes: number): Buffer[] {
  const pages = (count * bytes) / WASM_PAGE_BYTES;
  const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
  return Array.from({ length: count }, (_, index) => Buffer.from(memory.buffer, index * bytes, bytes));
}

/**
 * Creates a staging file for writing, with O_DIRECT when `direct` and the file system takes it
 * (see DurableFileSink), else without; the `direct` returned says which.
 */
async function openStagingFile(file: string, direct: boolean): Promise<{ handle: FileHandle; direct: boolean }> {
  if (direct && constants.O_DIRECT !== undefined) {
    try {
      const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_DIRECT;
      return { handle: await open(file, flags), direct: true };
    } catch (error) {
      if (errorCode(error) !== 'EINVAL') throw error;
      // The file system refuses O_DIRECT; the refused open may have created the file already.
      await rm(file, { force: true });
    }
  }
  return { handle: await open(file, 'wx'), direct: false };
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
