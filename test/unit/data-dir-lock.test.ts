/** The data-directory lock: exclusive while its owner lives, taken over once it is stale. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { LOCK_FILE, lockDataDir } from '../../src/server/infra/data-dir-lock.ts';
import { DataDirLockedError } from '../../src/server/infra/errors.ts';

describe('data-directory lock', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'edgeflow-lock-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const lockFile = () => path.join(dir, LOCK_FILE);
  const writeLock = (owner: Record<string, unknown>) =>
    writeFile(lockFile(), JSON.stringify({ token: 'other', started_at: new Date().toISOString(), ...owner }));

  it('is exclusive while held, and free again once released', async () => {
    const lock = await lockDataDir(dir);
    await assert.rejects(lockDataDir(dir), (error: Error) => {
      assert.ok(error instanceof DataDirLockedError);
      assert.match(error.message, new RegExp(`pid ${process.pid} on ${os.hostname()}`));
      return true;
    });
    await lock.release();
    const again = await lockDataDir(dir);
    await again.release();
  });

  it('takes over a lock whose process is dead', async () => {
    const dead = spawnSync(process.execPath, ['-e', '0']).pid;
    await writeLock({ pid: dead, host: os.hostname() });
    const lock = await lockDataDir(dir);
    assert.equal(JSON.parse(await readFile(lockFile(), 'utf8')).pid, process.pid);
    await lock.release();
  });

  it('respects a fresh lock of another host, and takes it over once it is no longer touched', async () => {
    await writeLock({ pid: 1, host: 'another-host' });
    await assert.rejects(lockDataDir(dir, { staleAfterMs: 60_000 }), DataDirLockedError);
    const old = new Date(Date.now() - 120_000);
    await utimes(lockFile(), old, old);
    const lock = await lockDataDir(dir, { staleAfterMs: 60_000 });
    await lock.release();
  });

  it('tells its owner when another process took the lock over', async () => {
    let lost: string | undefined;
    const lock = await lockDataDir(dir, {
      heartbeatMs: 50,
      onLost: (reason) => {
        lost = reason;
      },
    });
    await writeLock({ pid: 1, host: 'another-host' });
    for (let waited = 0; lost === undefined && waited < 10_000; waited += 50) await sleep(50);
    assert.match(lost ?? '', /taken over/);
    await lock.release();
    assert.equal(JSON.parse(await readFile(lockFile(), 'utf8')).host, 'another-host', 'release leaves a foreign lock');
    await rm(lockFile());
  });
});
