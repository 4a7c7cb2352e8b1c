/**
 * The tunnel endpoint against clients that speak EdgeFlow's wire format byte for byte:
 * authentication, heartbeats, commands both ways, presence in the database, replacement,
 * and hostile input (malformed, oversized, floods) that must never disturb other devices.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import WebSocket from 'ws';
import { CloseCode } from '../../src/protocol/tunnel.ts';
import { connectRaw, eventually, openRaw, tunnelUrl } from '../helpers/raw-device.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const backends = await backendsUnderTest();
after(stopSharedServices);

type Device = { device_id: string; online: boolean; agent_version: string | null; current_version: string };

for (const backend of backends) {
  describe(`tunnel on ${backend.name}`, () => {
    let server: TestServer;
    let org: { id: string; adminKey: string };
    let other: { id: string; adminKey: string };

    before(async () => {
      server = await startTestServer(backend, {
        env: {
          EDGEFLOW_HEARTBEAT_MS: '300',
          EDGEFLOW_TUNNEL_CONNECT_TIMEOUT_MS: '500',
          EDGEFLOW_TUNNEL_MAX_FRAME_BYTES: '8192',
        },
      });
      org = await server.createOrg('a');
      other = await server.createOrg('b');
    });
    after(() => server.close());

    async function newDevice(key = org.adminKey, body: Record<string, unknown> = {}) {
      const response = await server.api<Device & { api_key: string }>('POST', '/api/v1/devices', key, {
        current_version: '1.0.0',
        ...body,
      });
      assert.equal(response.status, 201);
      return { deviceId: response.body.device_id, apiKey: response.body.api_key };
    }

    const deviceState = async (deviceId: string, key = org.adminKey) =>
      (await server.api<Device>('GET', `/api/v1/devices/${deviceId}`, key)).body;

    it('connects an EdgeFlow device with its own frames, pongs its ping, gets its health_check answer, and shows it online', async () => {
      const device = await newDevice();
      const raw = await connectRaw(server.url, { ...device, version: '2.3.1' });
      const online = await deviceState(device.deviceId);
      assert.equal(online.online, true);
      assert.equal(online.agent_version, '2.3.1');

      raw.send({ type: 'ping', timestamp: new Date().toISOString() });
      const pong = await raw.next('pong');
      assert.equal(typeof pong.timestamp, 'string');

      const check = server.services.tunnel.healthCheck({ organizationId: org.id, deviceId: device.deviceId });
      const command = await raw.next('command');
      assert.equal(command.action, 'health_check');
      assert.equal(typeof command.id, 'string');
      raw.send({
        type: 'response',
        id: command.id,
        status: 'success',
        data: { status: 'healthy', version: '1.0.0', uptime: 42 },
      });
      assert.deepEqual(await check, { status: 'healthy', version: '1.0.0', uptime: 42 });

      await raw.close();
      await eventually(async () => !(await deviceState(device.deviceId)).online, 3000, 'device offline');
    });

    it('answers a device command with an unknown action with status error, and accepts device_info', async () => {
      const device = await newDevice();
      const raw = await connectRaw(server.url, device);
      raw.send({ type: 'command', id: 'c1', action: 'make_coffee', payload: {} });
      const unknown = await raw.next('response');
      assert.equal(unknown.id, 'c1');
      assert.equal(unknown.status, 'error');
      assert.equal(unknown.error, 'unknown_action: unknown action "make_coffee"');
      assert.equal(unknown.error_code, 'unknown_action');

      raw.send({ type: 'command', id: 'c2', action: 'device_info', payload: { current_version: '1.0.1' } });
      const info = await raw.next('response');
      assert.equal(info.status, 'success');
      assert.equal((await deviceState(device.deviceId)).current_version, '1.0.1');
      await raw.close();
    });

    it('refuses a wrong key, a missing connect, and another organization’s device id, with reasons', async () => {
      const device = await newDevice();
      const wrongKey = await openRaw(server.url);
      wrongKey.send({ type: 'connect', device_id: device.deviceId, api_key: 'efd_wrong', version: '1.0.0' });
      const refusal = await wrongKey.next('error');
      // Stock EdgeFlow devices decode `error` as a string; the code rides beside it.
      assert.equal(refusal.error, 'auth_failed: authentication failed');
      assert.equal(refusal.error_code, 'auth_failed');
      assert.equal((await wrongKey.closed).code, CloseCode.authFailed);

      const silent = await openRaw(server.url);
      const silentClose = await silent.closed;
      assert.equal(silentClose.code, CloseCode.authTimeout);
      assert.match(silentClose.reason, /connect/);

      // Organization B's device id with organization A's device key (and the reverse).
      const foreign = await newDevice(other.adminKey);
      const crossed = await openRaw(server.url);
      crossed.send({ type: 'connect', device_id: foreign.deviceId, api_key: device.apiKey, version: '1.0.0' });
      assert.equal((await crossed.closed).code, CloseCode.authFailed);
      assert.equal((await deviceState(foreign.deviceId, other.adminKey)).online, false);

      const first = await openRaw(server.url);
      first.send({ type: 'ping' });
      assert.match(String((await first.next('error')).error), /first message must be connect/);
      await first.close();
    });

    it('closes the tunnel of a deleted device and refuses it afterwards', async () => {
      const device = await newDevice();
      const raw = await connectRaw(server.url, device);
      assert.equal((await server.api('DELETE', `/api/v1/devices/${device.deviceId}`, org.adminKey)).status, 204);
      assert.equal((await raw.closed).code, CloseCode.authFailed);
      const again = await openRaw(server.url);
      again.send({ type: 'connect', device_id: device.deviceId, api_key: device.apiKey, version: '1.0.0' });
      assert.equal((await again.closed).code, CloseCode.authFailed);
    });

    it('replaces an older connection of the same device with the newer one', async () => {
      const device = await newDevice();
      const older = await connectRaw(server.url, device);
      const newer = await connectRaw(server.url, device);
      const closed = await older.closed;
      assert.equal(closed.code, CloseCode.replaced);
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.equal((await deviceState(device.deviceId)).online, true, 'the replaced close must not mark it offline');
      newer.send({ type: 'ping' });
      await newer.next('pong');
      await newer.close();
    });

    it('drops a link that goes silent for two heartbeats and marks the device offline', async () => {
      const device = await newDevice();
      const raw = await connectRaw(server.url, device);
      // Stop reading: no pings answered, nothing sent, as a device whose network died.
      (raw.ws as unknown as { _socket: { pause(): void } })._socket.pause();
      await eventually(async () => !(await deviceState(device.deviceId)).online, 5000, 'silent device offline');
      raw.ws.terminate();
    });

    it('marks offline the devices whose tunnels closed, and leaves online the ones back at once (a reboot)', async () => {
      const devices = await Promise.all(Array.from({ length: 24 }, () => newDevice()));
      const links = await Promise.all(devices.map((device) => connectRaw(server.url, device)));
      const rebooting = devices.slice(0, 12);
      const leaving = devices.slice(12);
      // All close at once; half come straight back, as a rebooting fleet does.
      const back = await Promise.all(
        devices.map(async (device, index) => {
          await links[index]!.close();
          return index < rebooting.length ? connectRaw(server.url, device) : undefined;
        }),
      );
      const online = async () =>
        new Map(
          await Promise.all(
            devices.map(async (device) => [device.deviceId, (await deviceState(device.deviceId)).online] as const),
          ),
        );
      await eventually(
        async () => [...(await online())].filter(([, is]) => !is).length === leaving.length,
        5000,
        'the devices that stayed away offline',
      );
      const state = await online();
      for (const device of rebooting) assert.equal(state.get(device.deviceId), true, `${device.deviceId} came back`);
      for (const device of leaving) assert.equal(state.get(device.deviceId), false, `${device.deviceId} stayed away`);
      // And it stays so: no late offline mark overtakes a device that came back.
      await new Promise((resolve) => setTimeout(resolve, 300));
      const later = await online();
      for (const device of rebooting) assert.equal(later.get(device.deviceId), true, `${device.deviceId} still online`);
      await Promise.all(back.map((link) => link?.close()));
    });

    it('writes a burst of offline marks without the devices whose tunnel is back here by then', async () => {
      const [back, gone] = [await newDevice(), await newDevice()];
      const links = [await connectRaw(server.url, back), await connectRaw(server.url, gone)];
      // Presence's own door, as the hub uses it: one device reconnected before the burst is written.
      await Promise.all([
        server.services.presence.offline({ organizationId: org.id, deviceId: back.deviceId, back: () => true }),
        server.services.presence.offline({ organizationId: org.id, deviceId: gone.deviceId, back: () => false }),
      ]);
      assert.equal((await deviceState(back.deviceId)).online, true, 'the device back here stays online');
      assert.equal((await deviceState(gone.deviceId)).online, false, 'the device still away is offline');
      await Promise.all(links.map((link) => link.close()));
    });

    it('answers malformed frames with an error, closes on an oversized frame, and keeps serving others', async () => {
      const bystander = await connectRaw(server.url, await newDevice());
      const device = await newDevice();
      const raw = await connectRaw(server.url, device);
      for (const bad of ['not json', '[]', '{"type":5}', '{"id":"x"}', '{"type":"connect"}', '{"type":"nonsense"}']) {
        raw.ws.send(bad);
        assert.ok((await raw.next('error')).error, `an error answers ${bad}`);
      }
      raw.ws.send(Buffer.from([1, 2, 3]), { binary: true });
      assert.match(String((await raw.next('error')).error), /binary/);
      raw.ws.send('x'.repeat(9000));
      assert.equal((await raw.closed).code, CloseCode.tooBig);
      bystander.send({ type: 'ping' });
      await bystander.next('pong');
      await bystander.close();
    });

    it('survives thousands of random frames from many devices with bounded memory while others are served', async () => {
      setFlagsFromString('--expose-gc');
      const gc = runInNewContext('gc') as () => void;
      const bystander = await connectRaw(server.url, await newDevice());
      const credentials = await Promise.all(Array.from({ length: 8 }, () => newDevice()));
      // The server closes a link after too many bad frames; a fuzzer then reconnects and goes on.
      const open = (index: number) =>
        index < credentials.length ? connectRaw(server.url, credentials[index]!) : openRaw(server.url);
      const sockets = await Promise.all(Array.from({ length: 12 }, (_, index) => open(index)));
      gc();
      const heapBefore = process.memoryUsage().heapUsed;
      let seed = 42;
      const random = () => {
        seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
        return seed / 2 ** 31;
      };
      const pieces = ['{', '}', '"type"', ':', '"ping"', '"command"', '"response"', ',', '"id"', '[', ']', 'null', '9'];
      const frame = () => {
        const kind = random();
        if (kind < 0.3)
          return Array.from(
            { length: 1 + Math.floor(random() * 12) },
            () => pieces[Math.floor(random() * pieces.length)],
          ).join('');
        if (kind < 0.5)
          return JSON.stringify({ type: 'response', id: String(random()), status: 'success', data: { x: random() } });
        if (kind < 0.7)
          return JSON.stringify({ type: 'command', id: String(random()), action: 'ota_progress', payload: random() });
        if (kind < 0.8) return Buffer.from(Array.from({ length: 32 }, () => Math.floor(random() * 256)));
        return JSON.stringify({
          type: ['connect', 'ping', 'pong', 'weird', ''][Math.floor(random() * 5)],
          id: random(),
        });
      };
      let sent = 0;
      let reconnects = 0;
      for (let round = 0; round < 50; round++) {
        for (const [index, socket] of sockets.entries()) {
          if (socket.ws.readyState !== WebSocket.OPEN) {
            sockets[index] = await open(index);
            reconnects++;
            continue;
          }
          for (let i = 0; i < 10; i++) {
            socket.ws.send(frame());
            sent++;
          }
        }
        bystander.send({ type: 'ping' });
        await bystander.next('pong', 15_000);
      }
      assert.ok(sent >= 3000, `sent ${sent} hostile frames`);
      assert.ok(reconnects > 0, 'abusive links were closed by the server');
      await Promise.all(sockets.map((socket) => socket.close()));
      gc();
      const growth = process.memoryUsage().heapUsed - heapBefore;
      assert.ok(growth < 20 * 1024 * 1024, `heap grew ${Math.round(growth / 1024)} KiB`);
      assert.equal((await server.api('GET', '/healthz', undefined)).status, 200);
      bystander.send({ type: 'ping' });
      await bystander.next('pong');
      await bystander.close();
    });

    it('refuses WebSocket upgrades on paths other than /tunnel', async () => {
      const ws = new WebSocket(tunnelUrl(server.url).replace('/tunnel', '/elsewhere'));
      const outcome = await new Promise<string>((resolve) => {
        ws.on('open', () => resolve('open'));
        ws.on('error', () => resolve('refused'));
      });
      assert.equal(outcome, 'refused');
    });
  });
}

describe('graceful shutdown', () => {
  it('closes every tunnel with service-restart (1012), so agents come back soon', async () => {
    const [backend] = backends;
    const server = await startTestServer(backend!);
    const org = await server.createOrg();
    const created = await server.api<{ device_id: string; api_key: string }>('POST', '/api/v1/devices', org.adminKey, {
      current_version: '1.0.0',
    });
    const raw = await connectRaw(server.url, { deviceId: created.body.device_id, apiKey: created.body.api_key });
    const closing = server.close();
    assert.equal((await raw.closed).code, CloseCode.serviceRestart);
    await closing;
  });
});
