/** Where a device may roll back to: the pure rules, and migration 004 on an existing database. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PGlite } from '@electric-sql/pglite';
import { wrapPglite } from '../../src/server/infra/db.ts';
import { ConflictError } from '../../src/server/infra/errors.ts';
import { loadMigrations, migrate } from '../../src/server/infra/migrate.ts';
import {
  chooseRollbackTarget,
  committedVersionsAfter,
  type FinishedUpdate,
  type RunVersion,
  rollbackTargetAfter,
  rollbackVersions,
} from '../../src/server/updates/rollback.ts';

const update = (from: string, to: string, kind: FinishedUpdate['kind'] = 'update'): FinishedUpdate => ({
  kind,
  from_version: from,
  target_version: to,
});

describe('the rollback target after a report', () => {
  const cases: [string, FinishedUpdate, boolean, string, string | null | 'unchanged'][] = [
    ['a successful update: the version it left', update('1.0.0', '1.1.0'), true, '1.1.0', '1.0.0'],
    ['a forced re-install: unchanged', update('1.1.0', '1.1.0'), true, '1.1.0', 'unchanged'],
    ['a successful rollback: none', update('1.1.0', '1.0.0', 'rollback'), true, '1.0.0', null],
    ['a failed update: unchanged', update('1.0.0', '1.1.0'), false, '1.0.0', 'unchanged'],
    ['a failed rollback: unchanged', update('1.1.0', '1.0.0', 'rollback'), false, '1.1.0', 'unchanged'],
  ];
  for (const [name, finished, succeeded, current, expected] of cases) {
    it(name, () => assert.equal(rollbackTargetAfter(finished, succeeded, current), expected));
  }

  it('records both ends of a success as committed, once each, and nothing for a failure', () => {
    assert.deepEqual(committedVersionsAfter(update('1.0.0', '1.1.0'), true, '1.1.0'), ['1.0.0', '1.1.0']);
    assert.deepEqual(committedVersionsAfter(update('1.1.0', '1.1.0'), true, '1.1.0'), ['1.1.0']);
    assert.deepEqual(committedVersionsAfter(update('1.0.0', '1.1.0'), false, '1.0.0'), []);
  });
});

describe('rollback versions', () => {
  const at = (seconds: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, seconds));
  const run: RunVersion[] = [
    { version: '1.0.0', last_run_at: at(1) },
    { version: '1.2.0', last_run_at: at(3) },
    { version: '1.1.0', last_run_at: at(2) },
    { version: '1.3.0', last_run_at: at(3) },
  ];

  it('lists every committed version but the running one, most recently run first, ties by version', () => {
    assert.deepEqual(rollbackVersions(run, '1.2.0'), ['1.3.0', '1.1.0', '1.0.0']);
    assert.deepEqual(rollbackVersions(run, '9.0.0'), ['1.3.0', '1.2.0', '1.1.0', '1.0.0']);
    assert.deepEqual(rollbackVersions([], '1.0.0'), []);
  });

  const device = { device_id: 'd1', current_version: '1.2.0', previous_version: '1.1.0' };
  const refusal = (fn: () => unknown, code: string) =>
    assert.throws(fn, (error: unknown) => error instanceof ConflictError && error.code === code);

  it('goes to the last known good version without a version, else to the committed version named', () => {
    assert.equal(chooseRollbackTarget(device, run), '1.1.0');
    assert.equal(chooseRollbackTarget(device, run, '1.0.0'), '1.0.0');
    assert.equal(chooseRollbackTarget(device, run, '1.3.0'), '1.3.0');
  });

  it('refuses a version never committed, the running one, and a missing or self-referencing target', () => {
    refusal(() => chooseRollbackTarget(device, run, '2.0.0'), 'version_not_committed');
    refusal(() => chooseRollbackTarget(device, run, '1.2.0'), 'already_on_version');
    refusal(() => chooseRollbackTarget({ ...device, previous_version: null }, run), 'no_rollback_target');
    // What a forced re-install left behind before this fix: no target, not a "rollback" to itself.
    refusal(() => chooseRollbackTarget({ ...device, previous_version: '1.2.0' }, run), 'no_rollback_target');
  });
});

describe('migration 004 on a database with history', () => {
  it('fills device_versions from what is known and repairs a re-install that became its own rollback target', async () => {
    const db = wrapPglite(new PGlite());
    try {
      const all = loadMigrations();
      const v4 = all.findIndex((m) => m.name === 'device_versions');
      await migrate(db, all.slice(0, v4));
      await db.exec(`
        INSERT INTO organizations (id, name, signing_public_key, signing_private_key) VALUES ('o', 'o', 'pub', 'priv');
        INSERT INTO devices (organization_id, device_id, current_version, previous_version, key_hash) VALUES
          ('o', 'reinstalled', '1.1.0', '1.1.0', 'k1'),
          ('o', 'rolled-back-then-reinstalled', '1.1.0', '1.1.0', 'k2'),
          ('o', 'fresh', '2.0.0', NULL, 'k3');
        INSERT INTO ota_updates (id, organization_id, device_id, kind, target_version, from_version, status, created_at,
            finished_at) VALUES
          ('u1', 'o', 'reinstalled', 'update', '1.1.0', '1.0.0', 'completed', now() - interval '3 h', now() - interval '3 h'),
          ('u2', 'o', 'reinstalled', 'update', '1.2.0', '1.1.0', 'failed', now() - interval '2 h', now() - interval '2 h'),
          ('u3', 'o', 'reinstalled', 'update', '1.1.0', '1.1.0', 'completed', now() - interval '1 h', now() - interval '1 h'),
          ('r1', 'o', 'rolled-back-then-reinstalled', 'update', '1.1.0', '1.0.0', 'completed', now() - interval '4 h',
            now() - interval '4 h'),
          ('r2', 'o', 'rolled-back-then-reinstalled', 'update', '1.2.0', '1.1.0', 'completed', now() - interval '3 h',
            now() - interval '3 h'),
          ('r3', 'o', 'rolled-back-then-reinstalled', 'rollback', '1.1.0', '1.2.0', 'completed', now() - interval '2 h',
            now() - interval '2 h'),
          ('r4', 'o', 'rolled-back-then-reinstalled', 'update', '1.1.0', '1.1.0', 'completed', now() - interval '1 h',
            now() - interval '1 h');
      `);
      assert.deepEqual(
        await migrate(db),
        all.slice(v4).map((m) => m.version),
      );

      const versions = await db.query<{ device_id: string; version: string }>(
        'SELECT device_id, version FROM device_versions ORDER BY device_id, version',
      );
      assert.deepEqual(
        versions.map((row) => `${row.device_id} ${row.version}`),
        [
          'fresh 2.0.0',
          'reinstalled 1.0.0',
          'reinstalled 1.1.0',
          'rolled-back-then-reinstalled 1.0.0',
          'rolled-back-then-reinstalled 1.1.0',
          'rolled-back-then-reinstalled 1.2.0',
        ],
        'a failed update (1.2.0) was never committed',
      );
      const previous = await db.query<{ device_id: string; previous_version: string | null }>(
        'SELECT device_id, previous_version FROM devices ORDER BY device_id',
      );
      assert.deepEqual(
        previous.map((row) => [row.device_id, row.previous_version]),
        [
          ['fresh', null],
          ['reinstalled', '1.0.0'],
          ['rolled-back-then-reinstalled', null],
        ],
      );
    } finally {
      await db.close();
    }
  });
});
