/**
 * The simulator against a real server: hundreds of real agents (in memory) over real tunnels,
 * registered through the REST API, with injected faults that must end the way a real device's
 * would — and a fleet split over child processes that still adds up.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { planFaults } from '../../src/simulator/faults.ts';
import { runSimulation } from '../../src/simulator/processes.ts';
import { fetchSigningKey, RegistrationInterrupted, registerDevices } from '../../src/simulator/register.ts';
import { type Fleet, runFleet } from '../../src/simulator/simulator.ts';
import type { OtaRecord } from '../helpers/agents.ts';
import { type FirmwareFile, makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
import { eventually } from '../helpers/raw-device.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const backends = await backendsUnderTest();
const scratch = await mkdtemp(path.join(os.tmpdir(), 'edgeflow-sim-test-'));
after(async () => {
  await stopSharedServices();
  await rm(scratch, { recursive: true, force: true });
});

/** Shorter intervals than a real device's, so a test waits on the system rather than on timers. */
const quickAgents = {
  downloadRetryBaseMs: 50,
  progressIntervalMs: 200,
  resultRetryBaseMs: 100,
  confirmTimeoutMs: 10_000,
};

describe('fault plan', () => {
  it('gives each fault its exact share of the fleet, disjointly, the same for the same seed', () => {
    const plan = planFaults(60, { corrupt: 20, bootFailure: 20, downloadDrop: 20, offline: 5 }, 42);
    const count = (fault: string | null) => plan.filter((f) => f === fault).length;
    assert.equal(count('corrupt'), 12);
    assert.equal(count('bootFailure'), 12);
    assert.equal(count('downloadDrop'), 12);
    assert.equal(count('offline'), 3);
    assert.equal(count(null), 21);
    assert.deepEqual(planFaults(60, { corrupt: 20, bootFailure: 20, downloadDrop: 20, offline: 5 }, 42), plan);
    assert.notDeepEqual(planFaults(60, { corrupt: 20, bootFailure: 20, downloadDrop: 20, offline: 5 }, 43), plan);
    assert.throws(() => planFaults(10, { corrupt: 60, bootFailure: 50 }, 1), /add up to 110/);
  });
});

