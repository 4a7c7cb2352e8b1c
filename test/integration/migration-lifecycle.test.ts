/**
 * Migration 007 carries the deployments of an existing database over, on each database: the
 * lifecycle state from the old flags, each device's state from its latest update row, the
 * counts from the devices, the listed target ids into their table, and the old abort reason as
 * the stop reason.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import { deploymentSettingsOf } from '../../src/server/deployments/schemas.ts';
import { recordFallBack } from '../../src/server/devices/repo.ts';
import { type Db, openDb, wrapPglite } from '../../src/server/infra/db.ts';
import { loadMigrations, migrate } from '../../src/server/infra/migrate.ts';
import { backendsUnderTest, dropSchema, stopSharedServices, TEST_DATABASE_URL } from '../helpers/server.ts';

const backends = await backendsUnderTest();
after(() => stopSharedServices());

async function openBare(kind: 'pglite' | 'postgres'): Promise<{ db: Db; dispose(): Promise<void> }> {
  if (kind === 'pglite') {
    const db = wrapPglite(new PGlite());
    return { db, dispose: () => db.close() };
  }
  const schema = `m_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await admin.connect();
  await admin.query(`CREATE SCHEMA ${schema}`);
  await admin.end();
  const db = await openDb({ databaseUrl: TEST_DATABASE_URL, schema, poolSize: 2 });
  return {
    db,
    async dispose() {
      await db.close();
      await dropSchema(schema);
    },
  };
}

const settings = JSON.stringify(
  deploymentSettingsOf({ version: '1.1.0', target: { all: true }, strategy: 'all_at_once', bake_minutes: 0 }),
);

/**
 * A migrated database with one organization, two devices on 1.1.0 and a deployment of 1.1.0 in
 * `state` whose device rows `rows` inserts (the columns and VALUES of the INSERT); both devices
 * then run 1.0.0 again, and the `fellBack` ones say they fell back (device_versions.reverted_at).
 * Returns the deployment's device rows ([id, state, reason], by id) and its non-zero counts.
 */
async function afterFallBack(
  kind: 'pglite' | 'postgres',
  deployment: { state: string; devices: [string, string]; rows: string },
  fellBack: string[],
): Promise<{ rows: (string | null)[][]; counts: (string | number)[][] }> {
  const { db: database, dispose } = await openBare(kind);
  try {
    await migrate(database);
    const [first, second] = deployment.devices;
    await database.exec(`
      INSERT INTO organizations (id, name, signing_public_key, signing_private_key) VALUES ('org1', 'o', 'pub', 'priv');
      INSERT INTO devices (organization_id, device_id, current_version, key_hash) VALUES
        ('org1', '${first}', '1.1.0', 'h1'), ('org1', '${second}', '1.1.0', 'h2');
      INSERT INTO deployments (id, organization_id, version, target, settings, state, started_at) VALUES
        ('dep', 'org1', '1.1.0', '{"all": true}', '${settings}', '${deployment.state}', now());
      INSERT INTO deployment_batches (deployment_id, batch_index, kind, started_at) VALUES ('dep', 0, 'canary', now());
      INSERT INTO deployment_devices ${deployment.rows};
      UPDATE devices SET current_version = '1.0.0';
    `);
    for (const device of fellBack) await recordFallBack(database, 'org1', device, '1.1.0');
    const rows = await database.query<{ device_id: string; state: string; reason: string | null }>(
      "SELECT device_id, state, reason FROM deployment_devices WHERE deployment_id = 'dep' ORDER BY device_id",
    );
    const counts = await database.query<{ bucket: string; n: number }>(
      "SELECT bucket, n FROM deployment_counts WHERE deployment_id = 'dep' AND n <> 0 ORDER BY bucket",
    );
    return {
      rows: rows.map((row) => [row.device_id, row.state, row.reason]),
      counts: counts.map((row) => [row.bucket, row.n]),
    };
  } finally {
    await dispose();
  }
}

