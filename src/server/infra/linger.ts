import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/**
 * A lingering close for requests answered before their body was read (a refused upload).
 *
 * Node ends and destroys a `Connection: close` socket as soon as the answer is written; a
 * client still sending its body then gets a reset, often before it has read the answer (9 of
 * 60 refused uploads from Node's fetch saw ECONNRESET/EPIPE instead of their 4xx). Instead the
 * socket is half-closed (the FIN tells the client the answer is complete) and the rest of the
 * body is read and dropped until it ends, or for at most `timeoutMs` and `maxBytes`; only then
 * is the socket destroyed.
 */
export class LingeringClose {
  readonly #sockets = new Map<Socket, () => void>();
  #closing = false;

  constructor(private readonly options: { timeoutMs: number; maxBytes: number }) {}

  /**
   * Call before the answer is written (onSend), so that Node's own close is deferred. The bounds
   * run from when the answer has been written (`response` finished): hooks that run after this
   * one (the audit log's insert) may still hold the answer back, and a client still sending must
   * not be cut off before it could read it. Until then the body waits, unread (the client is held
   * by TCP's flow control, not by us).
   */
  begin(request: IncomingMessage, response: ServerResponse): void {
    const { socket } = request;
    if (!socket || socket.destroyed || this.#sockets.has(socket)) return;
    if (this.#closing || this.options.timeoutMs === 0 || this.options.maxBytes === 0) return;
    // Whoever was reading the body (the multipart parser) is done; the rest is dropped once answered.
    request.unpipe();
    request.pause();
    // Node calls destroySoon() once the answer of a `Connection: close` response is written.
    socket.destroySoon = () => {
      if (socket.writable) socket.end();
    };
    let received = 0;
    let timer: NodeJS.Timeout | undefined;
    const countBytes = (chunk: Buffer) => {
      received += chunk.length;
      if (received > this.options.maxBytes) dropNow();
    };
    const stopWatching = () => {
      clearTimeout(timer);
      request.off('data', countBytes);
      response.off('finish', startBounds);
      socket.off('close', stopWatching);
      request.off('end', closeNormally);
      this.#sockets.delete(socket);
    };
    const dropNow = () => {
      stopWatching();
      socket.destroy();
    };
    // The body ended within bounds: close as Node would have, once the answer is flushed.
    const closeNormally = () => {
      stopWatching();
      Reflect.deleteProperty(socket, 'destroySoon');
      if (socket.writableEnded) socket.destroySoon();
    };
    // Answered: read and drop the rest, for at most timeoutMs and maxBytes.
    function startBounds() {
      timer = setTimeout(dropNow, timeoutMs);
      timer.unref();
      // Counted on the request: the HTTP parser may read the socket natively, without 'data' events.
      request.on('data', countBytes);
      request.resume();
    }
    const { timeoutMs } = this.options;
    socket.once('close', stopWatching);
    if (request.complete) closeNormally();
    else request.once('end', closeNormally);
    this.#sockets.set(socket, dropNow);
    if (response.writableFinished) startBounds();
    else response.once('finish', startBounds);
  }

  isLingering(request: IncomingMessage): boolean {
    return this.#sockets.has(request.socket);
  }

  /** Drops every lingering connection: they have had their answer, and must not hold a shutdown. */
  closeAll(): void {
    this.#closing = true;
    for (const dropNow of [...this.#sockets.values()]) dropNow();
  }
}
