import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { type FileHandle, mkdir, open, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { pipeline } from 'node:stream/promises';

/**
 * Where downloaded firmware bytes go. A sink remembers how much it holds, which is where a resumed
 * download continues (HTTP Range), and can tell the SHA256 of everything it holds.
 */
export interface DownloadSink {
  /** The image on disk for the installer; `undefined` for sinks that keep no bytes. */
  readonly filePath: string | undefined;
  /** Bytes held so far: the offset a resumed download asks for. */
  offset(): Promise<number>;
  append(chunk: Uint8Array): Promise<void>;
  /** Forgets everything held, e.g. when the server ignores the Range and resends from byte 0. */
  reset(): Promise<void>;
  /** Releases open handles and keeps the bytes, for a later resume. */
  close(): Promise<void>;
  sha256(): Promise<string>;
  /** Deletes what is held; the sink may not be used afterwards. */
  discard(): Promise<void>;
}

/** Appends to `<dataDir>/download/<update>.part`: the file itself is the resume point, even after a crash. */
export class FileDownloadSink implements DownloadSink {
  private handle: FileHandle | undefined;

  constructor(readonly filePath: string) {}

  async offset(): Promise<number> {
    try {
      return (await stat(this.filePath)).size;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw error;
    }
  }

  async append(chunk: Uint8Array): Promise<void> {
    if (!this.handle) {
      await mkdir(dirname(this.filePath), { recursive: true });
      this.handle = await open(this.filePath, 'a');
    }
    await this.handle.write(chunk);
  }

  async reset(): Promise<void> {
    await this.close();
    await rm(this.filePath, { force: true });
  }

  async close(): Promise<void> {
    const handle = this.handle;
    this.handle = undefined;
    if (handle) {
      await handle.sync();
      await handle.close();
    }
  }

  async sha256(): Promise<string> {
    await this.close();
    const hash = createHash('sha256');
    await pipeline(createReadStream(this.filePath), hash);
    return hash.digest('hex');
  }

  async discard(): Promise<void> {
    await this.reset();
  }
}

/**
 * Hashes and counts the bytes and drops them: thousands of simulated devices download without
 * touching the disk. A resume works within the process because the running hash lives on.
 */
export class MemoryDownloadSink implements DownloadSink {
  readonly filePath = undefined;
  private hash: Hash = createHash('sha256');
  private bytes = 0;

  async offset(): Promise<number> {
    return this.bytes;
  }

  async append(chunk: Uint8Array): Promise<void> {
    this.hash.update(chunk);
    this.bytes += chunk.byteLength;
  }

  async reset(): Promise<void> {
    this.hash = createHash('sha256');
    this.bytes = 0;
  }

  async close(): Promise<void> {}

  async sha256(): Promise<string> {
    return this.hash.copy().digest('hex');
  }

  async discard(): Promise<void> {
    await this.reset();
  }
}
