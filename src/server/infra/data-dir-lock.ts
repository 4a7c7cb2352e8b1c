/**
 * One server per embedded data directory. Two servers on the same PGlite directory or local
 * store would each keep their own view of the database (split brain) and sweep each other's
 * staged uploads, so the directory is locked for the life of the process.
 *
 * The lock is a file created exclusively (O_EXCL) holding the owner's pid, host and a random
 * token; the owner touches it every `heartbeatMs`. It is stale, and taken over, when its pid is
 * dead on this host (a kill -9, a power cut) or when it was not touched for `staleAfterMs`
 * (another host or container sharing the volume, or a pid reused after a reboot). A
 * takeover renames the stale file away first and checks that it moved the file it judged, so
 * two servers starting at once cannot both take it. An owner whose file was taken over anyway
 * (it was frozen longer than `staleAfterMs`) learns it at its next heartbeat (`onLost`).
 */
import { randomUUID } from 'node:crypto';
import { mkdir, readFile, rename, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { DataDirLockedError } from './errors.ts';

export const LOCK_FILE = 'edgeflow.lock';
const SERVER = 'an EdgeFlow OTA server';

/** Tokens of the locks this process holds: its own pid in a lock file is not always a past life. */
const heldHere = new Set<string>();

interface LockOwner {
  pid: number;
  host: string;
  token: string;
  started_at: string;
  /** Who holds it, as told to whoever is refused: "an EdgeFlow OTA server", "edgeflow-ota admin reset-key". */
  holder?: string;
}

export interface DataDirLock {
  readonly file: string;
  release(): Promise<void>;
}

export interface LockOptions {
  heartbeatMs?: number;
  staleAfterMs?: number;
  /** Called once if another process took the lock over; the caller must stop serving. */
  onLost?: (reason: string) => void;
  /** Who takes it (default "an EdgeFlow OTA server"), named to anyone refused meanwhile. */
  holder?: string;
}

export async function lockDataDir(dataDir: string, options: LockOptions = {}): Promise<DataDirLock> {
  const heartbeatMs = options.heartbeatMs ?? 10_000;
  const staleAfterMs = options.staleAfterMs ?? 6 * heartbeatMs;
  const file = path.join(dataDir, LOCK_FILE);
  const owner: LockOwner = {
    pid: process.pid,
    host: os.hostname(),
    token: randomUUID(),
    started_at: new Date().toISOString(),
    holder: options.holder ?? SERVER,
  };
  await mkdir(dataDir, { recursive: true });
  for (let attempt = 0; ; attempt++) {
    try {
      await writeFile(file, `${JSON.stringify(owner)}\n`, { flag: 'wx' });
      heldHere.add(owner.token);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const holder = await readHolder(file);
    if (holder === 'gone') continue;
    if (!isStale(holder, staleAfterMs) || attempt >= 5) {
      throw new DataDirLockedError(describeHolder(dataDir, holder.owner), describeOwner(holder.owner));
    }
    await takeOver(file, holder.owner);
  }

  let lost = false;
  const heartbeat = setInterval(() => {
    void (async () => {
      const holder = await readHolder(file).catch(() => undefined);
      if (holder !== undefined && holder !== 'gone' && holder.owner?.token === owner.token) {
        const now = new Date();
        await utimes(file, now, now).catch(() => {});
        return;
      }
      if (lost) return;
      lost = true;
      clearInterval(heartbeat);
      heldHere.delete(owner.token);
      options.onLost?.(`the lock ${file} was removed or taken over by another process`);
    })();
  }, heartbeatMs);
  heartbeat.unref();

  return {
    file,
    async release() {
      clearInterval(heartbeat);
      heldHere.delete(owner.token);
      const holder = await readHolder(file).catch(() => undefined);
      if (holder !== undefined && holder !== 'gone' && holder.owner?.token === owner.token) {
        await unlink(file).catch(() => {});
      }
    },
  };
}

type Holder = { owner: LockOwner | undefined; modifiedMs: number };

async function readHolder(file: string): Promise<Holder | 'gone'> {
  try {
    const [text, info] = await Promise.all([readFile(file, 'utf8'), stat(file)]);
    return { owner: parseOwner(text), modifiedMs: info.mtimeMs };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'gone';
    throw error;
  }
}

function parseOwner(text: string): LockOwner | undefined {
  try {
    const value = JSON.parse(text) as Partial<LockOwner>;
    if (typeof value.pid === 'number' && typeof value.host === 'string' && typeof value.token === 'string') {
      return value as LockOwner;
    }
  } catch {
    // half-written (its writer is starting right now) or damaged: judged by its age alone
  }
  return undefined;
}

function isStale(holder: Holder, staleAfterMs: number): boolean {
  if (Date.now() - holder.modifiedMs > staleAfterMs) return true;
  const { owner } = holder;
  if (!owner || owner.host !== os.hostname() || heldHere.has(owner.token)) return false;
  // Our own pid in the file: a previous life of this process id (a container restarted).
  return owner.pid === process.pid || !isAlive(owner.pid);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Moves the stale file away; if what moved was not the file judged stale, puts it back. */
async function takeOver(file: string, judged: LockOwner | undefined): Promise<void> {
  const aside = `${file}.stale-${randomUUID()}`;
  try {
    await rename(file, aside);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return; // someone else took it over
    throw error;
  }
  const moved = parseOwner(await readFile(aside, 'utf8').catch(() => ''));
  if (moved?.token !== judged?.token) {
    // A fresh lock was created between our look and the rename: give it back.
    await rename(aside, file).catch(() => {});
    return;
  }
  await unlink(aside).catch(() => {});
}

/** "an EdgeFlow OTA server (pid 42 on gw, since …)". */
function describeOwner(owner: LockOwner | undefined): string {
  if (!owner) return 'an EdgeFlow OTA server that is starting';
  return `${owner.holder ?? SERVER} (pid ${owner.pid} on ${owner.host}, since ${owner.started_at})`;
}

function describeHolder(dataDir: string, owner: LockOwner | undefined): string {
  return (
    `the data directory ${dataDir} is in use by ${describeOwner(owner).replace(/^an EdgeFlow/, 'another EdgeFlow')}; ` +
    'stop that one first, or give this one its own EDGEFLOW_DATA_DIR'
  );
}
