/**
 * Issue 18, item 1, in the simulator: `edgeflow-ota simulate --boot-failure 100 --fault-version
 * 1.1.0` (the CLI as a child process, its devices the real agent in memory) against a real
 * server. Every update to 1.1.0 fails to boot and falls back (`boot_failed`); the same devices,
 * whose agents never restart, then take 1.2.0 normally and report it on their next connect.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { OtaRecord } from '../helpers/agents.ts';
import { CLI } from '../helpers/cli.ts';
import { makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
import { eventually } from '../helpers/raw-device.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const [backend] = await backendsUnderTest();
const devices = ['fb-1', 'fb-2'];

describe(`simulated devices that fell back update again (${backend!.name})`, () => {
  let server: TestServer;
  let key: string;
  let dir: string;
  let simulate: ChildProcess | undefined;
  let output = '';

  before(async () => {
    server = await startTestServer(backend!, { env: { EDGEFLOW_DISPATCH_INTERVAL_MS: '200' } });
    key = (await server.createOrg('sim-fallback')).adminKey;
    dir = await mkdtemp(join(tmpdir(), 'edgeflow-sim-fallback-'));
    for (const version of ['1.1.0', '1.2.0']) {
      const firmware = await makeFirmwareFile(64 * 1024);
      const upload = await postFirmware(server.url, key, { version, sha256: firmware.sha256 }, firmware);
      assert.equal(upload.status, 201, JSON.stringify(upload.body));
    }
    simulate = spawn(
      process.execPath,
      [
        CLI,
        'simulate',
        ...['--server', server.url, '--key', key, '--devices', String(devices.length), '--prefix', 'fb-'],
        ...['--boot-failure', '100', '--fault-version', '1.1.0', '--allow-insecure'],
        ...['--credentials', join(dir, 'credentials.json')],
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir },
    );
    simulate.stdout!.setEncoding('utf8').on('data', (text: string) => (output = (output + text).slice(-4000)));
    simulate.stderr!.setEncoding('utf8').on('data', (text: string) => (output = (output + text).slice(-4000)));
    await eventually(
      async () => {
        const listed = await server.api<{ devices: { online: boolean }[] }>('GET', '/api/v1/devices', key);
        return listed.body.devices?.filter((device) => device.online).length === devices.length;
      },
      30_000,
      `every simulated device online\n${output}`,
    );
  });
  after(async () => {
    simulate?.kill('SIGTERM');
    await server?.close();
    await rm(dir, { recursive: true, force: true });
    await stopSharedServices();
  });

  async function updateAll(version: string): Promise<OtaRecord[]> {
    const ids = new Map<string, string>();
    for (const deviceId of devices) {
      const accepted = await server.api<{ update_id: string }>('POST', `/api/v1/devices/${deviceId}/ota/update`, key, {
        version,
      });
      assert.equal(accepted.status, 202, JSON.stringify(accepted.body));
      ids.set(deviceId, accepted.body.update_id);
    }
    const records = new Map<string, OtaRecord>();
    await eventually(
      async () => {
        for (const deviceId of devices) {
          const record = (await server.api<OtaRecord>('GET', `/api/v1/devices/${deviceId}/ota`, key)).body;
          const ended = record.ota_status === 'completed' || record.ota_status === 'failed';
          if (record.update_id === ids.get(deviceId) && ended) records.set(deviceId, record);
        }
        return records.size === devices.length;
      },
      30_000,
      `every update to ${version} ended\n${output}`,
    );
    return [...records.values()];
  }

  it('fails 1.1.0 with boot_failed, then takes 1.2.0 without an agent restart', async () => {
    for (const record of await updateAll('1.1.0')) {
      assert.equal(record.ota_status, 'failed', JSON.stringify(record));
      assert.equal(record.error?.code, 'boot_failed');
      assert.equal(record.current_version, '1.0.0');
    }
    for (const record of await updateAll('1.2.0')) {
      assert.equal(record.ota_status, 'completed', JSON.stringify(record));
      assert.equal(record.current_version, '1.2.0');
    }
    assert.equal(simulate?.exitCode, null, 'the same simulator process throughout');
  });
});
