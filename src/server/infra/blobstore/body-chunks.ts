import type { Readable } from 'node:stream';
import { MessageChannel, type MessagePort } from 'node:worker_threads';

/**
 * Frees an upload's body chunks as soon as they are stored instead of when V8 collects them.
 *
 * Node's HTTP parser copies every body chunk (up to 64 KiB) into an ArrayBuffer of its own. V8
 * counts that memory as external and starts a full mark-compact GC each time it grows by a few
 * tens of MiB, since the young-generation GCs that would free the dead chunks come too rarely
 * (an upload makes little other garbage): 30–38 full GCs per GiB in bench/p5-upload.ts, ~1.2 s
 * of CPU on V8's platform thread and ~0.5 s of the main thread's per GiB, against ~3 s for all
 * the rest of the upload. A chunk stored and owned by nobody else is detached instead: an
 * ArrayBuffer in a postMessage transfer list is detached even when the port is closed (the
 * HTML spec serializes before it checks the port, and Node follows it), and the dropped
 * message then frees its memory at once, which also lowers V8's external memory count.
 */
const disposable = new WeakSet<ArrayBuffer>();
/** Smaller buffers may be slices of Node's shared pool or of a parser's own scratch buffer. */
const MIN_DISPOSABLE_BYTES = 16 * 1024;

let closedPort: MessagePort | undefined;

/**
 * Marks the chunks `source` emits as disposable once stored: only for a request body read from a
 * socket (Node's own IncomingMessage), whose chunks nobody else keeps. Returns the undo.
 */
export function disposeChunksOnceStored(source: Readable): () => void {
  const mark = (chunk: unknown) => {
    if (chunk instanceof Uint8Array && chunk.byteLength >= MIN_DISPOSABLE_BYTES) {
      disposable.add(chunk.buffer as ArrayBuffer);
    }
  };
  // A listener of its own, beside the parser's pipe: it sees every chunk, synchronously, and
  // leaves the flow (pause and resume) to the pipe.
  source.on('data', mark);
  return () => source.off('data', mark);
}

/**
 * Frees the chunks among `chunks` that were marked and that span their whole ArrayBuffer (a
 * slice of one, such as the first or last chunk of a multipart file part, shares it with bytes
 * the parser may still read). Call only once nothing reads them any more.
 */
export function freeStoredChunks(chunks: readonly Uint8Array[]): void {
  const owned: ArrayBuffer[] = [];
  for (const chunk of chunks) {
    const { buffer } = chunk;
    if (chunk.byteOffset !== 0 || chunk.byteLength !== buffer.byteLength || !disposable.has(buffer as ArrayBuffer)) {
      continue;
    }
    disposable.delete(buffer as ArrayBuffer);
    owned.push(buffer as ArrayBuffer);
  }
  if (owned.length === 0) return;
  try {
    portToNowhere().postMessage(null, owned);
  } catch {
    // Not transferable after all (never seen): the GC frees it as before.
  }
}

function portToNowhere(): MessagePort {
  if (closedPort === undefined) {
    const { port1 } = new MessageChannel();
    port1.close();
    closedPort = port1;
  }
  return closedPort;
}
