/**
 * The failure modes a fleet deployment's gates must see, end to end: simulated devices (real
 * agents, in two child processes) against a real server, updated one by one through the REST
 * API. The faults strike only updates to the fault version, so the same devices first take
 * another version, and afterwards roll back, without a hitch. Only the default backend: what
 * is tested here is the device's side, which does not change with the database or the store.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TERMINAL_STATUSES } from '../../src/server/model/update-status.ts';
import type { Fault } from '../../src/simulator/faults.ts';
import { runSimulation } from '../../src/simulator/processes.ts';
import { fetchSigningKey, registerDevices } from '../../src/simulator/register.ts';
import type { DeviceSpec, Simulation } from '../../src/simulator/simulator.ts';
import { type FirmwareFile, makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
import { eventually } from '../helpers/raw-device.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const [backend] = await backendsUnderTest();
after(() => stopSharedServices());

const FAULT_VERSION = '1.2.0';
/** Two devices per new fault, and two without any. */
const faultOf: (Fault | null)[] = [
  'downloadError',
  'downloadError',
  'healthCheckFailure',
  'healthCheckFailure',
  'bakeOffline',
  'bakeOffline',
  'bakeRevert',
  'bakeRevert',
  null,
  null,
];

interface DeviceRecord {
  device_id: string;
  current_version: string;
  online: boolean;
}

/** An update as GET /api/v1/devices/{id}/ota/history answers it (the fields read here). */
interface UpdateRow {
  id: string;
  target_version: string;
  status: string;
  phase: string | null;
  progress: number;
  error_code: string | null;
}
const TERMINAL = new Set<string>(TERMINAL_STATUSES);

