/**
 * A deployment survives a server restart mid-rollout and mid-bake: the restarted server
 * recomputes the gates from the rows, loses no device, dispatches none twice, and the
 * restart's own disconnects are no bake failures. Real agents, each database.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { fetchSigningKey, registerDevices } from '../../src/simulator/register.ts';
import { runFleet } from '../../src/simulator/simulator.ts';
import { makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
import { eventually } from '../helpers/raw-device.ts';
import {
  backendsUnderTest,
  persistentState,
  startTestServer,
  stopSharedServices,
  type TestServer,
} from '../helpers/server.ts';

const backends = await backendsUnderTest();
after(() => stopSharedServices());

const env = { EDGEFLOW_DISPATCH_INTERVAL_MS: '200', EDGEFLOW_HEALTH_CHECK_TIMEOUT_MS: '2000' };

interface Deployment {
  status: string;
  counts: Record<string, number>;
  batches: { state: string }[];
}

for (const backend of backends) {
  describe(`a deployment across a server restart (${backend.name})`, () => {
    it('resumes mid-bake where it stopped: every device updated once, no bake failed by the restart', async () => {
      const state = persistentState();
      let server: TestServer = await startTestServer(backend, { env, state });
      const org = await server.createOrg('restart');
      const key = org.adminKey;
      for (const version of ['1.0.0', '1.1.0']) {
        const firmware = await makeFirmwareFile(16 * 1024);
        assert.equal((await postFirmware(server.url, key, { version, sha256: firmware.sha256 }, firmware)).status, 201);
      }
      const devices = await registerDevices({ server: server.url, key, count: 6, prefix: 'restart-' });
      const fleet = runFleet({
        server: server.url,
        devices,
        allowInsecure: true,
        publicKeyPem: await fetchSigningKey(server.url, key),
        organizationId: org.id,
        reconnectBaseMs: 50,
        agentOptions: { progressIntervalMs: 200, resultRetryBaseMs: 100 },
      });
      try {
        assert.ok(await fleet.waitUntilAllConnected(20_000));
        const created = await server.api<{ id: string }>('POST', '/api/v1/deployments', key, {
          version: '1.1.0',
          target: { all: true },
          strategy: 'rolling',
          batch_size: 2,
          bake_minutes: 0.05,
          failure_threshold_percent: 0,
        });
        assert.equal(created.status, 201, JSON.stringify(created.body));
        const id = created.body.id;
        const deployment = async () => (await server.api<Deployment>('GET', `/api/v1/deployments/${id}`, key)).body;
        await eventually(async () => (await deployment()).batches[0]?.state === 'baking', 20_000, 'batch 0 baking');

        await server.close();
        server = await startTestServer(backend, { env, state });
        await eventually(
          async () => (await deployment()).status === 'completed',
          30_000,
          'completed after restart',
        ).catch(async (error: Error) => {
          throw new Error(`${error.message}: ${JSON.stringify(await deployment())}`);
        });

        const final = await deployment();
        assert.equal(final.counts.completed, 6);
        assert.deepEqual(
          final.batches.map((batch) => batch.state),
          ['passed', 'passed', 'passed'],
        );
        const rows = await server.db.query<{ device_id: string; n: number }>(
          `SELECT device_id, count(*)::int AS n FROM ota_updates WHERE deployment_id = $1 GROUP BY device_id`,
          [id],
        );
        assert.equal(rows.length, 6);
        assert.ok(
          rows.every((row) => row.n === 1),
          `one update per device: ${JSON.stringify(rows)}`,
        );
        const failedBakes = await server.db.query(
          'SELECT device_id FROM deployment_devices WHERE deployment_id = $1 AND bake_failed_at IS NOT NULL',
          [id],
        );
        assert.deepEqual(failedBakes, []);
      } finally {
        await fleet.stop();
        await server.close();
        await state.dispose();
      }
    });
  });
}
