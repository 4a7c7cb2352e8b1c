/**
 * Device update locks: local software on the device says "not now" to updates.
 *
 * The convention is a directory (default `<data dir>/locks`) with one file per holder, named after
 * it (`backup`, `cnc-job`): present = locked. The file's first line is the reason; an optional line
 * `until=<ISO date-time>` ends the lock by itself at that time (a lock past its `until` counts as
 * released, the file may stay). Scripts write such a file (atomically: a temporary name, then a
 * rename) and remove it; `edgeflow-agent lock` / `unlock` do exactly that. The running agent reads
 * the directory when it changes (fs.watch), every `rescanMs` as a fallback (a watch can miss events
 * on some filesystems), and at the next expiry; it refuses `ota_update` while locked and reports
 * every change to the server (`device_lock`), resent until acknowledged.
 */
import { type FSWatcher, watch } from 'node:fs';
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parseDuration } from '../protocol/duration.ts';
import type { DeviceLockHolder, DeviceLockPayload } from '../protocol/tunnel.ts';
import { writeFileAtomic } from './atomic-file.ts';
import { errorMessage, type Logger } from './logger.ts';

/** A holder's name is a file name: letters, digits, `.`, `_`, `-`; not starting with a dot. */
export const HOLDER_PATTERN = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$/;
/** The name `edgeflow-agent lock` uses without `--name`. */
export const DEFAULT_HOLDER = 'cli';
const MAX_REASON = 512;
/** writeFileAtomic's temporary files (`<name>.tmp-<pid>-<n>`): not a holder until renamed. */
const TEMPORARY = /\.tmp-\d+-\d+$/;

export function defaultLockDir(dataDir: string): string {
  return join(dataDir, 'locks');
}

/** Why a holder name cannot be a lock file, or undefined when it can. */
export function holderProblem(name: string): string | undefined {
  if (HOLDER_PATTERN.test(name) && !TEMPORARY.test(name)) return undefined;
  return `a lock name is 1-64 letters, digits, ".", "_" or "-", not starting with ".": ${JSON.stringify(name)}`;
}

/** One lock file's content: the reason on the first line, then `until=<ISO>` if it expires. */
export function lockFileContent(reason: string, until?: Date): string {
  return `${reason.replace(/[\r\n]+/g, ' ').trim()}\n${until ? `until=${until.toISOString()}\n` : ''}`;
}

/** A lock file read: its reason and expiry (an unreadable `until` is ignored: the lock holds until removed). */
export function parseLockFile(name: string, text: string): { reason: string; until?: Date } {
  const lines = text.split(/\r?\n/);
  const reason = (lines[0] ?? '').trim().slice(0, MAX_REASON) || `locked by ${name}`;
  for (const line of lines.slice(1)) {
    const match = /^\s*until\s*=\s*(\S+)\s*$/.exec(line);
    if (!match) continue;
    const until = new Date(match[1]!);
    if (!Number.isNaN(until.getTime())) return { reason, until };
  }
  return { reason };
}

/** The holders in force at `now` (expired ones left out), by name. */
export async function readLockHolders(dir: string, now = new Date()): Promise<DeviceLockHolder[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  const holders: DeviceLockHolder[] = [];
  for (const name of names.sort()) {
    if (holderProblem(name)) continue;
    const path = join(dir, name);
    let text: string;
    let since: Date;
    try {
      const info = await stat(path);
      if (!info.isFile()) continue;
      since = info.mtime;
      text = await readFile(path, 'utf8');
    } catch {
      continue; // removed while being read: released
    }
    const { reason, until } = parseLockFile(name, text);
    if (until && until.getTime() <= now.getTime()) continue;
    holders.push({
      name,
      reason,
      ...(until ? { until: until.toISOString() } : {}),
      since: since.toISOString(),
    });
  }
  return holders;
}

/** The device's lock from its holders: what the agent reports and refuses updates by. */
export function lockStateOf(holders: readonly DeviceLockHolder[]): DeviceLockPayload {
  if (holders.length === 0) return { locked: false };
  const reason =
    holders.length === 1 ? holders[0]!.reason : holders.map((holder) => `${holder.name}: ${holder.reason}`).join('; ');
  // Locked until the last holder lets go: no expiry if any holder has none.
  const untils = holders.map((holder) => holder.until);
  const until = untils.every((value) => value !== undefined) ? untils.sort().at(-1) : undefined;
  const since = holders
    .map((holder) => holder.since)
    .filter((value) => value !== undefined)
    .sort()[0];
  return {
    locked: true,
    reason: reason.slice(0, 1024),
    ...(until ? { until } : {}),
    ...(since ? { since } : {}),
    holders: [...holders],
  };
}

export async function readLockState(dir: string, now = new Date()): Promise<DeviceLockPayload> {
  return lockStateOf(await readLockHolders(dir, now));
}