for (const db of [...new Set(backends.map((backend) => backend.db))]) {
  describe(`migration 007 on an existing database (${db})`, () => {
    it('a device that fell back from the version reads bake_reverted, even when its bake failed first as unhealthy', async () => {
      // Its health probe answered unhealthy first; then it booted 1.0.0 again and said so.
      // 'rolled' went back by the server's rollback: no fall-back is recorded for it.
      const { rows, counts } = await afterFallBack(
        db,
        {
          state: 'running',
          devices: ['fell', 'rolled'],
          rows: `(deployment_id, organization_id, device_id, batch_index, from_version, state, reason, bake_failed_at) VALUES
            ('dep', 'org1', 'fell', 0, '1.0.0', 'failed', 'bake_unhealthy', now()),
            ('dep', 'org1', 'rolled', 0, '1.0.0', 'failed', 'bake_unhealthy', now())`,
        },
        ['fell'],
      );
      assert.deepEqual(rows, [
        ['fell', 'failed', 'bake_reverted'],
        ['rolled', 'failed', 'bake_unhealthy'],
      ]);
      assert.deepEqual(
        counts,
        [
          ['bake_failed', 2],
          ['failed', 2],
        ],
        'the reason moved, the counts did not',
      );
    });

    it('a device that falls back within its bake fails it, even after the deployment stopped watching it', async () => {
      // 'cut' was baking when the deployment ended (released as completed, its bake window still
      // open); 'passed' finished its bake an hour ago.
      const { rows, counts } = await afterFallBack(
        db,
        {
          state: 'rolled_back',
          devices: ['cut', 'passed'],
          rows: `(deployment_id, organization_id, device_id, batch_index, from_version, state, bake_until) VALUES
            ('dep', 'org1', 'cut', 0, '1.0.0', 'completed', now() + interval '5 minutes'),
            ('dep', 'org1', 'passed', 0, '1.0.0', 'completed', now() - interval '1 hour')`,
        },
        ['cut', 'passed'],
      );
      assert.deepEqual(rows, [
        ['cut', 'failed', 'bake_reverted'],
        ['passed', 'completed', null],
      ]);
      assert.deepEqual(
        counts,
        [
          ['bake_failed', 1],
          ['completed', 1],
          ['failed', 1],
        ],
        'the counts follow the row',
      );
    });

    it('a device that falls back while its bake is still watched fails it as reverted at once', async () => {
      // 'fell' reported its fall-back before the bake's next pass; 'probed' is still baking and
      // has said nothing of a fall-back (its record is the pass's to judge).
      const { rows, counts } = await afterFallBack(
        db,
        {
          state: 'running',
          devices: ['fell', 'probed'],
          rows: `(deployment_id, organization_id, device_id, batch_index, from_version, state, bake_until) VALUES
            ('dep', 'org1', 'fell', 0, '1.0.0', 'baking', now() + interval '5 minutes'),
            ('dep', 'org1', 'probed', 0, '1.0.0', 'baking', now() + interval '5 minutes')`,
        },
        ['fell'],
      );
      assert.deepEqual(rows, [
        ['fell', 'failed', 'bake_reverted'],
        ['probed', 'baking', null],
      ]);
      assert.deepEqual(
        counts,
        [
          ['bake_failed', 1],
          ['baking', 1],
          ['failed', 1],
        ],
        'the counts follow the row',
      );
    });

    it('carries deployments over: states from the flags, devices from their update rows, counts from the devices', async () => {
      const { db: database, dispose } = await openBare(db);
      try {
        await migrate(
          database,
          loadMigrations().filter((migration) => migration.version <= 6),
        );
        await database.exec(`
          INSERT INTO organizations (id, name, signing_public_key, signing_private_key) VALUES ('org1', 'o', 'pub', 'priv');
          INSERT INTO devices (organization_id, device_id, current_version, key_hash) VALUES
            ('org1', 'd1', '1.1.0', 'h1'), ('org1', 'd2', '1.0.0', 'h2'), ('org1', 'd3', '1.0.0', 'h3'),
            ('org1', 'd4', '1.0.0', 'h4');
          INSERT INTO deployments (id, organization_id, version, target, settings, started_at) VALUES
            ('depA', 'org1', '1.1.0', '{"device_ids": ["d1", "d2", "nope"]}', '${settings}', now());
          INSERT INTO deployments (id, organization_id, version, target, settings, aborted_at, rolled_back_at,
            abort_reason, started_at) VALUES
            ('depB', 'org1', '1.1.0', '{"all": true}', '${settings}', now(), now(), 'batch 0 crossed the failure threshold', now());
          INSERT INTO deployments (id, organization_id, version, target, settings, cancelled_at, finished_at) VALUES
            ('depC', 'org1', '1.1.0', '{"all": true}', '${settings}', now(), now());
          INSERT INTO deployment_batches (deployment_id, batch_index, kind, started_at) VALUES
            ('depA', 0, 'batch', now()), ('depB', 0, 'canary', now()), ('depC', 0, 'batch', NULL);
          INSERT INTO deployment_devices (deployment_id, organization_id, device_id, batch_index, from_version) VALUES
            ('depA', 'org1', 'd1', 0, '1.0.0'), ('depA', 'org1', 'd2', 0, '1.0.0'),
            ('depB', 'org1', 'd3', 0, '1.0.0'), ('depC', 'org1', 'd4', 0, '1.0.0');
          INSERT INTO ota_updates (id, organization_id, device_id, deployment_id, kind, target_version, from_version,
            status, error_code, finished_at) VALUES
            ('u1', 'org1', 'd1', 'depA', 'update', '1.1.0', '1.0.0', 'completed', NULL, now()),
            ('u2', 'org1', 'd2', 'depA', 'update', '1.1.0', '1.0.0', 'failed', 'install_failed', now()),
            ('u3', 'org1', 'd3', 'depB', 'update', '1.1.0', '1.0.0', 'completed', NULL, now() - interval '1 minute'),
            ('u4', 'org1', 'd3', 'depB', 'rollback', '1.0.0', '1.1.0', 'completed', NULL, now());
        `);
        assert.equal((await migrate(database))[0], 7, 'migration 007 applied over the existing rows');

        const deployments = await database.query<{
          id: string;
          state: string;
          settled: boolean;
          stop_reason: string | null;
          target: unknown;
        }>('SELECT id, state, settled, stop_reason, target FROM deployments ORDER BY id');
        assert.deepEqual(
          deployments.map((row) => [row.id, row.state, row.settled, row.stop_reason]),
          [
            ['depA', 'running', false, null],
            ['depB', 'rolled_back', false, 'batch 0 crossed the failure threshold'],
            ['depC', 'cancelled', true, null],
          ],
        );
        assert.deepEqual(deployments[0]?.target, { device_ids_count: 3 });
        const listed = await database.query<{ device_id: string }>(
          "SELECT device_id FROM deployment_target_ids WHERE deployment_id = 'depA' ORDER BY ordinal",
        );
        assert.deepEqual(
          listed.map((row) => row.device_id),
          ['d1', 'd2', 'nope'],
        );
        const devices = await database.query<{
          device_id: string;
          state: string;
          reason: string | null;
          rollback_status: string | null;
        }>(
          'SELECT device_id, state, reason, rollback_status FROM deployment_devices ORDER BY deployment_id, device_id',
        );
        assert.deepEqual(
          devices.map((row) => [row.device_id, row.state, row.reason, row.rollback_status]),
          [
            ['d1', 'completed', null, null],
            ['d2', 'failed', 'install_failed', null],
            ['d3', 'completed', null, 'completed'],
            ['d4', 'pending', null, null],
          ],
        );
        const counts = await database.query<{ deployment_id: string; bucket: string; n: number }>(
          'SELECT deployment_id, bucket, n FROM deployment_counts WHERE n <> 0 ORDER BY deployment_id, bucket',
        );
        assert.deepEqual(
          counts.map((row) => [row.deployment_id, row.bucket, row.n]),
          [
            ['depA', 'completed', 1],
            ['depA', 'failed', 1],
            ['depB', 'completed', 1],
            ['depB', 'rollback/completed', 1],
            ['depC', 'pending', 1],
          ],
        );
        // The counts are kept on write from then on: a device's row moves its counters.
        await database.query("UPDATE deployment_devices SET state = 'cancelled' WHERE deployment_id = 'depC'");
        const after = await database.query<{ bucket: string; n: number }>(
          "SELECT bucket, n FROM deployment_counts WHERE deployment_id = 'depC' AND n <> 0",
        );
        assert.deepEqual(after, [{ bucket: 'cancelled', n: 1 }]);
      } finally {
        await dispose();
      }
    });
  });
}

