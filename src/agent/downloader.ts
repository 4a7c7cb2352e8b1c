import http from 'node:http';
import https from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import { backoffDelayMs } from '../protocol/tunnel.ts';
import type { DownloadSink } from './download-sink.ts';
import type { StepHook } from './installer.ts';
import { errorMessage, type Logger } from './logger.ts';

export interface DownloadLink {
  url: string;
  url_expires_at: string;
}

/** How downloads behave: the agent's options, passed through the OTA handler. */
export interface DownloadSettings {
  /** Consecutive failed attempts (without any byte of progress) tolerated before giving up. */
  maxRetries: number;
  retryBaseMs: number;
  retryCapMs: number;
  idleTimeoutMs: number;
  allowInsecure: boolean;
  ca?: string | Buffer;
}

export interface DownloadOptions extends DownloadSettings {
  link: DownloadLink;
  size: number;
  sink: DownloadSink;
  /** Asks the cloud for a fresh presigned link; the returned one replaces the expired one. */
  refreshLink: () => Promise<DownloadLink>;
  /** Told the total bytes held after every chunk; throttling is the caller's business. */
  onBytes: (bytesHeld: number) => void;
  signal: AbortSignal;
  logger: Logger;
  stepHook?: StepHook;
  /** Download no faster than this (the update command's max_bytes_per_second); absent: unlimited. */
  maxBytesPerSecond?: number | undefined;
}

/**
 * How long to wait before reading on, so that `bytes` read since `startedMs` keep to `rate`
 * bytes per second: the time they take at that rate, less the time already spent. Pure, so its
 * arithmetic is tested without a clock.
 */
export function throttleDelayMs(bytes: number, elapsedMs: number, rate: number | undefined): number {
  if (!rate || rate <= 0) return 0;
  return Math.max(0, Math.ceil((bytes * 1000) / rate - elapsedMs));
}

/** The download is over for good: the caller reports `download_failed`. */
export class DownloadFailedError extends Error {}

class LinkExpiredError extends Error {}

/** The server is at its limit of downloads (503) or asks this client to slow down (429): wait, no failure. */
class ComeBackLaterError extends Error {
  constructor(
    status: number,
    readonly afterMs: number,
  ) {
    super(`HTTP ${status}: the server asks to come back in ${Math.round(afterMs / 1000)} s`);
  }
}

/** The longest a device waits between asking a busy server again. */
const BUSY_WAIT_CAP_MS = 60_000;

/** A busy server's Retry-After (seconds), at most 5 minutes; 5 s when absent or not a number of seconds. */
function retryAfterMs(header: string | string[] | undefined): number {
  const seconds = Number(Array.isArray(header) ? header[0] : header);
  return Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds, 300) * 1000 : 5_000;
}

/**
 * Streams the image into the sink, resuming from what the sink holds with `Range`, refreshing the
 * link when it expired (by its timestamp or by the store's 403), retrying with capped backoff.
 */
export async function downloadToSink(options: DownloadOptions): Promise<void> {
  const { signal, logger } = options;
  let link = options.link;
  let linkExpired = false;
  let failures = 0;
  let busyInARow = 0;
  for (;;) {
    signal.throwIfAborted();
    const heldBefore = await options.sink.offset();
    try {
      // Checked before every attempt: some stores (and proxies) do not enforce expiry themselves.
      if (linkExpired || hasExpired(link)) {
        logger.info('download link expired, asking for a fresh one');
        link = await options.refreshLink();
        linkExpired = false;
      }
      await fetchRemainder(link.url, options);
      return;
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      if (error instanceof DownloadFailedError) throw error;
      if (error instanceof ComeBackLaterError) {
        // Busy is not broken: a fleet-wide rollout queues here, so it never counts toward giving up.
        // The server says when to come back (EdgeFlow's spreads its refused devices over the time
        // its line of downloads takes to drain); the wait adds up to a quarter of it at random, so
        // a second's returns do not land as one, and only a server wrong several times in a row
        // (a store that always says the same) sees the spread grow, doubling, capped at a minute.
        busyInARow += 1;
        const spreadMs = (error.afterMs / 4) * 2 ** Math.min(Math.max(0, busyInARow - 3), 8);
        const waitMs = Math.min(
          error.afterMs + Math.floor(Math.random() * spreadMs),
          Math.max(error.afterMs, BUSY_WAIT_CAP_MS),
        );
        logger.info('download server busy, waiting', { retry_in_ms: waitMs });
        await sleep(waitMs, undefined, { signal });
        continue;
      }
      busyInARow = 0;
      if (error instanceof LinkExpiredError) linkExpired = true;
      // A flaky link that keeps making progress is worth staying on; only stalls count.
      if ((await options.sink.offset()) > heldBefore) failures = 0;
      failures += 1;
      if (failures > options.maxRetries) {
        throw new DownloadFailedError(`download failed after ${options.maxRetries} retries: ${errorMessage(error)}`);
      }
      const delayMs = linkExpired ? 0 : backoffDelayMs(failures, options.retryBaseMs, options.retryCapMs);
      logger.warn('download attempt failed, retrying', { error: errorMessage(error), retry_in_ms: delayMs });
      await sleep(delayMs, undefined, { signal });
    }
  }
}

