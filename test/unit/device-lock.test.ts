/**
 * Device update locks, the pure parts and the lock directory on a real disk: the file
 * convention (reason, until=), what counts as held (expired and temporary files do not), the
 * agent's watcher noticing a script's file and an expiry, the `--until` and `force_after` times,
 * the words the CLI, the dashboard and the deployment show, and the single-update rule.
 */
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  LockWatcher,
  lockStateOf,
  parseLockFile,
  parseUntil,
  readLockState,
  releaseLock,
  takeLock,
} from '../../src/agent/device-lock.ts';
import { silentLogger } from '../../src/agent/logger.ts';
import { describeLock } from '../../src/cli/ota-format.ts';
import type { DeviceLockPayload } from '../../src/protocol/tunnel.ts';
import { parseTimeOrDuration } from '../../src/server/infra/schemas.ts';
import { explainDevice, WAIT_REASONS } from '../../src/server/model/deployment.ts';
import { overridesLock } from '../../src/server/updates/engine.ts';
import { lockOverrideAt } from '../../src/server/updates/service.ts';
import { eventually } from '../helpers/raw-device.ts';
import { tempDir } from '../helpers/temp.ts';

describe('the lock file convention', () => {
  it('reads the reason from the first line and an optional until= line', () => {
    assert.deepEqual(parseLockFile('backup', 'nightly backup\nuntil=2030-01-31T02:00:00Z\n'), {
      reason: 'nightly backup',
      until: new Date('2030-01-31T02:00:00Z'),
    });
    assert.deepEqual(parseLockFile('job', ''), { reason: 'locked by job' });
    // An unreadable until: held until removed, never taken as released.
    assert.deepEqual(parseLockFile('job', 'x\nuntil=soon\n'), { reason: 'x' });
  });

  it('holds while a holder file is present; expired and temporary files hold nothing', async () => {
    const dir = join(await tempDir('edgeflow-locks-'), 'locks');
    assert.deepEqual(await readLockState(dir), { locked: false }, 'no directory yet: unlocked');
    await takeLock(dir, 'backup', 'nightly backup\nsecond line');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'old'), 'long gone\nuntil=2000-01-01T00:00:00Z\n');
    await writeFile(join(dir, 'backup.tmp-1-1'), 'half written');
    await writeFile(join(dir, '.hidden'), 'not a holder');
    const state = await readLockState(dir);
    assert.equal(state.locked, true);
    assert.equal(state.reason, 'nightly backup second line');
    assert.deepEqual(
      state.holders?.map((holder) => holder.name),
      ['backup'],
    );
    assert.equal(await releaseLock(dir, 'backup'), true);
    assert.equal(await releaseLock(dir, 'backup'), false);
    assert.deepEqual(await readLockState(dir), { locked: false });
    await assert.rejects(takeLock(dir, '../escape', 'x'), /lock name/);
  });

  it('several holders: every reason, the latest until, none when one holds without end', () => {
    const one = { name: 'a', reason: 'ra', until: '2030-01-01T00:00:00.000Z', since: '2026-01-01T00:00:00.000Z' };
    const two = { name: 'b', reason: 'rb', until: '2031-01-01T00:00:00.000Z', since: '2026-02-01T00:00:00.000Z' };
    const state = lockStateOf([one, two]);
    assert.equal(state.reason, 'a: ra; b: rb');
    assert.equal(state.until, two.until);
    assert.equal(state.since, one.since);
    assert.equal(lockStateOf([one, { name: 'c', reason: 'rc' }]).until, undefined);
  });

  it('the watcher sees a script write and remove its file, and an until pass by itself', async () => {
    const dir = join(await tempDir('edgeflow-locks-'), 'locks');
    const changes: DeviceLockPayload[] = [];
    const watcher = new LockWatcher({ dir, rescanMs: 100, logger: silentLogger, onChange: (s) => changes.push(s) });
    await watcher.start();
    try {
      await writeFile(join(dir, 'job'), 'milling\n');
      await eventually(async () => watcher.state.locked, 5000, 'locked');
      await releaseLock(dir, 'job');
      await eventually(async () => !watcher.state.locked, 5000, 'released');
      await writeFile(join(dir, 'brief'), `short job\nuntil=${new Date(Date.now() + 300).toISOString()}\n`);
      await eventually(async () => watcher.state.locked, 5000, 'locked again');
      await eventually(async () => !watcher.state.locked, 5000, 'expired');
      assert.deepEqual(
        changes.map((change) => change.locked),
        [true, false, true, false],
      );
    } finally {
      watcher.stop();
    }
  });
});

