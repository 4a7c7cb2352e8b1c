/**
 * One tenant cannot hurt another through the tunnel: connects and reports of many devices
 * share one statement (infra/batcher.ts), so a hostile device whose strings PostgreSQL
 * refuses (NUL) or whose reports are not versions must fail alone, never the honest devices
 * of another organization batched with it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as devicesRepo from '../../src/server/devices/repo.ts';
import { Batcher } from '../../src/server/infra/batcher.ts';
import { openRaw, type RawDevice } from '../helpers/raw-device.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const backends = await backendsUnderTest();
after(stopSharedServices);

type Device = { device_id: string; online: boolean; agent_version: string | null; current_version: string };

for (const backend of backends) {
  describe(`tunnel tenant isolation on ${backend.name}`, () => {
    let server: TestServer;
    let hostileOrg: { id: string; adminKey: string };
    let honestOrg: { id: string; adminKey: string };

    before(async () => {
      server = await startTestServer(backend);
      hostileOrg = await server.createOrg('hostile');
      honestOrg = await server.createOrg('honest');
    });
    after(() => server.close());

    async function newDevice(key: string) {
      const response = await server.api<Device & { api_key: string }>('POST', '/api/v1/devices', key, {
        current_version: '1.0.0',
      });
      assert.equal(response.status, 201);
      return { deviceId: response.body.device_id, apiKey: response.body.api_key };
    }

    const deviceState = async (deviceId: string, key: string) =>
      (await server.api<Device>('GET', `/api/v1/devices/${deviceId}`, key)).body;

    /** The answer to a connect: `connected`, or the error frame the device got instead. */
    function connectOutcome(raw: RawDevice): Promise<string> {
      return Promise.race([
        raw.next('connected', 15_000).then(() => 'connected'),
        raw.next('error', 15_000).then((frame) => `error: ${String(frame.error)}`),
      ]);
    }

    it('connects and reports of honest devices succeed when a hostile device of another org shares their batch', async () => {
      const honest = await Promise.all(Array.from({ length: 12 }, () => newDevice(honestOrg.adminKey)));
      const hostile = await Promise.all(Array.from({ length: 3 }, () => newDevice(hostileOrg.adminKey)));
      const honestRaw = await Promise.all(honest.map(() => openRaw(server.url)));
      const hostileRaw = await Promise.all(hostile.map(() => openRaw(server.url)));

      // Every connect in the same few milliseconds: one batch window of the hub.
      const hostileVersions = ['1.0.0\u0000', 'x\u0000'.repeat(30), '\u0000'];
      for (const [index, raw] of hostileRaw.entries()) {
        raw.send({
          type: 'connect',
          device_id: hostile[index]!.deviceId,
          api_key: hostile[index]!.apiKey,
          version: hostileVersions[index],
        });
      }
      for (const [index, raw] of honestRaw.entries()) {
        raw.send({
          type: 'connect',
          device_id: honest[index]!.deviceId,
          api_key: honest[index]!.apiKey,
          version: '2.0.0',
        });
      }
      const honestOutcomes = await Promise.all(honestRaw.map(connectOutcome));
      assert.deepEqual(
        honestOutcomes,
        honestRaw.map(() => 'connected'),
      );
      for (const raw of hostileRaw) assert.match(await connectOutcome(raw), /^error: .*NUL/);
      for (const device of hostile) {
        assert.equal((await deviceState(device.deviceId, hostileOrg.adminKey)).online, false);
      }

      // The hostile devices connect properly, then report strings the database refuses or
      // versions that are not versions, in the same window as the honest devices' reports.
      const hostileConnected = hostile.map(() => openRaw(server.url));
      const hostileLinks = await Promise.all(hostileConnected);
      for (const [index, raw] of hostileLinks.entries()) {
        raw.send({ type: 'connect', device_id: hostile[index]!.deviceId, api_key: hostile[index]!.apiKey });
        assert.equal(await connectOutcome(raw), 'connected');
      }
      const hostileReports = [
        { current_version: '1.0.1\u0000' },
        { current_version: 'garbage' },
        { current_version: '1.0.1', agent_version: 'evil\u0000' },
      ];
      for (const [index, raw] of hostileLinks.entries()) {
        raw.send({ type: 'command', id: `bad-${index}`, action: 'device_info', payload: hostileReports[index] });
      }
      for (const raw of honestRaw) {
        raw.send({ type: 'command', id: 'info', action: 'device_info', payload: { current_version: '1.1.0' } });
      }
      for (const raw of honestRaw) assert.equal((await raw.next('response', 15_000)).status, 'success');
      for (const [index, raw] of hostileLinks.entries()) {
        const answer = await raw.next('response', 15_000);
        assert.equal(answer.id, `bad-${index}`);
        assert.equal(answer.status, 'error');
        assert.match(String(answer.error), /invalid_payload/);
      }
      for (const device of honest) {
        const state = await deviceState(device.deviceId, honestOrg.adminKey);
        assert.equal(state.online, true);
        assert.equal(state.current_version, '1.1.0');
        assert.equal(state.agent_version, '2.0.0');
      }
      for (const device of hostile) {
        assert.equal((await deviceState(device.deviceId, hostileOrg.adminKey)).current_version, '1.0.0');
      }
      await Promise.all([...honestRaw, ...hostileLinks, ...hostileRaw].map((raw) => raw.close()));
    });

    it('a hostile loop of bad connects never keeps an honest device of another org from connecting', async () => {
      const honest = await newDevice(honestOrg.adminKey);
      const hostile = await newDevice(hostileOrg.adminKey);
      let stop = false;
      const loop = (async () => {
        while (!stop) {
          const raw = await openRaw(server.url);
          raw.send({ type: 'connect', device_id: hostile.deviceId, api_key: hostile.apiKey, version: '\u0000' });
          await raw.next('error', 15_000).catch(() => {});
          await raw.close();
        }
      })();
      try {
        for (let round = 0; round < 10; round++) {
          const raw = await openRaw(server.url);
          raw.send({ type: 'connect', device_id: honest.deviceId, api_key: honest.apiKey, version: '2.0.0' });
          assert.equal(await connectOutcome(raw), 'connected', `round ${round}`);
          await raw.close();
        }
      } finally {
        stop = true;
        await loop;
      }
    });

    it('answers an ota_result whose versions are not semver with an error, and changes nothing', async () => {
      const device = await newDevice(honestOrg.adminKey);
      const raw = await openRaw(server.url);
      raw.send({ type: 'connect', device_id: device.deviceId, api_key: device.apiKey });
      assert.equal(await connectOutcome(raw), 'connected');
      const reports = [
        { update_id: 'upd_unknown', status: 'completed', current_version: 'garbage' },
        { update_id: 'upd_unknown', status: 'failed', current_version: '1.0.0', previous_version: '../1.0.0' },
        { update_id: 'upd_unknown', status: 'completed', current_version: ['1.0.0'] },
      ];
      for (const [index, payload] of reports.entries()) {
        raw.send({ type: 'command', id: `r${index}`, action: 'ota_result', payload });
        const answer = await raw.next('response', 15_000);
        assert.equal(answer.id, `r${index}`);
        assert.equal(answer.status, 'error', JSON.stringify(payload));
        assert.match(String(answer.error), /invalid_payload/);
      }
      const state = await deviceState(device.deviceId, honestOrg.adminKey);
      assert.equal(state.current_version, '1.0.0');
      await raw.close();
    });

    it('a batched statement that the database refuses for one input fails that input alone', async () => {
      const honest = await Promise.all(Array.from({ length: 6 }, () => newDevice(honestOrg.adminKey)));
      const hostile = await newDevice(hostileOrg.adminKey);
      // What the hub batches, against the real database, with an input that slipped past
      // validation: the statement fails as a whole, the Batcher must still isolate it.
      const batcher = new Batcher(
        async (reports: Parameters<typeof devicesRepo.reportCurrentVersions>[1]) => {
          await devicesRepo.reportCurrentVersions(server.db, reports);
          return reports.map(() => 'ok');
        },
        { maxSize: 1000, maxDelayMs: 20 },
      );
      const report = (organizationId: string, deviceId: string, currentVersion: string) =>
        batcher.add({ organizationId, deviceId, currentVersion, agentVersion: null, slot: null });
      const settled = await Promise.allSettled([
        ...honest.slice(0, 3).map((device) => report(honestOrg.id, device.deviceId, '3.0.0')),
        report(hostileOrg.id, hostile.deviceId, '3.0.0\u0000'),
        ...honest.slice(3).map((device) => report(honestOrg.id, device.deviceId, '3.0.0')),
      ]);
      assert.deepEqual(
        settled.map((result) => result.status),
        ['fulfilled', 'fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'fulfilled', 'fulfilled'],
      );
      for (const device of honest) {
        assert.equal((await deviceState(device.deviceId, honestOrg.adminKey)).current_version, '3.0.0');
      }
      assert.equal((await deviceState(hostile.deviceId, hostileOrg.adminKey)).current_version, '1.0.0');
    });
  });
}
