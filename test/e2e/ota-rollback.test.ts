/**
 * Rollback keeps its meaning, end to end with real agents (A/B slots on disk, pinned signing
 * key) over the real tunnel: a forced re-install does not move the rollback target, an
 * operator may roll back to any version the device has run and committed (its registration
 * version included), and the OTA record lists those versions. On every backend under test.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import type { Agent } from '../../src/agent/agent.ts';
import { type OtaRecord, registerDevice, removeAgentDirs, settledOta, startAgent } from '../helpers/agents.ts';
import { type FirmwareFile, makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const backends = await backendsUnderTest();
after(async () => {
  await removeAgentDirs();
  await stopSharedServices();
});

type ErrorBody = { error: { code: string; message: string } };
type Record = OtaRecord & { rollback_versions: string[] };
type History = {
  updates: { kind: string; status: string; target_version: string; from_version: string; force: boolean }[];
};

const VERSIONS = ['1.0.0', '1.1.0', '1.2.0'] as const;

for (const backend of backends) {
  describe(`rollback to committed versions on ${backend.name}`, () => {
    let server: TestServer;
    let images: FirmwareFile[];
    const agents: Agent[] = [];

    before(async () => {
      server = await startTestServer(backend, {
        env: { EDGEFLOW_DISPATCH_INTERVAL_MS: '200', EDGEFLOW_HEALTH_CHECK_TIMEOUT_MS: '5000' },
      });
      images = await Promise.all(VERSIONS.map(() => makeFirmwareFile(64 * 1024)));
    });
    afterEach(async () => {
      await Promise.all(agents.splice(0).map((agent) => agent.stop()));
    });
    after(() => server.close());

    /** An organization of its own with firmware 1.0.0, 1.1.0 and 1.2.0, and an online device registered at 1.0.0. */
    async function deviceOnline() {
      const org = await server.createOrg('rollback');
      for (const [index, version] of VERSIONS.entries()) {
        const image = images[index]!;
        const upload = await postFirmware(server.url, org.adminKey, { version, sha256: image.sha256 }, image);
        assert.equal(upload.status, 201, JSON.stringify(upload.body));
      }
      const device = await registerDevice(server, org.adminKey, { current_version: '1.0.0' });
      const agent = await startAgent(server, org, device);
      agents.push(agent);
      const call = <T>(method: string, path: string, body?: unknown) =>
        server.api<T & ErrorBody>(method, path, org.adminKey, body);
      const ota = `/api/v1/devices/${device.deviceId}/ota`;
      return {
        agent,
        call,
        record: async () => (await call<Record>('GET', ota)).body,
        history: async () => (await call<History>('GET', `${ota}/history`)).body.updates,
        /** Sends an update or rollback, waits for it to settle and insists it completed. */
        async run(path: 'update' | 'rollback', body?: unknown): Promise<Record> {
          const accepted = await call<{ status: string }>('POST', `${ota}/${path}`, body);
          assert.equal(accepted.status, 202, JSON.stringify(accepted.body));
          const settled = (await settledOta(server, org.adminKey, device.deviceId)) as Record;
          assert.equal(settled.ota_status, 'completed', JSON.stringify(settled));
          return settled;
        },
        rollback: (body?: unknown) => call<{ status: string }>('POST', `${ota}/rollback`, body),
      };
    }

    it('keeps the rollback target across a forced re-install, and rolls back to the real previous version', async () => {
      const device = await deviceOnline();
      assert.deepEqual((await device.record()).rollback_versions, [], 'a new device has nowhere to roll back to');

      let record = await device.run('update', { version: '1.1.0' });
      assert.equal(record.current_version, '1.1.0');
      assert.equal(record.previous_version, '1.0.0', JSON.stringify([record, await device.history()]));

      record = await device.run('update', { version: '1.1.0', force: true });
      assert.equal(record.current_version, '1.1.0');
      assert.equal(record.previous_version, '1.0.0', 're-installing 1.1.0 must not make it its own rollback target');
      assert.deepEqual(record.rollback_versions, ['1.0.0']);
      assert.equal(device.agent.currentVersion, '1.1.0');

      record = await device.run('rollback');
      assert.equal(record.current_version, '1.0.0');
      assert.equal(device.agent.currentVersion, '1.0.0', 'the device itself booted 1.0.0 again');
      assert.deepEqual(record.rollback_versions, ['1.1.0']);
      assert.deepEqual(
        (await device.history()).map((u) => [u.kind, u.target_version, u.status, u.force]),
        [
          ['rollback', '1.0.0', 'completed', true],
          ['update', '1.1.0', 'completed', true],
          ['update', '1.1.0', 'completed', false],
        ],
      );
    });

    it('rolls back two steps to the registration version, and lists what the device committed, newest first', async () => {
      const device = await deviceOnline();
      await device.run('update', { version: '1.1.0' });
      let record = await device.run('update', { version: '1.2.0' });
      assert.equal(record.previous_version, '1.1.0');
      assert.deepEqual(record.rollback_versions, ['1.1.0', '1.0.0']);

      // The factory version is a plain downgrade for an update: only a rollback reaches it.
      const downgrade = await device.call('POST', `/api/v1/devices/${record.device_id}/ota/update`, {
        version: '1.0.0',
        force: true,
      });
      assert.equal(downgrade.status, 409);
      assert.equal(downgrade.body.error.code, 'downgrade_refused');

      record = await device.run('rollback', { version: '1.0.0' });
      assert.equal(record.current_version, '1.0.0');
      assert.equal(device.agent.currentVersion, '1.0.0', 'the device itself booted its factory version again');
      assert.equal(record.previous_version, null, 'after a rollback there is no last known good version to go back to');
      assert.deepEqual(record.rollback_versions, ['1.2.0', '1.1.0']);

      const plain = await device.rollback();
      assert.equal(plain.status, 409);
      assert.equal(plain.body.error.code, 'no_rollback_target');
      assert.match(plain.body.error.message, /1\.2\.0, 1\.1\.0/, 'the message names the versions it can go to');

      // A version the device committed whose firmware is gone (nothing protects 1.2.0 any more).
      assert.equal((await device.call('DELETE', '/api/v1/firmware/1.2.0')).status, 204);
      const gone = await device.rollback({ version: '1.2.0' });
      assert.equal(gone.status, 409, JSON.stringify(gone.body));
      assert.equal(gone.body.error.code, 'rollback_firmware_missing');

      // Any committed version, also one newer than the running one, as an explicit rollback.
      record = await device.run('rollback', { version: '1.1.0' });
      assert.equal(record.current_version, '1.1.0');
      assert.equal(device.agent.currentVersion, '1.1.0');
      assert.deepEqual(record.rollback_versions, ['1.0.0', '1.2.0']);
    });

    it('refuses a version the device never committed, the one it runs, and malformed requests, changing nothing', async () => {
      const device = await deviceOnline();
      await device.run('update', { version: '1.1.0' });
      const before = await device.history();

      const cases: [unknown, number, string][] = [
        [{ version: '1.2.0' }, 409, 'version_not_committed'],
        [{ version: '9.9.9' }, 409, 'version_not_committed'],
        [{ version: '1.1.0' }, 409, 'already_on_version'],
        [{ version: 'v1.0.0' }, 400, 'invalid_version'],
      ];
      for (const [body, status, code] of cases) {
        const refused = await device.rollback(body);
        assert.equal(refused.status, status, `${JSON.stringify(body)}: ${JSON.stringify(refused.body)}`);
        assert.equal(refused.body.error.code, code, JSON.stringify(body));
      }
      const never = await device.rollback({ version: '1.2.0' });
      assert.match(never.body.error.message, /can roll back to 1\.0\.0/);
      for (const body of [{ version: 1 }, { versions: '1.0.0' }, ['1.0.0']]) {
        const refused = await device.rollback(body);
        assert.equal(refused.status, 400, `${JSON.stringify(body)}: ${JSON.stringify(refused.body)}`);
        assert.ok(refused.body.error?.code, JSON.stringify(refused.body));
      }
      assert.deepEqual(await device.history(), before, 'no update was queued');
      assert.equal(device.agent.currentVersion, '1.1.0');

      // An empty object is the plain rollback, as is no body at all.
      const record = await device.run('rollback', {});
      assert.equal(record.current_version, '1.0.0');
    });
  });
}
