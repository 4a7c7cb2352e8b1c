/**
 * Issue 18, item 9: an agent that cannot work tells the server why. The device's RAUC service
 * is not running (a real `rauc` client on a private D-Bus with nothing answering), so the
 * installer fails at start. The agent still connects to the real server: its `device_info`
 * carries the reason (`health_error`), which the device record shows; `health_check` answers
 * unhealthy and an update is refused. Once the service runs, the agent's retry starts it
 * normally and the record's error clears. Skipped, saying why, without rauc.
 */
import assert from 'node:assert/strict';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Agent } from '../../src/agent/agent.ts';
import { RaucInstaller } from '../../src/agent/rauc-installer.ts';
import { createAgent, registerDevice, removeAgentDirs } from '../helpers/agents.ts';
import { uploadArtifact } from '../helpers/firmware.ts';
import { createRaucSystem, type RaucSystem, raucUnavailable } from '../helpers/rauc-system.ts';
import { eventually } from '../helpers/raw-device.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const [backend] = await backendsUnderTest();
const missing = await raucUnavailable();

interface DeviceRecord {
  online: boolean;
  current_version: string;
  health_error: string | null;
}

describe('an agent whose installer cannot start', { skip: missing }, () => {
  let server: TestServer;
  let system: RaucSystem;
  let agent: Agent | undefined;

  before(async () => {
    server = await startTestServer(backend!, { env: { EDGEFLOW_DISPATCH_INTERVAL_MS: '200' } });
    system = await createRaucSystem(Buffer.alloc(64 * 1024, 1));
  });
  after(async () => {
    await agent?.stop();
    await system?.remove();
    await server?.close();
    await removeAgentDirs();
    await stopSharedServices();
  });

  it('reports why to the server, refuses updates, and recovers once the cause is gone', async () => {
    const org = await server.createOrg('unhealthy');
    const device = await registerDevice(server, org.adminKey, { current_version: '1.0.0' });
    const bundle = await readFile(await system.bundle('1.1.0', Buffer.alloc(32 * 1024, 2)));
    await uploadArtifact(server.url, org.adminKey, '1.1.0', bundle, 'update-1.1.0.raucb');
    const record = async () =>
      (await server.api<DeviceRecord>('GET', `/api/v1/devices/${device.deviceId}`, org.adminKey)).body;
    // The RAUC client reaches a private bus on which no RAUC service runs yet.
    const markerDir = join(system.dir, 'agent');
    await mkdir(markerDir);
    agent = await createAgent(server, org, device, {
      installer: new RaucInstaller({ dataDir: markerDir, initialVersion: '1.0.0', env: system.env, timeoutMs: 10_000 }),
      startupRetryMs: 500,
    });
    await agent.start();

    await eventually(async () => (await record()).health_error !== null, 20_000, 'the health error recorded');
    const unhealthy = await record();
    assert.equal(unhealthy.online, true, 'connected although it cannot update');
    assert.match(
      unhealthy.health_error ?? '',
      /installer cannot start: rauc status .*exited with 1: .*de\.pengutronix\.rauc/,
    );
    assert.equal(unhealthy.current_version, '1.0.0');
    assert.equal(agent.healthError, unhealthy.health_error);
    const refused = await server.api<{ error?: { code: string } }>(
      'POST',
      `/api/v1/devices/${device.deviceId}/ota/update`,
      org.adminKey,
      { version: '1.1.0' },
    );
    assert.equal(refused.body.error?.code, 'device_unhealthy', JSON.stringify(refused.body));

    // The service comes up (it was late, or the operator fixed it): the next retry starts the agent.
    await system.powerOn();
    await eventually(async () => (await record()).health_error === null, 30_000, 'the health error cleared');
    assert.equal(agent.healthError, undefined);
    const accepted = await server.api('POST', `/api/v1/devices/${device.deviceId}/ota/update`, org.adminKey, {
      version: '1.1.0',
    });
    assert.equal(accepted.status, 202, JSON.stringify(accepted.body));
  });
});