describe(`simulator failure modes for the fleet gates (${backend!.name})`, () => {
  let server: TestServer;
  let key: string;
  let devices: DeviceSpec[];
  let simulation: Simulation;

  const byFault = (fault: Fault | null) => devices.filter((device) => device.fault === fault);
  const device = async (deviceId: string) =>
    (await server.api<DeviceRecord>('GET', `/api/v1/devices/${deviceId}`, key)).body;

  /** One update as the device's history shows it. */
  const historyEntry = async (deviceId: string, updateId: string) =>
    (
      await server.api<{ updates: UpdateRow[] }>('GET', `/api/v1/devices/${deviceId}/ota/history?limit=20`, key)
    ).body.updates.find((update) => update.id === updateId);

  /**
   * Asks for each update (or rollback), waits until every one has ended, returns them as they
   * ended. Each is read by its own id: a bake fault's fall-back is recorded as a newer update of
   * its own a moment later, so the device's latest update is not the one asked for for long.
   */
  async function updateEach(
    targets: readonly DeviceSpec[],
    request: { path: 'update' | 'rollback'; body?: unknown },
  ): Promise<Map<string, UpdateRow>> {
    const updateIds = new Map<string, string>();
    for (const { deviceId } of targets) {
      const accepted = await server.api<{ update_id: string }>(
        'POST',
        `/api/v1/devices/${deviceId}/ota/${request.path}`,
        key,
        request.body,
      );
      assert.equal(accepted.status, 202, `${deviceId}: ${JSON.stringify(accepted.body)}`);
      updateIds.set(deviceId, accepted.body.update_id);
    }
    const ended = new Map<string, UpdateRow>();
    /** The updates not ended yet, as last read: what moves (status, phase, progress) and what a hang shows. */
    const pending = new Map<string, UpdateRow | undefined>();
    await eventually(
      async () => {
        for (const { deviceId } of targets) {
          if (ended.has(deviceId)) continue;
          const update = await historyEntry(deviceId, updateIds.get(deviceId)!);
          if (update && TERMINAL.has(update.status)) {
            ended.set(deviceId, update);
            pending.delete(deviceId);
          } else {
            pending.set(deviceId, update);
          }
        }
        return ended.size === targets.length;
      },
      15_000,
      `every ${request.path} ended`,
      () =>
        JSON.stringify([
          ended.size,
          [...pending.values()].map((update) => [update?.status, update?.phase, update?.progress]),
        ]),
    ).catch((error: Error) => {
      const open = JSON.stringify(Object.fromEntries(pending));
      throw new Error(`${error.message}; still open: ${open}; simulation: ${JSON.stringify(simulation.counters())}`);
    });
    return ended;
  }

  before(async () => {
    server = await startTestServer(backend!, { env: { EDGEFLOW_DISPATCH_INTERVAL_MS: '200' } });
    const org = await server.createOrg('sim-faults');
    key = org.adminKey;
    for (const version of ['1.0.0', '1.1.0', FAULT_VERSION]) {
      const firmware: FirmwareFile = await makeFirmwareFile(128 * 1024);
      const upload = await postFirmware(server.url, key, { version, sha256: firmware.sha256 }, firmware);
      assert.equal(upload.status, 201, JSON.stringify(upload.body));
    }
    const credentials = await registerDevices({ server: server.url, key, count: faultOf.length, prefix: 'gate-' });
    devices = credentials.map((credential, index) => ({ ...credential, fault: faultOf[index]! }));
    simulation = runSimulation({
      server: server.url,
      devices,
      allowInsecure: true,
      publicKeyPem: await fetchSigningKey(server.url, key),
      organizationId: org.id,
      faultVersion: FAULT_VERSION,
      faultTuning: { bakeCrashAfterMs: 300 },
      reconnectBaseMs: 50,
      // Two child processes: the fault version and tuning must reach them.
      perProcess: 5,
      agentOptions: { downloadRetries: 2, downloadRetryBaseMs: 20, resultRetryBaseMs: 100, progressIntervalMs: 200 },
    });
    await eventually(async () => simulation.counters().connected === devices.length, 15_000, 'every device online');
  });
  after(async () => {
    await simulation?.stop();
    await server?.close();
  });

  it('lets every device take an update to another version than the fault version', async () => {
    const updates = await updateEach(devices, { path: 'update', body: { version: '1.1.0' } });
    for (const [deviceId, update] of updates) {
      assert.equal(update.status, 'completed', `${deviceId}: ${JSON.stringify(update)}`);
      assert.equal((await device(deviceId)).current_version, '1.1.0', deviceId);
    }
    assert.equal(simulation.counters().crashed, 0);
  });

  it('fails, or crashes in the bake of, the update to the fault version the way each fault says', async () => {
    const updates = await updateEach(devices, { path: 'update', body: { version: FAULT_VERSION } });
    /** How the update ended, and the version the device runs now (for devices no bake fault changes later). */
    const outcome = async (deviceId: string) => {
      const update = updates.get(deviceId)!;
      return { status: update.status, code: update.error_code, version: (await device(deviceId)).current_version };
    };

    for (const { deviceId } of byFault('downloadError')) {
      assert.deepEqual(
        await outcome(deviceId),
        { status: 'failed', code: 'download_failed', version: '1.1.0' },
        deviceId,
      );
    }
    for (const { deviceId } of byFault('healthCheckFailure')) {
      assert.deepEqual(
        await outcome(deviceId),
        { status: 'failed', code: 'health_check_failed', version: '1.1.0' },
        deviceId,
      );
    }
    // The bake faults first succeed: committed and reported completed, as the gate will first see them.
    // (Their devices run the old version again soon after: they crash 300 ms after completing.)
    for (const { deviceId } of [...byFault('bakeOffline'), ...byFault('bakeRevert')]) {
      const { status, error_code: code, target_version: version } = updates.get(deviceId)!;
      assert.deepEqual(
        { status, code, version },
        { status: 'completed', code: null, version: FAULT_VERSION },
        deviceId,
      );
    }
    for (const { deviceId } of byFault(null)) {
      assert.deepEqual(await outcome(deviceId), { status: 'completed', code: null, version: FAULT_VERSION }, deviceId);
    }

    await eventually(async () => simulation.counters().crashed === 4, 10_000, 'the four bake faults struck');
    const states = async (fault: Fault) => Promise.all(byFault(fault).map(({ deviceId }) => device(deviceId)));
    await eventually(
      async () => (await states('bakeOffline')).every((state) => !state.online),
      10_000,
      'the bakeOffline devices offline',
    );
    await eventually(
      async () => (await states('bakeRevert')).every((state) => state.online && state.current_version === '1.1.0'),
      10_000,
      'the bakeRevert devices back online, reporting their old version',
    );
    for (const { deviceId } of byFault('bakeRevert')) {
      // The server's health check before an update is how it hears `unhealthy`.
      const refused = await server.api<{ error: { code: string } }>(
        'POST',
        `/api/v1/devices/${deviceId}/ota/update`,
        key,
        { version: FAULT_VERSION },
      );
      assert.equal(refused.status, 409, JSON.stringify(refused.body));
      assert.equal(refused.body.error.code, 'device_unhealthy');
    }
    for (const { deviceId } of byFault(null)) {
      const state = await device(deviceId);
      assert.deepEqual([state.online, state.current_version], [true, FAULT_VERSION], deviceId);
    }
  });

  it('rolls back the devices the faults left online and healthy: the rollback is not struck', async () => {
    const rolledBack = [...byFault('downloadError'), ...byFault('healthCheckFailure'), ...byFault(null)];
    const updates = await updateEach(rolledBack, { path: 'rollback' });
    for (const { deviceId, fault } of rolledBack) {
      const update = updates.get(deviceId)!;
      // The failed devices never left 1.1.0, so their last known good version is the factory one.
      const expected = fault === null ? '1.1.0' : '1.0.0';
      assert.equal(update.status, 'completed', `${deviceId}: ${JSON.stringify(update)}`);
      assert.equal(update.target_version, expected, deviceId);
      assert.equal((await device(deviceId)).current_version, expected, deviceId);
    }
    assert.equal(simulation.counters().crashed, 4, 'no rollback crashed');
  });
});
