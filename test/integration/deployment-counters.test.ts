/**
 * The counts kept on write agree with the rows, whatever happens: randomized runs (seeded, the
 * seed printed) of overlapping deployments with random strategies, faults and operator controls,
 * against the real agent on each database. Throughout and at the end, in one snapshot, the kept
 * counters equal a recount made here from the device rows, and each device's state agrees with
 * its update row.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Fault } from '../../src/simulator/faults.ts';
import type { Fleet } from '../../src/simulator/simulator.ts';
import { FLEET_SERVER_ENV, setupFleet } from '../helpers/deployment-fleet.ts';
import { eventually } from '../helpers/raw-device.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const backends = await backendsUnderTest();
after(() => stopSharedServices());

/** mulberry32: a small seeded generator, so a failing run can be repeated with its seed. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface DeviceRow {
  deployment_id: string;
  device_id: string;
  batch_index: number | null;
  state: string;
  reason: string | null;
  rollback_status: string | null;
  update_status: string | null;
}

/** The buckets one device row counts in, as this test understands the counts (not the database's function). */
function bucketsOf(row: DeviceRow): string[] {
  const buckets = [row.state];
  if (row.state === 'skipped') buckets.push(`skipped/${row.reason ?? 'unknown'}`);
  if ((row.state === 'failed' || row.state === 'timed_out') && row.reason?.startsWith('bake_')) {
    buckets.push('bake_failed');
  }
  if (row.rollback_status) buckets.push(`rollback/${row.rollback_status}`);
  return buckets;
}

/** Which update-row statuses each device state may stand beside. */
const STATE_OF_ROW: Record<string, (row: DeviceRow) => boolean> = {
  pending: (row) => row.update_status === null,
  queued: (row) => row.update_status === 'queued' || row.update_status === 'dispatched',
  in_progress: (row) => row.update_status === 'in_progress',
  retrying: (row) => row.update_status === 'failed' || row.update_status === 'timed_out',
  baking: (row) => row.update_status === 'completed',
  completed: (row) => row.update_status === 'completed',
  failed: (row) =>
    row.update_status === 'failed' || (row.update_status === 'completed' && Boolean(row.reason?.startsWith('bake_'))),
  timed_out: (row) => row.update_status === 'timed_out',
  cancelled: (row) =>
    row.update_status === null ||
    row.update_status === 'cancelled' ||
    row.update_status === 'failed' ||
    row.update_status === 'timed_out',
  skipped: (row) => row.update_status === null || row.update_status === 'skipped',
};

/** Compares the kept counts with a recount from the rows, both read by one statement (one snapshot). */
async function checkCounts(server: TestServer, deploymentIds: string[]): Promise<void> {
  const [snapshot] = await server.db.query<{
    devices: DeviceRow[] | null;
    kept: { deployment_id: string; batch_index: number; bucket: string; n: number }[] | null;
  }>(
    `SELECT
       (SELECT json_agg(json_build_object('deployment_id', m.deployment_id, 'device_id', m.device_id,
          'batch_index', m.batch_index, 'state', m.state, 'reason', m.reason, 'rollback_status', m.rollback_status,
          'update_status', u.status))
        FROM deployment_devices m LEFT JOIN ota_updates u ON u.id = m.update_id
        WHERE m.deployment_id = ANY($1::text[])) AS devices,
       (SELECT json_agg(json_build_object('deployment_id', deployment_id, 'batch_index', batch_index, 'bucket', bucket,
          'n', n))
        FROM deployment_counts WHERE deployment_id = ANY($1::text[]) AND n <> 0) AS kept`,
    [deploymentIds],
  );
  const recount = new Map<string, number>();
  for (const row of snapshot?.devices ?? []) {
    for (const bucket of bucketsOf(row)) {
      const key = `${row.deployment_id}/${row.batch_index ?? -1}/${bucket}`;
      recount.set(key, (recount.get(key) ?? 0) + 1);
    }
    assert.ok(
      STATE_OF_ROW[row.state]?.(row),
      `device ${row.device_id} is ${row.state} beside an update ${row.update_status}`,
    );
  }
  const kept = new Map(
    (snapshot?.kept ?? []).map((row) => [`${row.deployment_id}/${row.batch_index}/${row.bucket}`, row.n]),
  );
  assert.deepEqual(
    Object.fromEntries([...kept].sort()),
    Object.fromEntries([...recount].sort()),
    'the counts kept on write equal the recount from the rows',
  );
}

