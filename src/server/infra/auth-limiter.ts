/**
 * Failed logins, for the tunnel (`connect`) and the HTTP API (bearer keys): slow the guesser,
 * never the honest client.
 *
 * - Only failures count, and a valid key is always checked and always passes, whatever its
 *   source did before: devices behind one NAT, or an office, stay online while someone on the
 *   same address guesses keys.
 * - Failures are counted per source address and per (source, key): a source that tried
 *   `maxFailures` different wrong keys within `windowMs` (a guesser) is answered "try again
 *   later" for `blockMs` on every further failure, and so is one wrong key retried that often
 *   from one source (a device or a script with a stale key). A stale key retried forever counts
 *   once towards its source, so it never turns its neighbours' typos into blocks.
 * - Keys are never kept: a key is known here by a prefix of its SHA256 hash.
 */
export interface AuthLimiterOptions {
  maxFailures: number;
  windowMs: number;
  blockMs: number;
  /** Sources and keys remembered at most (a spray from many addresses must not grow the map forever). */
  maxTracked?: number;
}

interface FailureRecord {
  failures: number;
  windowStartMs: number;
  blockedUntilMs: number;
}

export interface AuthFailure {
  /** How long the source (or this key from it) must wait; 0 when the failure is an ordinary one. */
  blockedForMs: number;
  /** This failure is the one that blocked it (log it once). */
  newlyBlocked: boolean;
}

const DEFAULT_MAX_TRACKED = 100_000;

export class AuthFailureLimiter {
  readonly #records = new Map<string, FailureRecord>();
  #lastPruneMs = 0;

  constructor(private readonly options: AuthLimiterOptions) {}

  /** Counts one failed login of `keyHash` (the SHA256 of the key presented, '' for none) from `source`. */
  recordFailure(source: string, keyHash: string, nowMs = Date.now()): AuthFailure {
    if (nowMs - this.#lastPruneMs > this.options.windowMs) this.prune(nowMs);
    const key = this.#count(`key ${source} ${keyHash.slice(0, 16)}`, nowMs);
    // A key retried counts once towards its source per window: the source limit is for guessers.
    const bySource = key.record.failures === 1 ? this.#count(`source ${source}`, nowMs) : this.#peek(source, nowMs);
    const blockedForMs = Math.max(key.blockedForMs, bySource.blockedForMs);
    return { blockedForMs, newlyBlocked: key.newlyBlocked || bySource.newlyBlocked };
  }

  #peek(source: string, nowMs: number) {
    const record = this.#records.get(`source ${source}`);
    const blockedForMs = record && record.blockedUntilMs > nowMs ? record.blockedUntilMs - nowMs : 0;
    return { blockedForMs, newlyBlocked: false };
  }

  #count(name: string, nowMs: number): { record: FailureRecord; blockedForMs: number; newlyBlocked: boolean } {
    let record = this.#records.get(name);
    if (!record || nowMs - record.windowStartMs > this.options.windowMs) {
      record = { failures: 0, windowStartMs: nowMs, blockedUntilMs: record?.blockedUntilMs ?? 0 };
      this.#records.delete(name);
      this.#records.set(name, record);
      this.#bound(nowMs);
    }
    record.failures += 1;
    let newlyBlocked = false;
    if (record.blockedUntilMs <= nowMs && record.failures >= this.options.maxFailures) {
      record.blockedUntilMs = nowMs + this.options.blockMs;
      newlyBlocked = true;
    }
    return { record, blockedForMs: Math.max(0, record.blockedUntilMs - nowMs), newlyBlocked };
  }

  /** Keeps the map bounded: forget what is over, then the oldest entries. */
  #bound(nowMs: number): void {
    const max = this.options.maxTracked ?? DEFAULT_MAX_TRACKED;
    if (this.#records.size <= max) return;
    this.prune(nowMs);
    for (const name of this.#records.keys()) {
      if (this.#records.size <= max) break;
      this.#records.delete(name);
    }
  }

  /** Forgets sources and keys whose window and block are over. */
  prune(nowMs = Date.now()): void {
    this.#lastPruneMs = nowMs;
    for (const [name, record] of this.#records) {
      if (record.blockedUntilMs <= nowMs && nowMs - record.windowStartMs > this.options.windowMs) {
        this.#records.delete(name);
      }
    }
  }

  /** How many sources and keys are remembered (tests check that the map stays bounded). */
  get trackedCount(): number {
    return this.#records.size;
  }
}

/** Seconds to tell a client in `Retry-After` (never 0). */
export function retryAfterSeconds(blockedForMs: number): number {
  return Math.max(1, Math.ceil(blockedForMs / 1000));
}

/** The client's address; behind a trusted proxy, the one the proxy saw (the last X-Forwarded-For entry). */
export function clientAddress(
  request: { headers: Record<string, string | string[] | undefined>; socket: { remoteAddress?: string | undefined } },
  trustProxy: boolean,
): string {
  if (trustProxy) {
    const forwarded = request.headers['x-forwarded-for'];
    const last = (Array.isArray(forwarded) ? forwarded.join(',') : forwarded)?.split(',').pop()?.trim();
    if (last) return last;
  }
  return request.socket.remoteAddress ?? 'unknown';
}
