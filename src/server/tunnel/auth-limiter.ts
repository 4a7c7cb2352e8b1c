/**
 * Failed tunnel authentications per source address: after `maxFailures` within `windowMs`, the
 * address is refused for `blockMs` (close 1013, "try again later"). Only failures count, so a
 * device with a valid key is never slowed, and a key-guessing loop from one address is.
 */
export interface AuthLimiterOptions {
  maxFailures: number;
  windowMs: number;
  blockMs: number;
}

interface AddressRecord {
  failures: number;
  windowStartMs: number;
  blockedUntilMs: number;
}

export class AuthFailureLimiter {
  readonly #records = new Map<string, AddressRecord>();

  constructor(private readonly options: AuthLimiterOptions) {}

  /** Milliseconds this address must still wait, or 0 when it may try. */
  blockedForMs(address: string, nowMs = Date.now()): number {
    const record = this.#records.get(address);
    return record && record.blockedUntilMs > nowMs ? record.blockedUntilMs - nowMs : 0;
  }

  /** Counts one failure; true when it made the address blocked. */
  recordFailure(address: string, nowMs = Date.now()): boolean {
    let record = this.#records.get(address);
    if (!record || nowMs - record.windowStartMs > this.options.windowMs) {
      record = { failures: 0, windowStartMs: nowMs, blockedUntilMs: record?.blockedUntilMs ?? 0 };
      this.#records.set(address, record);
    }
    record.failures += 1;
    if (record.failures < this.options.maxFailures || record.blockedUntilMs > nowMs) return false;
    record.blockedUntilMs = nowMs + this.options.blockMs;
    record.failures = 0;
    record.windowStartMs = nowMs;
    return true;
  }

  /** Forgets addresses whose window and block are over (called from the hub's sweep). */
  prune(nowMs = Date.now()): void {
    for (const [address, record] of this.#records) {
      if (record.blockedUntilMs <= nowMs && nowMs - record.windowStartMs > this.options.windowMs) {
        this.#records.delete(address);
      }
    }
  }
}
