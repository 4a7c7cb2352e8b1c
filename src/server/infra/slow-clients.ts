/**
 * Limits for slow and idle HTTP clients, so a client cannot hold a connection (or a staging
 * file) forever: headers must arrive in time, an idle connection is closed, and a request body
 * must keep a minimum rate over a window. The rate is "bytes per window", never a total request
 * time: a 1 GiB upload over a slow but moving link passes; a client dripping a byte every few
 * seconds does not. Tunnels leave all of this behind once upgraded (ws clears the socket
 * timeout; the hub does too).
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from './config.ts';

/** Options for Node's HTTP(S) server constructor and Fastify's own timeouts. */
export function httpServerTimeouts(http: Config['http']) {
  return {
    serverOptions: {
      headersTimeout: http.headersTimeoutMs,
      // How often Node checks the headers timeout (its default, 30 s, would be coarser than
      // short timeouts in tests).
      connectionsCheckingInterval: Math.max(50, Math.min(5_000, Math.floor(http.headersTimeoutMs / 2))),
    },
    keepAliveTimeout: http.keepAliveTimeoutMs,
    connectionTimeout: http.idleTimeoutMs,
    // No limit on a whole request: a large upload over a slow link may take hours.
    requestTimeout: 0,
  };
}

function hasBody(request: FastifyRequest): boolean {
  const length = request.headers['content-length'];
  return (length !== undefined && length !== '0') || request.headers['transfer-encoding'] !== undefined;
}

/**
 * onRequest hook: while the body of a request is arriving, checks each window that at least
 * `minBytesPerSecond × window` bytes came in; else answers 408 and drops the connection (the
 * upload's staging file goes with the aborted stream). Reads the socket's byte counter, so the
 * body stream itself is not touched.
 */
export function enforceBodyRate(http: Config['http']) {
  const minimumPerWindow = Math.ceil((http.bodyMinBytesPerSecond * http.bodyRateWindowMs) / 1000);
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (minimumPerWindow === 0 || request.raw.complete || !hasBody(request)) return;
    const socket = request.raw.socket;
    let lastBytes = socket.bytesRead;
    const timer = setInterval(() => {
      if (request.raw.complete || socket.destroyed) return clearInterval(timer);
      const bytes = socket.bytesRead;
      const received = bytes - lastBytes;
      lastBytes = bytes;
      if (received >= minimumPerWindow) return;
      clearInterval(timer);
      request.log.info(
        { received_bytes: received, window_ms: http.bodyRateWindowMs },
        'request body too slow; closing the connection',
      );
      const message =
        `the request body arrived at less than ${http.bodyMinBytesPerSecond} bytes/s ` +
        `over ${http.bodyRateWindowMs / 1000} s; the connection is closed`;
      if (!reply.sent && !reply.raw.headersSent) {
        // The onResponse hook destroys the socket of a half-read request once this is written.
        reply
          .code(408)
          .header('connection', 'close')
          .send({ error: { code: 'body_too_slow', message } });
        setTimeout(() => request.raw.destroy(), 1000).unref();
      } else request.raw.destroy();
    }, http.bodyRateWindowMs);
    timer.unref();
    const stop = () => clearInterval(timer);
    request.raw.once('end', stop);
    request.raw.once('close', stop);
  };
}
