/**
 * Maintenance windows and download budgets end to end, on each database, with the clock of
 * windows and budgets injected (Config.now): real agents in three time zones are each sent their
 * update only inside their own window, the others wait with `window` and their next opening; a
 * 200-device rollout under max_concurrent_downloads never has more devices downloading than
 * allowed (measured at the server, from the phases the devices report) and completes; a byte
 * budget reaches the device in its update command; an attempt created inside a window while its
 * device was offline is not sent when the device returns after the window closed, but in its next.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Agent } from '../../src/agent/agent.ts';
import type { Fleet } from '../../src/simulator/simulator.ts';
import { registerDevice, removeAgentDirs, startAgent } from '../helpers/agents.ts';
import {
  type DeploymentBody,
  type DeploymentDeviceBody,
  FLEET_SERVER_ENV,
  NEW,
  setupFleet,
} from '../helpers/deployment-fleet.ts';
import { makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
import { connectRaw, eventually, type RawDevice } from '../helpers/raw-device.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const backends = await backendsUnderTest();
after(() => stopSharedServices());

type Waiting = DeploymentBody & { waiting: Record<string, number> };
type Plan = { batches: { size: number; expected?: { first_start_at: string | null; last_start_at: string | null } }[] };

for (const backend of backends) {
  describe(`maintenance windows and budgets (${backend.name})`, () => {
    let server: TestServer;
    /** The clock of windows and budgets: Monday 2026-12-07, 00:30 UTC, until a test moves it. */
    let nowMs = Date.parse('2026-12-07T00:30:00Z');
    const fleets: Fleet[] = [];
    const agents: Agent[] = [];
    const raws: RawDevice[] = [];

    before(async () => {
      server = await startTestServer(backend, { env: FLEET_SERVER_ENV, now: () => nowMs });
    });
    after(async () => {
      await Promise.all([...fleets.map((fleet) => fleet.stop()), ...agents.map((agent) => agent.stop())]);
      await Promise.all(raws.map((raw) => raw.close()));
      await server?.close();
      await removeAgentDirs();
    });

    it('checks time zones and windows: 400 invalid_timezone, admins change the settings, agents report theirs', async () => {
      const org = await server.createOrg('zones');
      const viewer = await server.api<{ key: string }>('POST', '/api/v1/api-keys', org.adminKey, { role: 'viewer' });
      const api = <T>(method: string, path: string, body?: unknown, key = org.adminKey) =>
        server.api<T & { error: { code: string } }>(method, path, key, body);
      const bad = await api('POST', '/api/v1/devices', { current_version: '1.0.0', timezone: 'Mars/Olympus_Mons' });
      assert.equal(bad.status, 400);
      assert.equal(bad.body.error.code, 'invalid_timezone');
      const device = await registerDevice(server, org.adminKey, { timezone: 'Europe/Berlin' });
      assert.equal(
        (await api('PATCH', `/api/v1/devices/${device.deviceId}`, { timezone: 'Nowhere/Land' })).status,
        400,
      );
      const patched = await api<{ timezone: string }>('PATCH', `/api/v1/devices/${device.deviceId}`, {
        timezone: 'Asia/Tokyo',
      });
      assert.equal(patched.body.timezone, 'Asia/Tokyo');

      const defaults = await api<{ timezone: string; maintenance_windows: unknown[] }>(
        'GET',
        '/api/v1/settings/maintenance-windows',
      );
      assert.deepEqual([defaults.body.timezone, defaults.body.maintenance_windows], ['UTC', []]);
      const windows = { maintenance_windows: [{ days: ['sat', 'sun'], start: '22:00', end: '02:00' }] };
      const refused = await api('PUT', '/api/v1/settings/maintenance-windows', windows, viewer.body.key);
      assert.equal(refused.status, 403);
      assert.equal(
        (await api('PUT', '/api/v1/settings/maintenance-windows', { timezone: 'Atlantis/Capital' })).body.error.code,
        'invalid_timezone',
      );
      const badWindow = { maintenance_windows: [{ days: ['mon'], start: '25:00', end: '02:00' }] };
      assert.equal((await api('PUT', '/api/v1/settings/maintenance-windows', badWindow)).status, 400);
      const saved = await api<{ maintenance_windows: unknown[]; timezone: string }>(
        'PUT',
        '/api/v1/settings/maintenance-windows',
        { ...windows, timezone: 'America/Chicago' },
      );
      assert.equal(saved.status, 200, JSON.stringify(saved.body));
      assert.deepEqual(saved.body.maintenance_windows, windows.maintenance_windows);
      assert.equal(saved.body.timezone, 'America/Chicago');
      const budgets = await api<{ max_concurrent_downloads: number | null; max_bytes_per_second: number | null }>(
        'PUT',
        '/api/v1/settings/budgets',
        { max_concurrent_downloads: 50, max_bytes_per_second: 100_000_000 },
      );
      assert.deepEqual([budgets.body.max_concurrent_downloads, budgets.body.max_bytes_per_second], [50, 100_000_000]);
      const cleared = await api<{ max_concurrent_downloads: number | null }>('PUT', '/api/v1/settings/budgets', {
        max_concurrent_downloads: null,
      });
      assert.equal(cleared.body.max_concurrent_downloads, null);
      assert.equal((await api('PUT', '/api/v1/settings/budgets', { max_bytes_per_second: 0 })).status, 400);
      // Another organization's settings are its own.
      const other = await server.createOrg('other');
      const theirs = await api<{ timezone: string }>(
        'GET',
        '/api/v1/settings/maintenance-windows',
        undefined,
        other.adminKey,
      );
      assert.equal(theirs.body.timezone, 'UTC');

      // A device registered without a zone takes the one its agent reports; an operator's stays.
      const unzoned = await registerDevice(server, org.adminKey);
      agents.push(await startAgent(server, org, unzoned, { timezone: 'Pacific/Auckland' }));
      agents.push(await startAgent(server, org, device, { timezone: 'Pacific/Auckland' }));
      await eventually(
        async () =>
          (await api<{ timezone: string | null }>('GET', `/api/v1/devices/${unzoned.deviceId}`)).body.timezone ===
          'Pacific/Auckland',
        5000,
        'the agent reported its zone',
      );
      assert.equal(
        (await api<{ timezone: string }>('GET', `/api/v1/devices/${device.deviceId}`)).body.timezone,
        'Asia/Tokyo',
      );
    });

    it('sends each device its update only inside its own window, in three time zones', async () => {
      const org = await server.createOrg('three-zones');
      const api = <T>(method: string, path: string, body?: unknown) => server.api<T>(method, path, org.adminKey, body);
      for (const version of ['1.0.0', NEW]) {
        const firmware = await makeFirmwareFile(16 * 1024);
        await postFirmware(server.url, org.adminKey, { version, sha256: firmware.sha256 }, firmware);
      }
      // No jitter: each device may start at its window's opening.
      await api('PUT', '/api/v1/settings/maintenance-windows', { window_jitter_minutes: 0 });
      const zones = ['Europe/Berlin', 'Europe/Berlin', 'America/New_York', 'America/New_York', 'Asia/Tokyo'];
      const devices = await Promise.all(zones.map((timezone) => registerDevice(server, org.adminKey, { timezone })));
      // One more in Tokyo that never connects: it waits for its window without timing out.
      const offline = await registerDevice(server, org.adminKey, { timezone: 'Asia/Tokyo' });
      agents.push(...(await Promise.all(devices.map((device) => startAgent(server, org, device)))));
      const ids = [...devices.map((device) => device.deviceId), offline.deviceId];
      const request = {
        version: NEW,
        target: { device_ids: ids },
        maintenance_windows: [
          { days: ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'], start: '02:00', end: '04:00' },
        ],
        device_timeout_minutes: 0.02,
      };

      // The dry run: when each batch is expected to run (Berlin at 01:00Z, New York at 07:00Z, Tokyo at 17:00Z).
      const plan = await api<Plan>('POST', '/api/v1/deployments', {
        ...request,
        strategy: 'rolling',
        batch_size: 2,
        dry_run: true,
      });
      assert.deepEqual(
        plan.body.batches.map((batch) => [batch.expected?.first_start_at, batch.expected?.last_start_at]),
        [
          ['2026-12-07T01:00:00.000Z', '2026-12-07T01:00:00.000Z'],
          ['2026-12-07T07:00:00.000Z', '2026-12-07T07:00:00.000Z'],
          ['2026-12-07T17:00:00.000Z', '2026-12-07T17:00:00.000Z'],
        ],
      );

      const created = await api<DeploymentBody>('POST', '/api/v1/deployments', { ...request, strategy: 'all_at_once' });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const id = created.body.id;
      const members = async () =>
        (await api<{ devices: DeploymentDeviceBody[] }>('GET', `/api/v1/deployments/${id}/devices?limit=100`)).body
          .devices;
      const deployment = async () => (await api<Waiting>('GET', `/api/v1/deployments/${id}`)).body;
      const OPENS: Record<string, string> = {
        'Europe/Berlin': '2026-12-07T01:00:00.000Z',
        'America/New_York': '2026-12-07T07:00:00.000Z',
        'Asia/Tokyo': '2026-12-07T17:00:00.000Z',
      };
      const zoneOf = new Map(ids.map((deviceId, index) => [deviceId, zones[index] ?? 'Asia/Tokyo']));
      const opening = (device: string) => OPENS[zoneOf.get(device)!];

      // 00:30Z: every window is closed; each device waits with its own next opening.
      await eventually(async () => (await deployment()).waiting.window === 6, 10_000, 'all six wait for their window');
      for (const member of await members()) {
        assert.deepEqual(
          [member.state, member.reason, member.detail, member.update_id],
          ['pending', 'window', opening(member.device_id), null],
          member.device_id,
        );
        assert.match(member.explanation, /^waiting for its window \(opens /);
      }
      // Waiting is not timing out: the device timeout (1.2 s) does not run against a device waiting for its window.
      await sleep(1500);
      assert.equal((await deployment()).waiting.window, 6);

      // 01:30Z: 02:30 in Berlin. Only the Berlin devices are sent, and complete.
      nowMs = Date.parse('2026-12-07T01:30:00Z');
      await eventually(async () => (await deployment()).counts.completed === 2, 20_000, 'Berlin updated');
      const afterBerlin = await members();
      for (const member of afterBerlin) {
        const berlin = opening(member.device_id) === '2026-12-07T01:00:00.000Z';
        assert.equal(member.state, berlin ? 'completed' : 'pending', member.device_id);
        if (!berlin) assert.equal(member.reason, 'window');
      }
      assert.equal((await deployment()).waiting.window, 4);

      // 07:30Z: New York's night.
      nowMs = Date.parse('2026-12-07T07:30:00Z');
      await eventually(async () => (await deployment()).counts.completed === 4, 20_000, 'New York updated');
      assert.equal((await deployment()).waiting.window, 2);

      // 17:30Z: Tokyo's. The device that never came online is now sent its attempt and times out.
      nowMs = Date.parse('2026-12-07T17:30:00Z');
      await eventually(async () => (await deployment()).status === 'completed', 20_000, 'the deployment completed');
      const done = await deployment();
      assert.equal(done.counts.completed, 5);
      assert.equal(done.counts.skipped, 1, 'the offline one, past the device timeout once it was due');
      assert.equal(done.waiting.window, 0);
    });

    it('holds an attempt whose window closed while its device was offline until the next window', async () => {
      const org = await server.createOrg('missed-window');
      const api = <T>(method: string, path: string, body?: unknown) => server.api<T>(method, path, org.adminKey, body);
      for (const version of ['1.0.0', NEW]) {
        const firmware = await makeFirmwareFile(16 * 1024);
        await postFirmware(server.url, org.adminKey, { version, sha256: firmware.sha256 }, firmware);
      }
      await api('PUT', '/api/v1/settings/maintenance-windows', { window_jitter_minutes: 0 });
      const device = await registerDevice(server, org.adminKey, { timezone: 'UTC' });
      // Tuesday 02:30 UTC, inside the device's window: its attempt is created, but it is offline.
      nowMs = Date.parse('2026-12-08T02:30:00Z');
      const created = await api<DeploymentBody>('POST', '/api/v1/deployments', {
        version: NEW,
        target: { device_ids: [device.deviceId] },
        strategy: 'all_at_once',
        maintenance_windows: [
          { days: ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'], start: '02:00', end: '04:00' },
        ],
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const member = async () =>
        (await api<{ devices: DeploymentDeviceBody[] }>('GET', `/api/v1/deployments/${created.body.id}/devices`)).body
          .devices[0]!;
      await eventually(async () => (await member()).state === 'queued', 10_000, 'its attempt was created');

      // 05:00: the window closed. The device comes back online: it is not sent the attempt, which
      // waits for its next window, and says when that opens.
      nowMs = Date.parse('2026-12-08T05:00:00Z');
      agents.push(await startAgent(server, org, device));
      await eventually(async () => (await member()).reason === 'window', 10_000, 'the attempt waits for its window');
      await eventually(
        async () => (await api<{ online: boolean }>('GET', `/api/v1/devices/${device.deviceId}`)).body.online,
        10_000,
        'the device is online',
      );
      await sleep(1500); // several dispatch passes with the device online
      const waiting = await member();
      assert.deepEqual(
        [waiting.state, waiting.reason, waiting.detail, waiting.explanation],
        ['queued', 'window', '2026-12-09T02:00:00.000Z', 'waiting for its window (opens 2026-12-09T02:00:00.000Z)'],
      );
      const record = await api<{ ota_status: string; current_version: string }>(
        'GET',
        `/api/v1/devices/${device.deviceId}/ota`,
      );
      assert.deepEqual([record.body.current_version, record.body.ota_status], ['1.0.0', 'updating']);
      assert.equal((await api<Waiting>('GET', `/api/v1/deployments/${created.body.id}`)).body.waiting.window, 1);

      // Wednesday 02:30: its next window. The same attempt goes out and completes.
      nowMs = Date.parse('2026-12-09T02:30:00Z');
      await eventually(async () => (await member()).state === 'completed', 20_000, 'updated in its next window');
      const done = await member();
      assert.equal(done.update_id, waiting.update_id, 'the attempt held is the one sent');
      assert.equal(done.reason, null);
    });

    it('keeps a 200-device rollout within max_concurrent_downloads, shows the rest waiting for bandwidth, and completes', async () => {
      nowMs = Date.parse('2026-12-07T12:00:00Z');
      const { org, api, deploy, until } = await setupFleet(server, fleets, 'budget', 200);
      const LIMIT = 40;
      // Measured at the server: from the phases the devices report, how many are downloading at once.
      const downloading = new Set<string>();
      let most = 0;
      const unsubscribe = server.services.feed.on('ota', (event) => {
        if (event.organization_id !== org.id) return;
        if (event.status === 'in_progress' && event.phase === 'downloading') downloading.add(event.update_id);
        else downloading.delete(event.update_id);
        most = Math.max(most, downloading.size);
      });
      let sawBandwidth = 0;
      try {
        const created = await deploy({
          target: { all: true },
          strategy: 'all_at_once',
          max_concurrent_downloads: LIMIT,
        });
        await eventually(
          async () => {
            const body = (await api<Waiting>('GET', `/api/v1/deployments/${created.id}`)).body;
            sawBandwidth = Math.max(sawBandwidth, body.waiting.bandwidth ?? 0);
            return sawBandwidth > 0 || body.status === 'completed';
          },
          10_000,
          'devices waiting for bandwidth',
        );
        const done = await until(created.id, 'completed', 60_000).catch(async (error: Error) => {
          const failed = await server.db.query(
            `SELECT error_code, error_message FROM ota_updates WHERE deployment_id = $1 AND status = 'failed' LIMIT 3`,
            [created.id],
          );
          throw new Error(`${error.message}\n${JSON.stringify(failed)}`);
        });
        assert.equal(done.counts.completed, 200);
        assert.equal((done as Waiting).waiting.bandwidth, 0);
      } finally {
        unsubscribe();
      }
      assert.ok(sawBandwidth > 0, 'devices beyond the budget were shown waiting for bandwidth');
      assert.ok(most > 0 && most <= LIMIT, `at most ${LIMIT} downloading at once, saw ${most}`);
    });

    it('gives a device its share of a byte budget in its update command', async () => {
      const org = await server.createOrg('bytes');
      const firmware = await makeFirmwareFile(16 * 1024);
      await postFirmware(server.url, org.adminKey, { version: NEW, sha256: firmware.sha256 }, firmware);
      const device = await registerDevice(server, org.adminKey);
      const raw = await connectRaw(server.url, { deviceId: device.deviceId, apiKey: device.apiKey, version: '1.0.0' });
      raws.push(raw);
      raw.send({ type: 'command', id: 'info', action: 'device_info', payload: { current_version: '1.0.0' } });
      const created = await server.api<DeploymentBody>('POST', '/api/v1/deployments', org.adminKey, {
        version: NEW,
        target: { device_ids: [device.deviceId] },
        strategy: 'all_at_once',
        max_bytes_per_second: 2_000_000,
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      let command: Record<string, unknown>;
      do command = await raw.next('command', 10_000);
      while (command.action !== 'ota_update');
      const payload = command.payload as { max_bytes_per_second?: number };
      // One device to send: the whole budget is its share.
      assert.equal(payload.max_bytes_per_second, 2_000_000);
    });
  });
}