for (const backend of backends) {
  describe(`counts kept on write (${backend.name})`, () => {
    let server: TestServer;
    const fleets: Fleet[] = [];

    before(async () => {
      server = await startTestServer(backend, { env: FLEET_SERVER_ENV });
    });
    after(async () => {
      await Promise.all(fleets.map((fleet) => fleet.stop()));
      await server?.close();
    });

    for (const seed of [Number(process.env.EDGEFLOW_TEST_SEED ?? Date.now() % 100_000)]) {
      it(`equal a recount from the rows through a randomized run (seed ${seed})`, async (context) => {
        const next = random(seed);
        const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]!;
        const kinds: (Fault | null)[] = [
          null,
          null,
          null,
          null,
          'downloadError',
          'installFailure',
          'bakeRevert',
          'healthCheckFailure',
          'bootFailure',
        ];
        const faults = Array.from({ length: 40 }, () => pick(kinds));
        const fleet = await setupFleet(server, fleets, `recount${seed}`, 40, { faults, bakeCrashAfterMs: 300 });
        const ids = fleet.devices.map((device) => device.deviceId);
        const deploymentIds: string[] = [];
        for (let index = 0; index < 4; index++) {
          const from = Math.floor(next() * 20);
          const target = ids.slice(from, from + 10 + Math.floor(next() * 20));
          const strategy = pick(['all_at_once', 'rolling', 'canary'] as const);
          const shape =
            strategy === 'rolling'
              ? { batch_size: 2 + Math.floor(next() * 6) }
              : strategy === 'canary'
                ? {
                    canary_count: 1 + Math.floor(next() * 4),
                    ...(next() < 0.5 ? { rest_strategy: 'rolling', batch_size: 5 } : {}),
                  }
                : {};
          const created = await fleet.deploy({
            target: { device_ids: target },
            strategy,
            ...shape,
            bake_minutes: pick([0, 0.01, 0.03]),
            max_retries: pick([0, 0, 1, 2]),
            failure_threshold_percent: pick([10, 50, 100]),
            min_sample: pick([1, 3, 10]),
            on_failure: pick(['pause', 'abort', 'rollback']),
          });
          deploymentIds.push(created.id);
        }
        context.diagnostic(`deployments ${deploymentIds.join(', ')}`);
        const deadline = Date.now() + 25_000;
        while (Date.now() < deadline) {
          await new Promise((resolve) => setTimeout(resolve, 150 + next() * 400));
          if (next() < 0.3) {
            const control = pick(['pause', 'resume', 'promote', 'cancel', 'rollback', 'resume', 'resume']);
            await fleet.api('POST', `/api/v1/deployments/${pick(deploymentIds)}/${control}`);
          }
          await checkCounts(server, deploymentIds);
          const states = await Promise.all(deploymentIds.map(async (id) => (await fleet.deployment(id)).status));
          if (states.every((state) => ['completed', 'failed', 'cancelled', 'rolled_back'].includes(state))) break;
        }
        // End whatever still runs, then wait until every deployment has nothing left to do.
        for (const id of deploymentIds) await fleet.api('POST', `/api/v1/deployments/${id}/cancel`);
        await eventually(
          async () => {
            const rows = await server.db.query<{ n: number }>(
              'SELECT count(*)::int AS n FROM deployments WHERE id = ANY($1::text[]) AND NOT settled',
              [deploymentIds],
            );
            return rows[0]?.n === 0;
          },
          60_000,
          'every deployment settled',
        ).catch(async (error: Error) => {
          const left = await server.db.query(
            `SELECT p.id, p.state, m.device_id, m.state AS device_state, m.rollback_status, u.kind, u.status, u.phase,
               u.attempts, u.error_code, d.online, d.connected_node IS NOT NULL AS connected, d.current_version,
               d.connected_at, d.reported_at, now() AS now
             FROM deployments p JOIN deployment_devices m ON m.deployment_id = p.id
             JOIN devices d ON d.organization_id = m.organization_id AND d.device_id = m.device_id
             LEFT JOIN ota_updates u ON u.deployment_id = p.id AND u.device_id = m.device_id
               AND u.status IN ('queued', 'dispatched', 'in_progress')
             WHERE p.id = ANY($1::text[]) AND NOT p.settled
               AND (u.id IS NOT NULL OR (m.committed_at IS NOT NULL AND m.rollback_status IS NULL))`,
            [deploymentIds],
          );
          throw new Error(`${error.message}: ${JSON.stringify(left)}`);
        });
        await checkCounts(server, deploymentIds);
      });
    }
  });
}