function hasExpired(link: DownloadLink): boolean {
  const expiresAt = Date.parse(link.url_expires_at);
  return Number.isFinite(expiresAt) && expiresAt <= Date.now();
}

async function fetchRemainder(url: string, options: DownloadOptions): Promise<void> {
  const { sink, size } = options;
  let offset = await sink.offset();
  if (offset > size) {
    await sink.reset();
    offset = 0;
  }
  if (offset === size) return;
  const response = await get(url, offset, options);
  try {
    const status = response.statusCode ?? 0;
    if (status === 401 || status === 403 || status === 410) throw new LinkExpiredError(`HTTP ${status}`);
    if (status === 503 || status === 429) {
      await readShortBody(response);
      throw new ComeBackLaterError(status, retryAfterMs(response.headers['retry-after']));
    }
    if (status === 416) {
      await sink.reset();
      throw new Error('the server refused the range; starting over');
    }
    if (status === 206) {
      const start = /^bytes (\d+)-/.exec(response.headers['content-range'] ?? '')?.[1];
      if (Number(start) !== offset) {
        await sink.reset();
        throw new Error(`the server sent range ${response.headers['content-range']} for offset ${offset}`);
      }
    } else if (status === 200) {
      if (offset > 0) {
        // The server ignored Range: what it sends starts at byte 0.
        await sink.reset();
        offset = 0;
      }
    } else {
      throw new Error(`HTTP ${status}`);
    }
    let held = offset;
    // Paced over this response: what it brought against the time since it started.
    const pacedFromMs = Date.now();
    for await (const chunk of response as AsyncIterable<Buffer>) {
      if (held + chunk.byteLength > size) {
        await sink.reset();
        throw new Error(`the server sent more than the announced ${size} bytes`);
      }
      await sink.append(chunk);
      held += chunk.byteLength;
      options.onBytes(held);
      await options.stepHook?.('download:chunk');
      const waitMs = throttleDelayMs(held - offset, Date.now() - pacedFromMs, options.maxBytesPerSecond);
      // Not reading pauses the socket: TCP's window holds the sender back.
      if (waitMs > 0) await sleep(waitMs, undefined, { signal: options.signal });
    }
    if (held < size) throw new Error(`the connection ended after ${held} of ${size} bytes`);
  } finally {
    response.destroy();
    await sink.close();
  }
}

/** A busy answer's body is read at most this long; a longer one is cut with its connection. */
const SHORT_BODY_BYTES = 16 * 1024;

/**
 * Reads a short answer (a busy server's) to its end, so its connection stays open for the next
 * request: a device waiting on a busy server comes back on the same connection, without a new
 * TCP and TLS handshake each time (10,000 devices sent away together opened a connection per
 * return). A body without a length, or a long one, is left: the connection is then closed.
 */
async function readShortBody(response: http.IncomingMessage): Promise<void> {
  const length = Number(response.headers['content-length']);
  if (!(length >= 0 && length <= SHORT_BODY_BYTES)) return;
  for await (const _chunk of response) {
    // discarded
  }
}

function get(url: string, offset: number, options: DownloadOptions): Promise<http.IncomingMessage> {
  const parsed = new URL(url);
  if (parsed.protocol !== 'https:' && !(parsed.protocol === 'http:' && options.allowInsecure)) {
    return Promise.reject(new DownloadFailedError(`refusing to download over ${parsed.protocol} (not allowed)`));
  }
  const client = parsed.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const request = client.get(parsed, {
      headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
      signal: options.signal,
      // From the socket's creation: Node's default agent gives a new socket 5 s, which cut connects
      // slowed by a busy device or dropped SYNs (retried after 1, 3, 7 s) as stalled downloads:
      // 6,500 of them in a 10,000-device P2.
      timeout: options.idleTimeoutMs,
      ...(options.ca && parsed.protocol === 'https:' ? { ca: options.ca } : {}),
    });
    request.setTimeout(options.idleTimeoutMs, () => request.destroy(new Error('the download stalled')));
    request.once('response', resolve);
    request.once('error', reject);
  });
}
