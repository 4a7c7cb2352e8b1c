/**
 * A stock EdgeFlow device (their Go tunnel agent and command handler, unmodified; see
 * test/helpers/edgeflow-device.ts for what it sends) against the tunnel and the update API:
 * it connects and stays online, its health answer (uptime "TODO") is understood, an update
 * aimed at it fails at once saying why, and no update or rollback aimed at it while it is
 * online is ever answered device_offline.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { type OtaRecord, registerDevice, settledOta } from '../helpers/agents.ts';
import { StockEdgeFlowDevice } from '../helpers/edgeflow-device.ts';
import { type FirmwareFile, makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
import { eventually } from '../helpers/raw-device.ts';
import {
  backendsUnderTest,
  persistentState,
  startTestServer,
  stopSharedServices,
  type TestServer,
} from '../helpers/server.ts';

const backends = await backendsUnderTest();
let firmware: FirmwareFile;
before(async () => {
  firmware = await makeFirmwareFile(64 * 1024);
});
after(async () => {
  await rm(path.dirname(firmware.path), { recursive: true, force: true });
  await stopSharedServices();
});

type ErrorBody = { error: { code: string; message: string } };
type Device = { online: boolean; current_version: string; agent_version: string | null };

for (const backend of backends) {
  describe(`stock EdgeFlow device on ${backend.name}`, () => {
    let server: TestServer;
    let org: { id: string; adminKey: string };
    const devices: StockEdgeFlowDevice[] = [];

    before(async () => {
      server = await startTestServer(backend, {
        env: { EDGEFLOW_DISPATCH_INTERVAL_MS: '200', EDGEFLOW_HEALTH_CHECK_TIMEOUT_MS: '3000' },
      });
      org = await server.createOrg('stock');
      const upload = await postFirmware(
        server.url,
        org.adminKey,
        { version: '1.1.0', sha256: firmware.sha256 },
        firmware,
      );
      assert.equal(upload.status, 201);
    });
    afterEach(async () => {
      await Promise.all(devices.splice(0).map((device) => device.stop()));
    });
    after(() => server.close());

    async function stockDevice(options: Partial<ConstructorParameters<typeof StockEdgeFlowDevice>[1]> = {}) {
      const registered = await registerDevice(server, org.adminKey);
      const device = new StockEdgeFlowDevice(server.url, { ...registered, heartbeatIntervalMs: 200, ...options });
      devices.push(device);
      await device.start();
      return { ...registered, device };
    }
    const deviceRecord = async (deviceId: string) =>
      (await server.api<Device>('GET', `/api/v1/devices/${deviceId}`, org.adminKey)).body;
    const post = (deviceId: string, action: 'update' | 'rollback', body?: unknown) =>
      server.api<ErrorBody & { update_id?: string; status?: string }>(
        'POST',
        `/api/v1/devices/${deviceId}/ota/${action}`,
        org.adminKey,
        body,
      );

    it('connects with its own frames (no id, nanosecond timestamps), gets pongs, and shows online', async () => {
      const { deviceId, device } = await stockDevice({ agentVersion: '0.9.3' });
      const connect = device.sent[0]!;
      assert.equal(connect.type, 'connect');
      assert.equal('id' in connect, false);
      assert.match(String(connect.timestamp), /\.\d{1,9}Z$/);
      await eventually(async () => device.received.filter((m) => m.type === 'pong').length >= 2, 5000, 'two pongs');
      const record = await deviceRecord(deviceId);
      assert.equal(record.online, true);
      assert.equal(record.agent_version, '0.9.3');
      assert.equal(
        record.current_version,
        '1.0.0',
        'a stock device never reports its version: the registered one stays',
      );
      assert.equal(
        device.received.some((m) => m.type === 'error'),
        false,
        `no frame of the device was refused: ${JSON.stringify(device.received.filter((m) => m.type === 'error'))}`,
      );
    });

    it('passes the online check with its uptime "TODO", and its update fails at once saying it has no OTA handler', async () => {
      const { deviceId, device } = await stockDevice();
      const accepted = await post(deviceId, 'update', { version: '1.1.0' });
      assert.equal(accepted.status, 202, JSON.stringify(accepted.body));
      const record: OtaRecord = await settledOta(server, org.adminKey, deviceId, 10_000);
      assert.equal(record.ota_status, 'failed');
      assert.equal(record.error?.code, 'ota_not_supported');
      assert.match(String(record.error?.message), /unknown command action: ota_update/);
      assert.match(String(record.error?.message), /no OTA handler/);
      assert.equal(record.current_version, '1.0.0', 'the device stays on its version');
      const answers = device.sent.filter((m) => m.type === 'response');
      assert.ok(answers.some((m) => m.status === 'success' && (m.data as { uptime?: unknown }).uptime === 'TODO'));
    });

    it('answers device_unhealthy, not device_offline, for an unhealthy, unreadable or refused health answer', async () => {
      const answers = [
        { status: 'success' as const, data: { status: 'degraded', uptime: 'TODO' } },
        { status: 'success' as const, data: 'fine' },
        { status: 'success' as const, data: { uptime: 5 } },
        { status: 'error' as const, error: 'health service not available' },
      ];
      for (const answer of answers) {
        const { deviceId } = await stockDevice({ healthAnswer: () => answer });
        for (const action of ['update', 'rollback'] as const) {
          const refused = await post(deviceId, action, action === 'update' ? { version: '1.1.0' } : undefined);
          assert.equal(refused.status, 409, JSON.stringify(refused.body));
          if (action === 'rollback') {
            // No earlier version is known for a freshly registered device: that is said first.
            assert.equal(refused.body.error.code, 'no_rollback_target');
            continue;
          }
          assert.equal(refused.body.error.code, 'device_unhealthy', JSON.stringify({ answer, body: refused.body }));
        }
        assert.equal((await deviceRecord(deviceId)).online, true);
      }
    });

    it('reads every error the server sends it as the plain string its decoder expects', async () => {
      const registered = await registerDevice(server, org.adminKey);
      const wrongKey = new StockEdgeFlowDevice(server.url, { ...registered, apiKey: `${registered.apiKey}x` });
      devices.push(wrongKey);
      await assert.rejects(wrongKey.start(), /^Error: refused: auth_failed: authentication failed$/);

      const { device } = await stockDevice();
      device.send({ type: 'command', action: 'list_flows' });
      await eventually(async () => device.received.some((m) => m.type === 'error'), 5000, 'the refusal');
      const refusal = device.received.find((m) => m.type === 'error')!;
      assert.equal(refusal.error, 'invalid_frame: a command needs an id');
      assert.deepEqual([...wrongKey.undecodable, ...device.undecodable], []);
    });

    it('answers device_offline only when the device has no tunnel', async () => {
      const { deviceId, device } = await stockDevice();
      await device.stop();
      await eventually(async () => !(await deviceRecord(deviceId)).online, 5000, 'device offline');
      const refused = await post(deviceId, 'update', { version: '1.1.0' });
      assert.equal(refused.status, 409);
      assert.equal(refused.body.error.code, 'device_offline');
    });
  });

  describe(`stock EdgeFlow device across a server restart on ${backend.name}`, () => {
    it('reconnects within its retry budget and pings on two heartbeat loops afterwards, all answered', async () => {
      const state = persistentState();
      let server = await startTestServer(backend, { state });
      const org = await server.createOrg('restart');
      const registered = await registerDevice(server, org.adminKey);
      const device = new StockEdgeFlowDevice(server.url, {
        ...registered,
        heartbeatIntervalMs: 300,
        reconnectStepMs: 200,
      });
      try {
        await device.start();
        await server.close();
        server = await startTestServer(backend, { state });
        await eventually(async () => device.connects === 2, 10_000, 'the stock device reconnected');
        const reconnectedAt = device.sent.length;
        await eventually(
          async () => device.sent.slice(reconnectedAt).filter((m) => m.type === 'ping').length >= 6,
          5000,
          'pings from two loops',
        );
        const pings = device.sent.slice(reconnectedAt).filter((m) => m.type === 'ping').length;
        await eventually(
          async () => device.received.filter((m) => m.type === 'pong').length >= pings,
          5000,
          'every ping answered',
        );
        assert.equal(device.gaveUp, false);
        const record = await server.api<Device>('GET', `/api/v1/devices/${registered.deviceId}`, org.adminKey);
        assert.equal(record.body.online, true);
      } finally {
        await device.stop();
        await server.close();
      }
    });
  });
}
