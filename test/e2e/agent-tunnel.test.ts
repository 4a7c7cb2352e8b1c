/**
 * The real agent against the real tunnel endpoint: authentication, refusal, replacement and
 * a server restart that the agents ride out with backoff, on every backend under test.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Agent } from '../../src/agent/agent.ts';
import { silentLogger } from '../../src/agent/logger.ts';
import { RequestRefusedError, TunnelClient } from '../../src/agent/tunnel-client.ts';
import { CloseCode } from '../../src/protocol/tunnel.ts';
import { DeviceCommandError } from '../../src/server/tunnel/hub.ts';
import { createAgent, registerDevice, removeAgentDirs, startAgent } from '../helpers/agents.ts';
import { eventually } from '../helpers/raw-device.ts';
import {
  backendsUnderTest,
  persistentState,
  startTestServer,
  stopSharedServices,
  type TestServer,
} from '../helpers/server.ts';

const backends = await backendsUnderTest();
after(async () => {
  await removeAgentDirs();
  await stopSharedServices();
});

type Device = { online: boolean; agent_version: string | null; last_seen_at: string | null };

const isOnline = async (server: TestServer, key: string, deviceId: string) =>
  (await server.api<Device>('GET', `/api/v1/devices/${deviceId}`, key)).body.online;

for (const backend of backends) {
  describe(`real agent over the tunnel on ${backend.name}`, () => {
    it('connects, shows online with its agent version, and goes offline when it stops', async () => {
      const server = await startTestServer(backend);
      try {
        const org = await server.createOrg();
        const device = await registerDevice(server, org.adminKey);
        const agent = await startAgent(server, org, device);
        const record = (await server.api<Device>('GET', `/api/v1/devices/${device.deviceId}`, org.adminKey)).body;
        assert.equal(record.online, true);
        assert.match(record.agent_version ?? '', /^\d+\.\d+\.\d+/);
        assert.ok(record.last_seen_at);
        await agent.stop();
        await eventually(async () => !(await isOnline(server, org.adminKey, device.deviceId)), 5000, 'offline');
      } finally {
        await server.close();
      }
    });

    it("is refused with a wrong key or another organization's device id, and keeps retrying with backoff", async () => {
      const server = await startTestServer(backend);
      const agents: Agent[] = [];
      try {
        const org = await server.createOrg('a');
        const other = await server.createOrg('b');
        const device = await registerDevice(server, org.adminKey);
        const foreign = await registerDevice(server, other.adminKey);
        for (const credentials of [
          { deviceId: device.deviceId, apiKey: `${device.apiKey}x` },
          { deviceId: foreign.deviceId, apiKey: device.apiKey },
        ]) {
          // Refusals are visible in the agent's log, as a device owner would see them.
          let refusals = 0;
          let twice!: () => void;
          const refusedTwice = new Promise<void>((resolve) => {
            twice = resolve;
          });
          const quiet = () => {};
          const agent = await createAgent(server, org, credentials, {
            reconnectBaseMs: 20,
            logger: {
              debug: quiet,
              info: quiet,
              warn: quiet,
              error: (message: string) => {
                if (/authentication failed/.test(message) && ++refusals === 2) twice();
              },
            },
          });
          agents.push(agent);
          await agent.start();
          await refusedTwice;
          assert.equal(agent.connected, false);
        }
        assert.equal(await isOnline(server, org.adminKey, device.deviceId), false);
        assert.equal(await isOnline(server, other.adminKey, foreign.deviceId), false);
      } finally {
        await Promise.all(agents.map((agent) => agent.stop()));
        await server.close();
      }
    });

    it('lets a newer connection of the same device replace the older one', async () => {
      const server = await startTestServer(backend);
      const agents: Agent[] = [];
      try {
        const org = await server.createOrg();
        const device = await registerDevice(server, org.adminKey);
        const first = await startAgent(server, org, device, { reconnectBaseMs: 60_000 });
        agents.push(first);
        const replaced = new Promise<number>((resolve) => first.once('disconnected', (code: number) => resolve(code)));
        const second = await startAgent(server, org, device);
        agents.push(second);
        assert.equal(await replaced, CloseCode.replaced);
        assert.equal(second.connected, true);
        assert.equal(await isOnline(server, org.adminKey, device.deviceId), true);
      } finally {
        await Promise.all(agents.map((agent) => agent.stop()));
        await server.close();
      }
    });

    it("carries errors with their code both ways: the server reads the agent's refusals, the agent the server's", async () => {
      const server = await startTestServer(backend);
      let tunnel: TunnelClient | undefined;
      try {
        const org = await server.createOrg();
        const device = await registerDevice(server, org.adminKey);
        const agent = await startAgent(server, org, device);
        const ref = { organizationId: org.id, deviceId: device.deviceId };
        const refusalOf = (action: string, payload: unknown) =>
          server.services.tunnel.command(ref, action, payload).then(
            () => assert.fail(`${action} was accepted`),
            (error: unknown) => {
              assert.ok(error instanceof DeviceCommandError, String(error));
              return error.deviceError;
            },
          );
        assert.deepEqual(await refusalOf('ota_cancel', { update_id: 'u-nope' }), {
          code: 'not_found',
          message: 'no update u-nope on this device',
        });
        const invalid = await refusalOf('ota_update', { update_id: 'u-bad' });
        assert.equal(invalid.code, 'invalid_command');
        assert.doesNotMatch(invalid.message, /^invalid_command/, 'the code is not repeated in the message');
        assert.equal((await refusalOf('format_disk', {})).code, 'unknown_action');
        await agent.stop();

        // The agent's end of the tunnel, on its own so that it can send what the agent never would.
        tunnel = new TunnelClient({
          server: server.url,
          deviceId: device.deviceId,
          apiKey: device.apiKey,
          agentVersion: '1.0.0',
          firmwareVersion: () => '1.0.0',
          logger: silentLogger,
          allowInsecure: true,
        });
        tunnel.start();
        assert.equal(await tunnel.waitUntilConnected(10_000), true);
        const refusedRequest = (action: string, payload: unknown) =>
          tunnel!.request(action, payload, { timeoutMs: 10_000 }).then(
            () => assert.fail(`${action} was accepted`),
            (error: unknown) => {
              assert.ok(error instanceof RequestRefusedError, String(error));
              return error.refusal;
            },
          );
        assert.equal((await refusedRequest('make_coffee', {})).code, 'unknown_action');
        const missingVersion = await refusedRequest('device_info', {});
        assert.equal(missingVersion.code, 'invalid_payload');
        assert.match(missingVersion.message, /^device_info: .*current_version/);
      } finally {
        await tunnel?.stop();
        await server.close();
      }
    });

    it('rides out a server restart: the server closes with 1012, agents reconnect and the online state is right afterwards', async () => {
      const state = persistentState();
      let server = await startTestServer(backend, { state });
      const agents: Agent[] = [];
      try {
        const org = await server.createOrg();
        const devices = await Promise.all(Array.from({ length: 5 }, () => registerDevice(server, org.adminKey)));
        for (const device of devices) agents.push(await startAgent(server, org, device, { reconnectBaseMs: 100 }));
        const stayedAway = await registerDevice(server, org.adminKey);
        const away = await startAgent(server, org, stayedAway);
        const disconnects = agents.map(
          (agent) => new Promise<number>((resolve) => agent.once('disconnected', (code: number) => resolve(code))),
        );
        await server.close();
        assert.deepEqual(await Promise.all(disconnects), Array(5).fill(CloseCode.serviceRestart));
        await away.stop();
        await sleep(300);
        server = await startTestServer(backend, { state });
        for (const agent of agents) assert.equal(await agent.waitUntilConnected(15_000), true);
        for (const device of devices) {
          await eventually(
            async () => isOnline(server, org.adminKey, device.deviceId),
            5000,
            `${device.deviceId} online`,
          );
        }
        assert.equal(await isOnline(server, org.adminKey, stayedAway.deviceId), false, 'a device that did not return');
        const online = await server.api<{ devices: unknown[] }>('GET', '/api/v1/devices?online=true', org.adminKey);
        assert.equal(online.body.devices.length, 5);
      } finally {
        await Promise.all(agents.map((agent) => agent.stop()));
        await server.close();
        await state.dispose();
      }
    });
  });
}
