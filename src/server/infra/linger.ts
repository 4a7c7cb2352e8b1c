import type { IncomingMessage } from 'node:http';
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

  /** Call before the answer is written (onSend), so that Node's own close is deferred. */
  begin(request: IncomingMessage): void {
    const { socket } = request;
    if (!socket || socket.destroyed || this.#sockets.has(socket)) return;
    if (this.#closing || this.options.timeoutMs === 0 || this.options.maxBytes === 0) return;
    // Whoever was reading the body (the multipart parser) is done: drop what arrives.
    request.unpipe();
    request.resume();
    // Node calls destroySoon() once the answer of a `Connection: close` response is written.
    socket.destroySoon = () => {
      if (socket.writable) socket.end();
    };
    let received = 0;
    const countBytes = (chunk: Buffer) => {
      received += chunk.length;
      if (received > this.options.maxBytes) dropNow();
    };
    const stopWatching = () => {
      clearTimeout(timer);
      request.off('data', countBytes);
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
    const timer = setTimeout(dropNow, this.options.timeoutMs);
    timer.unref();
    // Counted on the request: the HTTP parser may read the socket natively, without 'data' events.
    request.on('data', countBytes);
    socket.once('close', stopWatching);
    if (request.complete) closeNormally();
    else request.once('end', closeNormally);
    this.#sockets.set(socket, dropNow);
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
