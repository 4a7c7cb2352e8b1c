/**
 * The local store's download slots: at most `limit` downloads at once, and behind them a line
 * of at most `queue` requests, each held up to `waitMs` for a slot and served in the order it
 * came. A slot freed goes straight to the first in line, so the server never idles while devices
 * wait; beyond the line (or past its wait) a request is answered busy (503 with Retry-After).
 *
 * Why a line and not only the busy answer: with 10,000 devices asking at once, the busy answer
 * alone sent most of them away for seconds at random (their waits grow with each busy answer in a
 * row) while slots freed meanwhile stood empty — P2's downloads took three times the bytes' own
 * time. The line is short enough that a held device stays well inside an agent's 30 s idle
 * timeout, and bounded so the sockets it holds stay within the process's open-file limit.
 *
 * The refused are told when to come back (`retryAfterSeconds`): at random within the time the
 * line takes to drain at the rate downloads complete — so they return spread over it, neither as
 * one herd nor long after the slots went idle.
 */
import { MAX_START_WITHIN_MS } from '../../protocol/tunnel.ts';
import type { Config } from '../infra/config.ts';

export interface DownloadSlotsOptions {
  limit: number;
  /** Requests held waiting for a slot (0: answer busy at once). */
  queue: number;
  /** The longest one waits in line before it is answered busy. */
  waitMs: number;
}

/** The slots the server's configuration gives: what the download route serves and the engine paces to. */
export function downloadSlotsOptions(config: Config): DownloadSlotsOptions {
  return {
    limit: config.maxConcurrentDownloads,
    queue: config.downloadQueue,
    waitMs: config.downloadQueueWaitMs,
  };
}

/**
 * How long a pass of `commands` download commands asks its devices to spread their starts over
 * (OtaUpdatePayload.start_within_ms): none while the slots and the line hold them all; beyond, the
 * rest arrive at about the rate the slots serve, taking a download to last a second (slower ones
 * wait in the line, as without a spread). 10,000 devices, 256 slots, a line of 2,048: 30 s.
 * Without it the whole fleet asked at once: most were refused, and a simulated fleet's processes
 * spent seconds opening 5,000 connections in one turn of their event loop.
 */
export function downloadSpreadMs(commands: number, options: Pick<DownloadSlotsOptions, 'limit' | 'queue'>): number {
  const beyond = commands - options.limit - options.queue;
  if (beyond <= 0) return 0;
  return Math.min(MAX_START_WITHIN_MS, Math.round((beyond / options.limit) * 1000));
}

/** Completions are counted per second over this many seconds to estimate the rate. */
const RATE_WINDOW_SECONDS = 5;
/**
 * The latest return a refused request is given: beyond it the estimate is worth little (the rate
 * moves with the server's load), and P2's last devices waited up to 20 s after the line emptied.
 * A return costs the server one short answer.
 */
const MAX_RETRY_AFTER_SECONDS = 10;

interface Waiter {
  grant: (granted: boolean) => void;
  timer: NodeJS.Timeout;
}

export class DownloadSlots {
  readonly #options: DownloadSlotsOptions;
  #taken = 0;
  readonly #line = new Set<Waiter>();
  /** Slots released per second, the last RATE_WINDOW_SECONDS seconds (a ring indexed by the second). */
  readonly #completions = new Array<number>(RATE_WINDOW_SECONDS).fill(0);
  #completionsSecond = 0;
  /** When the completions now in the ring began (the window is shorter until it is full). */
  #countingSinceMs: number | undefined;

  constructor(options: DownloadSlotsOptions) {
    this.#options = options;
  }

  get taken(): number {
    return this.#taken;
  }

  get waiting(): number {
    return this.#line.size;
  }

  /**
   * A slot, at once or after a wait in line: resolves to a release function (call it once, when
   * the download's response is done), or undefined when the line is full or the wait ran out.
   * `abandoned` is called with a callback to run if the requester goes away while in line.
   */
  async acquire(abandoned: (leave: () => void) => void): Promise<(() => void) | undefined> {
    const { limit, queue, waitMs } = this.#options;
    if (this.#taken < limit && this.#line.size === 0) return this.#take();
    if (this.#line.size >= queue) return undefined;
    const granted = await new Promise<boolean>((resolve) => {
      const waiter: Waiter = {
        grant: resolve,
        timer: setTimeout(() => {
          this.#line.delete(waiter);
          resolve(false);
        }, waitMs),
      };
      this.#line.add(waiter);
      abandoned(() => {
        if (this.#line.delete(waiter)) {
          clearTimeout(waiter.timer);
          resolve(false);
        }
      });
    });
    // A granted slot was handed over taken (see #release): the count already includes it.
    return granted ? this.#releaser() : undefined;
  }

  /**
   * When a refused request should come back, in whole seconds (1 to 10): at random within the time
   * the line takes to drain at the rate downloads complete, so the refused return spread over it
   * (a full line of 2,048 at 500 a second: 1–5 s; on slow links, up to 10 s). Before any completion
   * was seen, a download is taken to last a second.
   */
  retryAfterSeconds(now = Date.now(), random = Math.random()): number {
    const drainSeconds = this.#line.size / this.#completionsPerSecond(now);
    return Math.min(MAX_RETRY_AFTER_SECONDS, 1 + Math.floor(random * (Math.ceil(drainSeconds) + 1)));
  }

  /** Everyone in line is answered busy (the server is closing). */
  close(): void {
    for (const waiter of this.#line) {
      clearTimeout(waiter.timer);
      waiter.grant(false);
    }
    this.#line.clear();
  }

  #take(): () => void {
    this.#taken += 1;
    return this.#releaser();
  }

  #releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#release();
    };
  }

  #completionsPerSecond(now: number): number {
    this.#advanceTo(Math.floor(now / 1000));
    const seen = this.#completions.reduce((sum, count) => sum + count, 0);
    if (seen === 0 || this.#countingSinceMs === undefined) return this.#options.limit;
    const windowMs = Math.min((RATE_WINDOW_SECONDS - 1) * 1000 + (now % 1000), now - this.#countingSinceMs);
    return seen / Math.max(1, windowMs / 1000);
  }

  /** Moves the ring to `second`, emptying the seconds passed since it was last moved. */
  #advanceTo(second: number): void {
    const passed = Math.min(second - this.#completionsSecond, RATE_WINDOW_SECONDS);
    for (let step = 1; step <= passed; step++) this.#completions[(second - passed + step) % RATE_WINDOW_SECONDS] = 0;
    this.#completionsSecond = Math.max(this.#completionsSecond, second);
  }

  /** The slot goes to the first in line, still taken; with nobody waiting, it is freed. */
  #release(): void {
    const now = Date.now();
    const second = Math.floor(now / 1000);
    this.#advanceTo(second);
    if (this.#completions.every((count) => count === 0)) this.#countingSinceMs = now;
    this.#completions[second % RATE_WINDOW_SECONDS]! += 1;
    const [first] = this.#line;
    if (first) {
      this.#line.delete(first);
      clearTimeout(first.timer);
      first.grant(true);
      return;
    }
    this.#taken -= 1;
  }
}