/** Takes (or replaces) `holder`'s lock: one atomic write, so a reader sees the whole file or none. */
export async function takeLock(dir: string, holder: string, reason: string, until?: Date): Promise<void> {
  const problem = holderProblem(holder);
  if (problem) throw new Error(problem);
  await mkdir(dir, { recursive: true });
  await writeFileAtomic(join(dir, holder), lockFileContent(reason, until));
}

/** Releases `holder`'s lock; answers whether it held one. */
export async function releaseLock(dir: string, holder: string): Promise<boolean> {
  const problem = holderProblem(holder);
  if (problem) throw new Error(problem);
  try {
    await stat(join(dir, holder));
  } catch {
    return false;
  }
  await rm(join(dir, holder), { force: true });
  return true;
}

/**
 * `--until`: an ISO date-time, or a duration from now (`90s`, `30m`, `2h`, `1d`). Undefined when
 * it is neither.
 */
export function parseUntil(text: string, now = new Date()): Date | undefined {
  const durationMs = parseDuration(text);
  if (durationMs !== undefined) return new Date(now.getTime() + durationMs);
  if (!/^\d{4}-\d{2}-\d{2}T/.test(text.trim())) return undefined;
  const at = new Date(text.trim());
  return Number.isNaN(at.getTime()) ? undefined : at;
}

export interface LockWatcherOptions {
  dir: string;
  /** The fallback re-read, in case the directory watch misses a change. */
  rescanMs: number;
  logger: Logger;
  /** Called with every change of the lock (not at the first read). */
  onChange: (state: DeviceLockPayload) => void;
}

/** Keeps the device's lock state current: a watch on the directory, a periodic re-read, a timer to the next expiry. */
export class LockWatcher {
  readonly #options: LockWatcherOptions;
  #state: DeviceLockPayload = { locked: false };
  #watcher: FSWatcher | undefined;
  #rescan: NodeJS.Timeout | undefined;
  #expiry: NodeJS.Timeout | undefined;
  #reading: Promise<DeviceLockPayload> | undefined;
  #again = false;
  #stopped = false;

  constructor(options: LockWatcherOptions) {
    this.#options = options;
  }

  /** The lock as last read. */
  get state(): DeviceLockPayload {
    return this.#state;
  }

  async start(): Promise<void> {
    const { dir, rescanMs, logger } = this.#options;
    this.#stopped = false;
    await mkdir(dir, { recursive: true }).catch((error) =>
      logger.warn('could not create the lock directory', { dir, error: errorMessage(error) }),
    );
    this.#state = await readLockState(dir).catch(() => ({ locked: false }));
    this.#armExpiry();
    try {
      this.#watcher = watch(dir, () => void this.refresh());
      this.#watcher.on('error', () => {}); // the periodic re-read carries on
    } catch (error) {
      logger.warn('cannot watch the lock directory; re-reading it periodically', { dir, error: errorMessage(error) });
    }
    this.#rescan = setInterval(() => void this.refresh(), rescanMs);
    this.#rescan.unref();
  }

  stop(): void {
    this.#stopped = true;
    this.#watcher?.close();
    this.#watcher = undefined;
    clearInterval(this.#rescan);
    clearTimeout(this.#expiry);
  }

  /** Reads the directory now (an update arrived: the lock is checked fresh, not as last seen). */
  refresh(): Promise<DeviceLockPayload> {
    if (this.#reading) {
      this.#again = true;
      return this.#reading;
    }
    this.#reading = (async () => {
      try {
        do {
          this.#again = false;
          const next = await readLockState(this.#options.dir).catch((error) => {
            this.#options.logger.warn('could not read the lock directory', { error: errorMessage(error) });
            return this.#state;
          });
          const changed = !sameLock(next, this.#state);
          this.#state = next;
          if (changed && !this.#stopped) {
            this.#armExpiry();
            this.#options.onChange(next);
          }
        } while (this.#again);
        return this.#state;
      } finally {
        this.#reading = undefined;
      }
    })();
    return this.#reading;
  }

  /** A re-read at the next holder's expiry: a lock past its `until` is released without anyone touching the file. */
  #armExpiry(): void {
    clearTimeout(this.#expiry);
    const next = (this.#state.holders ?? [])
      .map((holder) => (holder.until ? Date.parse(holder.until) : Number.POSITIVE_INFINITY))
      .reduce((a, b) => Math.min(a, b), Number.POSITIVE_INFINITY);
    if (!Number.isFinite(next) || this.#stopped) return;
    // At most a day ahead (timers overflow past 24.8 days); re-armed after each read.
    this.#expiry = setTimeout(() => void this.refresh(), Math.min(Math.max(0, next - Date.now()) + 5, 86_400_000));
    this.#expiry.unref();
  }
}

export function sameLock(a: DeviceLockPayload, b: DeviceLockPayload): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
