import { Worker } from 'node:worker_threads';

/**
 * SHA256 on a worker thread, so that hashing an upload runs beside its parsing and writing
 * instead of on the event loop (bench/p5-upload.ts: SHA256 was ~0.9 s of the main thread's
 * ~2.1 s per GiB). Bytes are copied into 1 MiB slabs (ArrayBuffers) that are transferred, not
 * copied, to the worker and back. A SharedArrayBuffer ring measured worse: V8 copies into shared
 * memory with a slow relaxed-atomic memmove (~0.25 s per GiB on the main thread against ~0.05).
 *
 * The worker is inline (`eval`, CommonJS, node:crypto only): no entry file to resolve under tsx
 * or from a bundle. One worker serves every upload of the process; it is started by the first
 * upload and ends once none has used it for IDLE_MS.
 *
 * A caller that has its bytes in shared memory already (the local store's write buffers,
 * local.ts) has them hashed in place instead (`updateShared`): no copy, one message each way.
 */
/** Bytes copied into one slab before it goes to the worker: ~1,000 messages per GiB each way. */
const SLAB_BYTES = 1024 * 1024;
/** Slabs one hash may have in flight: how far the worker may fall behind. */
const SLABS_IN_FLIGHT = 8;
const IDLE_MS = 30_000;

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const hashes = new Map();
parentPort.on('message', (message) => {
  const { id } = message;
  if (message.type === 'start') {
    hashes.set(id, createHash('sha256'));
  } else if (message.type === 'slab') {
    hashes.get(id)?.update(new Uint8Array(message.slab, 0, message.length));
    parentPort.postMessage({ type: 'slab', id, slab: message.slab }, [message.slab]);
  } else if (message.type === 'shared') {
    hashes.get(id)?.update(new Uint8Array(message.memory, message.offset, message.length));
    parentPort.postMessage({ type: 'hashed', id });
  } else if (message.type === 'end') {
    const hash = hashes.get(id);
    hashes.delete(id);
    if (hash !== undefined) parentPort.postMessage({ type: 'digest', id, hex: hash.digest('hex') });
  } else if (message.type === 'abort') {
    hashes.delete(id);
  }
});
`;

type WorkerReply =
  | { type: 'slab'; id: number; slab: ArrayBuffer }
  | { type: 'hashed'; id: number }
  | { type: 'digest'; id: number; hex: string };

interface JobCallbacks {
  returned(slab: ArrayBuffer): void;
  hashed(): void;
  digest(hex: string): void;
  failed(error: Error): void;
}

/** The process's one hashing worker, started on demand. */
class HashThread {
  #worker: Worker | undefined;
  readonly #jobs = new Map<number, JobCallbacks>();
  #nextId = 1;
  #idleTimer: NodeJS.Timeout | undefined;

  open(callbacks: JobCallbacks): number {
    const id = this.#nextId++;
    this.#jobs.set(id, callbacks);
    clearTimeout(this.#idleTimer);
    this.post({ type: 'start', id });
    // Referenced while a hash is open: awaiting a digest keeps the process alive.
    this.#worker?.ref();
    return id;
  }

  close(id: number): void {
    if (!this.#jobs.delete(id) || this.#jobs.size > 0) return;
    this.#worker?.unref();
    this.#idleTimer = setTimeout(() => this.#stop(), IDLE_MS).unref();
  }

  post(message: { type: string; id: number; [field: string]: unknown }, transfer?: ArrayBuffer[]): void {
    this.#started().postMessage(message, transfer);
  }

  #started(): Worker {
    if (this.#worker) return this.#worker;
    // execArgv: [] keeps the parent's flags (tsx's --import) out of a worker that needs none.
    const worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [] });
    worker.on('message', (reply: WorkerReply) => {
      const job = this.#jobs.get(reply.id);
      if (reply.type === 'slab') job?.returned(reply.slab);
      else if (reply.type === 'hashed') job?.hashed();
      else job?.digest(reply.hex);
    });
    const fail = (error: Error) => {
      if (this.#worker !== worker) return;
      this.#worker = undefined;
      for (const job of this.#jobs.values()) job.failed(error);
      this.#jobs.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`the hashing worker exited (code ${code})`)));
    this.#worker = worker;
    return worker;
  }

  #stop(): void {
    const worker = this.#worker;
    this.#worker = undefined;
    void worker?.terminate();
  }
}

const thread = new HashThread();

/**
 * One SHA256 computed on the worker. `update` copies the bytes (the caller may reuse or pass on
 * its buffer at once) into slabs that are moved, not copied, to the worker and back; it resolves
 * once they are copied, waiting only while SLABS_IN_FLIGHT slabs are still being hashed.
 */
export class WorkerSha256 {
  readonly #id: number;
  readonly #free: ArrayBuffer[] = [];
  #slabs = 0;
  #slab: Buffer | undefined;
  #filled = 0;
  #waitingForSlab: (() => void) | undefined;
  /** Shared bytes sent and not hashed yet, oldest first (the worker answers in order). */
  readonly #hashing: { resolve(): void; reject(error: Error): void }[] = [];
  #failure: Error | undefined;
  #digest: { resolve(hex: string): void; reject(error: Error): void } | undefined;
  readonly #digestHex: Promise<string>;
  #ended = false;

  constructor() {
    this.#digestHex = new Promise<string>((resolve, reject) => {
      this.#digest = { resolve, reject };
    });
    // A hash abandoned with the upload must not report an unhandled rejection.
    this.#digestHex.catch(() => {});
    this.#id = thread.open({
      returned: (slab) => {
        this.#free.push(slab);
        this.#wake();
      },
      hashed: () => this.#hashing.shift()?.resolve(),
      digest: (hex) => {
        thread.close(this.#id);
        this.#digest?.resolve(hex);
      },
      failed: (error) => {
        this.#failure = error;
        this.#digest?.reject(error);
        this.#settleShared(error);
        this.#wake();
      },
    });
  }

  /**
   * Copies `chunk` for hashing: undefined when it is copied already (the usual case), else a
   * promise that resolves once it is, after the worker has handed back slabs.
   */
  update(chunk: Buffer): Promise<void> | undefined {
    const offset = this.#copy(chunk, 0);
    return offset === chunk.length ? undefined : this.#copyRest(chunk, offset);
  }

  /**
   * Hashes `bytes`, a view of shared memory, where they are: resolves once the worker has read
   * them, after which the caller may overwrite them. Keeps its place among `update`s.
   */
  updateShared(bytes: Uint8Array): Promise<void> {
    if (this.#failure) return Promise.reject(this.#failure);
    if (this.#ended) return Promise.reject(new Error('the hash has ended'));
    this.#send();
    return new Promise<void>((resolve, reject) => {
      this.#hashing.push({ resolve, reject });
      thread.post({
        type: 'shared',
        id: this.#id,
        memory: bytes.buffer,
        offset: bytes.byteOffset,
        length: bytes.byteLength,
      });
    });
  }

  /** Ends the hash; the digest arrives once the worker has caught up. */
  digestHex(): Promise<string> {
    if (!this.#ended) {
      this.#ended = true;
      this.#send();
      thread.post({ type: 'end', id: this.#id });
    }
    return this.#digestHex;
  }

  /** Drops an unfinished hash (the upload failed). */
  abort(): void {
    if (this.#ended || this.#failure) return;
    this.#ended = true;
    thread.post({ type: 'abort', id: this.#id });
    thread.close(this.#id);
    this.#settleShared(new Error('the hash was aborted'));
  }

  #settleShared(error: Error): void {
    for (const pending of this.#hashing.splice(0)) pending.reject(error);
  }

  async #copyRest(chunk: Buffer, from: number): Promise<void> {
    let offset = from;
    while (offset < chunk.length) {
      await new Promise<void>((resolve) => {
        this.#waitingForSlab = resolve;
      });
      offset = this.#copy(chunk, offset);
    }
  }

  /** Copies from `offset` on while there is a slab to copy into; returns where it stopped. */
  #copy(chunk: Buffer, from: number): number {
    if (this.#failure) throw this.#failure;
    let offset = from;
    while (offset < chunk.length) {
      if (this.#slab === undefined) {
        const free = this.#free.pop() ?? (this.#slabs < SLABS_IN_FLIGHT ? this.#newSlab() : undefined);
        if (free === undefined) return offset;
        this.#slab = Buffer.from(free);
        this.#filled = 0;
      }
      const length = Math.min(SLAB_BYTES - this.#filled, chunk.length - offset);
      chunk.copy(this.#slab, this.#filled, offset, offset + length);
      offset += length;
      this.#filled += length;
      if (this.#filled === SLAB_BYTES) this.#send();
    }
    return offset;
  }

  #newSlab(): ArrayBuffer {
    this.#slabs++;
    return new ArrayBuffer(SLAB_BYTES);
  }

  #send(): void {
    const slab = this.#slab;
    if (slab === undefined || this.#filled === 0) return;
    this.#slab = undefined;
    thread.post({ type: 'slab', id: this.#id, slab: slab.buffer, length: this.#filled }, [slab.buffer as ArrayBuffer]);
  }

  #wake(): void {
    const wake = this.#waitingForSlab;
    this.#waitingForSlab = undefined;
    wake?.();
  }
}