for (const db of [...new Set(backends.map((backend) => backend.db))]) {
  describe(`a deployment's device rows and their parents, checked per statement (migration 013, ${db})`, () => {
    async function withDeployment(run: (database: Db) => Promise<void>): Promise<void> {
      const { db: database, dispose } = await openBare(db);
      try {
        await migrate(database);
        await database.exec(`
          INSERT INTO organizations (id, name, signing_public_key, signing_private_key) VALUES ('org1', 'o', 'pub', 'priv');
          INSERT INTO devices (organization_id, device_id, current_version, key_hash) VALUES
            ('org1', 'd1', '1.0.0', 'h1'), ('org1', 'd2', '1.0.0', 'h2');
          INSERT INTO deployments (id, organization_id, version, target, settings, state, started_at) VALUES
            ('dep', 'org1', '1.1.0', '{"all": true}', '${settings}', 'running', now());
          INSERT INTO deployment_batches (deployment_id, batch_index, kind, started_at) VALUES ('dep', 0, 'batch', now());
        `);
        await run(database);
      } finally {
        await dispose();
      }
    }
    const insert = (database: Db, deploymentId: string, batch: number | null) =>
      database.query(
        `INSERT INTO deployment_devices (deployment_id, organization_id, device_id, batch_index, from_version, state)
         VALUES ($1, 'org1', 'd1', $2, '1.0.0', 'pending'), ($1, 'org1', 'd2', 0, '1.0.0', 'pending')`,
        [deploymentId, batch],
      );
    const violation = { code: '23503' };

    it('takes rows of a deployment and batch that exist, and of a device left out (no batch)', async () => {
      await withDeployment(async (database) => {
        await insert(database, 'dep', null);
        const [row] = await database.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM deployment_devices WHERE deployment_id = 'dep'",
        );
        assert.equal(row?.n, 2);
      });
    });

    it('refuses, as a foreign key does, a row naming a batch or a deployment that does not exist, and a move to one', async () => {
      await withDeployment(async (database) => {
        await assert.rejects(insert(database, 'dep', 7), violation);
        await assert.rejects(insert(database, 'nope', 0), violation);
        await insert(database, 'dep', 0);
        await assert.rejects(
          database.query(
            "UPDATE deployment_devices SET batch_index = 3 WHERE deployment_id = 'dep' AND device_id = 'd1'",
          ),
          violation,
        );
      });
    });

    it('takes a deleted deployment’s device rows along, as the cascade did', async () => {
      await withDeployment(async (database) => {
        await insert(database, 'dep', 0);
        await database.query("DELETE FROM deployments WHERE id = 'dep'");
        const [row] = await database.query<{ n: number }>('SELECT count(*)::int AS n FROM deployment_devices');
        assert.equal(row?.n, 0);
      });
    });
  });
}