for (const backend of backends) {
  describe(`simulator on ${backend.name}`, () => {
    let server: TestServer;
    let org: { id: string; adminKey: string };
    let firmware: FirmwareFile;

    before(async () => {
      server = await startTestServer(backend, { env: { EDGEFLOW_DISPATCH_INTERVAL_MS: '200' } });
      org = await server.createOrg('sim');
      firmware = await makeFirmwareFile(512 * 1024);
      const upload = await postFirmware(
        server.url,
        org.adminKey,
        { version: '1.1.0', sha256: firmware.sha256 },
        firmware,
      );
      assert.equal(upload.status, 201, JSON.stringify(upload.body));
    });
    after(() => server.close());

    async function countOnline(prefix: string): Promise<number> {
      let online = 0;
      let after: string | null = null;
      do {
        const query: string = `online=true&limit=1000${after ? `&after=${encodeURIComponent(after)}` : ''}`;
        const page = await server.api<{ devices: { device_id: string }[]; next_cursor: string | null }>(
          'GET',
          `/api/v1/devices?${query}`,
          org.adminKey,
        );
        online += page.body.devices.filter((d) => d.device_id.startsWith(prefix)).length;
        after = page.body.next_cursor;
      } while (after);
      return online;
    }

    it('keeps the key of every device it registered when stopped midway (Ctrl-C), and goes on from there', async () => {
      const credentialsFile = path.join(scratch, `${backend.name}-interrupted.json`);
      const stop = new AbortController();
      const options = { server: server.url, key: org.adminKey, count: 60, prefix: 'ctrl-c-', credentialsFile };
      await assert.rejects(
        registerDevices({ ...options, signal: stop.signal, onProgress: (done) => done >= 10 && stop.abort() }),
        (error: Error) =>
          error instanceof RegistrationInterrupted &&
          /^interrupted: \d+ of 60 devices registered; their keys are in .*; run the same command again to go on$/.test(
            error.message,
          ),
      );
      const saved = JSON.parse(await readFile(credentialsFile, 'utf8')).devices as { device_id: string }[];
      const created = await server.api<{ devices: { device_id: string }[] }>(
        'GET',
        '/api/v1/devices?q=ctrl-c-&limit=1000',
        org.adminKey,
      );
      assert.ok(saved.length >= 10 && saved.length < 60, `${saved.length} saved`);
      assert.deepEqual(
        saved.map((device) => device.device_id).sort(),
        created.body.devices.map((device) => device.device_id).sort(),
        'every device on the server has its key in the file',
      );
      const all = await registerDevices(options);
      assert.equal(all.length, 60, 'the second run registers the rest, refusing none');
    });

    it('brings 200 simulated devices online, and takes them offline on stop', async () => {
      const credentialsFile = path.join(scratch, `${backend.name}-fleet.json`);
      const devices = await registerDevices({
        server: server.url,
        key: org.adminKey,
        count: 200,
        prefix: 'online-',
        model: 'sim-gw',
        tags: ['sim'],
        credentialsFile,
      });
      assert.equal(devices.length, 200);
      const reused = await registerDevices({
        server: server.url,
        key: org.adminKey,
        count: 200,
        prefix: 'online-',
        credentialsFile,
      });
      assert.deepEqual(reused, devices, 'a second run reuses the devices and keys of the credentials file');
      assert.equal(JSON.parse(await readFile(credentialsFile, 'utf8')).devices.length, 200);

      const fleet = runFleet({
        server: server.url,
        devices,
        allowInsecure: true,
        publicKeyPem: await fetchSigningKey(server.url, org.adminKey),
        waveSize: 50,
      });
      try {
        assert.ok(await fleet.waitUntilAllConnected(30_000), JSON.stringify(fleet.counters()));
        await eventually(async () => (await countOnline('online-')) === 200, 10_000, '200 devices online');
        assert.equal(fleet.counters().connected, 200);
      } finally {
        await fleet.stop();
      }
      assert.equal(fleet.counters().connected, 0);
      await eventually(async () => (await countOnline('online-')) === 0, 10_000, 'every device offline');
    });

    it('ends each injected fault the way a real device would: corrupt → checksum_mismatch, boot failure → reverted, dropped download → resumed', async () => {
      const devices = await registerDevices({ server: server.url, key: org.adminKey, count: 60, prefix: 'faulty-' });
      const fleet: Fleet = runFleet({
        server: server.url,
        devices,
        allowInsecure: true,
        publicKeyPem: await fetchSigningKey(server.url, org.adminKey),
        organizationId: org.id,
        seed: 7,
        faults: { corrupt: 20, bootFailure: 20, downloadDrop: 20, installFailure: 10, slowLink: 10 },
        reconnectBaseMs: 50,
        agentOptions: quickAgents,
      });
      try {
        assert.ok(await fleet.waitUntilAllConnected(30_000), JSON.stringify(fleet.counters()));
        for (const device of fleet.devices) {
          const accepted = await server.api('POST', `/api/v1/devices/${device.deviceId}/ota/update`, org.adminKey, {
            version: '1.1.0',
          });
          assert.equal(accepted.status, 202, `${device.deviceId}: ${JSON.stringify(accepted.body)}`);
        }
        const records = new Map<string, OtaRecord>();
        await eventually(
          async () => {
            await Promise.all(
              fleet.devices.map(async (device) => {
                const record = (
                  await server.api<OtaRecord>('GET', `/api/v1/devices/${device.deviceId}/ota`, org.adminKey)
                ).body;
                records.set(device.deviceId, record);
              }),
            );
            return [...records.values()].every((r) => r.ota_status === 'completed' || r.ota_status === 'failed');
          },
          40_000,
          'every OTA settled',
        );

        const expectations: Record<string, number> = {};
        for (const device of fleet.devices) {
          const record = records.get(device.deviceId)!;
          const context = `${device.deviceId} (${device.fault ?? 'healthy'}): ${JSON.stringify(record)}`;
          expectations[device.fault ?? 'none'] = (expectations[device.fault ?? 'none'] ?? 0) + 1;
          switch (device.fault) {
            case 'corrupt':
              assert.equal(record.ota_status, 'failed', context);
              assert.equal(record.error?.code, 'checksum_mismatch', context);
              assert.equal(record.current_version, '1.0.0', context);
              break;
            case 'bootFailure':
              assert.equal(record.ota_status, 'failed', context);
              assert.ok(['boot_failed', 'health_check_failed'].includes(record.error?.code ?? ''), context);
              assert.equal(record.current_version, '1.0.0', context);
              assert.equal(device.agent!.currentVersion, '1.0.0', context);
              break;
            case 'installFailure':
              assert.equal(record.ota_status, 'failed', context);
              assert.equal(record.error?.code, 'install_failed', context);
              assert.equal(record.current_version, '1.0.0', context);
              break;
            case 'downloadDrop':
              assert.equal(record.ota_status, 'completed', context);
              assert.equal(record.current_version, '1.1.0', context);
              assert.equal(device.bytesReceived, firmware.size, `${context}: resumed with Range, not started over`);
              break;
            default:
              assert.equal(record.ota_status, 'completed', context);
              assert.equal(record.current_version, '1.1.0', context);
              assert.equal(device.agent!.currentVersion, '1.1.0', context);
          }
        }
        assert.deepEqual(expectations, {
          corrupt: 12,
          bootFailure: 12,
          installFailure: 6,
          downloadDrop: 12,
          slowLink: 6,
          none: 12,
        });
        const counters = fleet.counters();
        assert.equal(counters.ota.completed, 30);
        assert.equal(counters.ota.failed, 30);
        assert.equal(counters.failures.checksum_mismatch, 12);
        assert.equal(counters.failures.install_failed, 6);
      } finally {
        await fleet.stop();
      }
    });

    it('spreads a fleet larger than one process over child processes and adds up their counters', async () => {
      const devices = await registerDevices({ server: server.url, key: org.adminKey, count: 120, prefix: 'split-' });
      const simulation = runSimulation({
        server: server.url,
        devices,
        allowInsecure: true,
        allowUnsigned: true,
        perProcess: 50,
        faults: { offline: 10 },
        seed: 3,
      });
      try {
        assert.equal(simulation.pids.length, 3);
        await eventually(async () => simulation.counters().connected === 108, 30_000, '108 devices connected');
        const counters = simulation.counters();
        assert.equal(counters.devices, 120);
        assert.equal(counters.heldOffline, 12);
        assert.equal(await countOnline('split-'), 108);
      } finally {
        await simulation.stop();
      }
      await eventually(async () => (await countOnline('split-')) === 0, 10_000, 'every device offline');
    });
  });
}