describe('lock times', () => {
  const now = new Date('2026-06-01T00:00:00Z');
  it('--until: an ISO time or a duration from now', () => {
    assert.deepEqual(parseUntil('2h', now), new Date('2026-06-01T02:00:00Z'));
    assert.deepEqual(parseUntil('90s', now), new Date('2026-06-01T00:01:30Z'));
    assert.deepEqual(parseUntil('2030-01-31T02:00:00Z', now), new Date('2030-01-31T02:00:00Z'));
    assert.equal(parseUntil('tomorrow', now), undefined);
  });
  it('force_after: a date-time or a duration from the start', () => {
    assert.deepEqual(parseTimeOrDuration('1d', now), new Date('2026-06-02T00:00:00Z'));
    assert.deepEqual(parseTimeOrDuration('2030-01-31T02:00:00+01:00', now), new Date('2030-01-31T01:00:00Z'));
    assert.equal(parseTimeOrDuration('2h later', now), undefined);
  });
  it('an update overrides the lock from its override time on, never without one', () => {
    const at = new Date('2026-06-01T00:00:00Z');
    assert.equal(overridesLock({ override_lock_at: null }, at.getTime() + 1e9), false);
    assert.equal(overridesLock({ override_lock_at: at }, at.getTime() - 1), false);
    assert.equal(overridesLock({ override_lock_at: at }, at.getTime()), true);
  });
});

describe('locks in words and rules', () => {
  it('a waiting device reads "locked by the device: <reason>"', () => {
    assert.deepEqual([...WAIT_REASONS], ['window', 'bandwidth', 'locked']);
    const device = {
      state: 'queued' as const,
      reason: 'locked',
      detail: 'nightly backup',
      batch: 0,
      from_version: '1.0.0',
      current_version: '1.0.0',
      version: '2.0.0',
      rollback_status: null,
    };
    assert.equal(explainDevice(device), 'locked by the device: nightly backup');
    assert.equal(
      explainDevice({ ...device, reason: null, detail: null }),
      'queued: waiting for the device to take the update',
    );
  });

  it('the CLI and the dashboard say "locked: <reason> (until …)"', () => {
    assert.equal(describeLock(null), '');
    assert.equal(describeLock({ reason: 'backup', until: null }), 'locked: backup (until released)');
    assert.equal(
      describeLock({ reason: 'backup', until: '2030-01-31T02:00:00Z' }),
      'locked: backup (until 2030-01-31T02:00:00.000Z)',
    );
  });

  it('a single update of a locked device: 409 device_locked, unless force_after, or force_lock by an admin', () => {
    const lock = { reason: 'backup', until: null, since: new Date() };
    const locked = { device_id: 'gw-1', lock };
    assert.throws(
      () => lockOverrideAt(locked, {}, 'operator'),
      (error: { code: string; statusCode?: number; details?: unknown }) =>
        error.code === 'device_locked' && JSON.stringify(error.details).includes('backup'),
    );
    assert.ok(lockOverrideAt(locked, { force_after: '2h' }, 'operator')! > new Date());
    assert.ok(lockOverrideAt(locked, { force_lock: true }, 'admin')! <= new Date());
    assert.throws(
      () => lockOverrideAt(locked, { force_lock: true }, 'operator'),
      (error: { code: string }) => error.code === 'insufficient_role',
    );
    assert.throws(
      () => lockOverrideAt(locked, { force_after: 'later' }, 'admin'),
      (error: { code: string }) => error.code === 'invalid_force_after',
    );
    assert.equal(lockOverrideAt({ device_id: 'gw-2', lock: null }, {}, 'viewer'), null);
  });
});
