/**
 * Issue 18, item 1: a device whose boot loader fell back must take the next update normally,
 * without its agent restarting. The same agent process that found the fallback (at the start
 * after the failed trial boots) is then sent a good update, which must install, reboot, commit
 * and report completed. On the A/B directory installer, and on the boot-loader installer with a
 * real U-Boot environment (fw_setenv) and a real GRUB environment block (grub-editenv), the boot
 * loader being the harness of test/helpers/boot-media.ts. Against a stand-in server; the
 * simulator's run is test/integration/simulator-fallback.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Agent, AgentOptions } from '../../src/agent/agent.ts';
import type { StepHook } from '../../src/agent/installer.ts';
import type { OtaResultPayload } from '../../src/protocol/tunnel.ts';
import { fastAgent, resultsFor, updatePayload, withTempDir } from '../helpers/agent-fixtures.ts';
import { makeFirmware, StandInServer } from '../helpers/agent-stand-in-server.ts';
import { type BootLoaderKind, bootedByLoader, bootloaderInstaller, createBootMedia } from '../helpers/boot-media.ts';

const factory = makeFirmware(100_000, 1);
const broken = makeFirmware(150_000, 2);
const fixed = makeFirmware(120_000, 3);
let server: StandInServer;
let counter = 0;

before(async () => {
  server = await StandInServer.start();
});
after(() => server.close());

/** Every boot of the new image dies before its health check: a power cut that never ends the step. */
const dieBeforeHealthCheck: StepHook = (step) => (step === 'phase:health_checking' ? new Promise(() => {}) : undefined);

async function settled(agent: Agent, deviceId: string, updateId: string): Promise<OtaResultPayload> {
  await server.waitFor(
    `${updateId} settled`,
    () => agent.otaState === null && resultsFor(server, deviceId, updateId).length > 0,
    60_000,
  );
  return resultsFor(server, deviceId, updateId).at(-1)!;
}

/**
 * Sends 2.0.0 (whose trial boots all die), plays the machine through the failed boots until the
 * agent of the next start reports the fallback; returns that agent, still running.
 */
async function fallBack(deviceId: string, startAgent: (hook?: StepHook) => Promise<Agent>, trialBoots: number) {
  let agent = await startAgent(dieBeforeHealthCheck);
  assert.equal(await agent.waitUntilConnected(5_000), true);
  server.sendCommand(
    deviceId,
    'ota_update',
    updatePayload(server, 'broken.bin', broken, { update_id: `u-broken-${deviceId}`, version: '2.0.0' }),
  );
  for (let boot = 1; boot <= trialBoots; boot++) {
    await server.waitFor(`trial boot ${boot}`, () => agent.otaState?.phase === 'health_checking', 30_000);
    await agent.powerCut();
    agent = await startAgent(boot < trialBoots ? dieBeforeHealthCheck : undefined);
  }
  const failed = await settled(agent, deviceId, `u-broken-${deviceId}`);
  assert.deepEqual([failed.status, failed.error?.code, failed.current_version], ['failed', 'boot_failed', '1.0.0']);
  return agent;
}

async function updateAgain(agent: Agent, deviceId: string): Promise<OtaResultPayload> {
  server.sendCommand(
    deviceId,
    'ota_update',
    updatePayload(server, 'fixed.bin', fixed, { update_id: `u-fixed-${deviceId}`, version: '2.0.1' }),
  );
  return settled(agent, deviceId, `u-fixed-${deviceId}`);
}

function lastDeviceInfo(deviceId: string): Record<string, unknown> {
  return server.commandsFrom(deviceId, 'device_info').at(-1)?.payload as Record<string, unknown>;
}

describe('a device that fell back updates again without an agent restart', () => {
  it('A/B directory installer', async () => {
    await withTempDir(async (dataDir) => {
      const deviceId = `dev-fallback-ab-${++counter}`;
      const options: Partial<AgentOptions> & { deviceId: string } = { deviceId, dataDir, maxBootTries: 1 };
      const agents: Agent[] = [];
      const start = async (stepHook?: StepHook) => {
        const agent = fastAgent(server, { ...options, stepHook });
        agents.push(agent);
        await agent.start();
        return agent;
      };
      try {
        const agent = await fallBack(deviceId, start, 1);
        const result = await updateAgain(agent, deviceId);
        assert.deepEqual([result.status, result.current_version], ['completed', '2.0.1'], JSON.stringify(result));
        assert.equal(agent.currentVersion, '2.0.1');
        assert.equal(lastDeviceInfo(deviceId).current_version, '2.0.1');
        assert.equal(lastDeviceInfo(deviceId).slot, 'b');
      } finally {
        await Promise.all(agents.map((agent) => agent.powerCut()));
      }
    });
  });

  for (const kind of ['uboot', 'grub'] as BootLoaderKind[]) {
    it(`boot-loader installer with ${kind}`, async () => {
      const media = await createBootMedia(kind, 512 * 1024, factory.bytes);
      const deviceId = `dev-fallback-${kind}-${++counter}`;
      const agents: Agent[] = [];
      // bootlimit 1: one trial boot, the second boot falls back.
      const start = async (stepHook?: StepHook) => {
        const installer = bootedByLoader(media, bootloaderInstaller(media, { bootLimit: 1, stepHook }));
        const agent = fastAgent(server, { deviceId, dataDir: `${media.dir}/data`, installer, stepHook });
        agents.push(agent);
        await agent.start();
        return agent;
      };
      try {
        const agent = await fallBack(deviceId, start, 1);
        assert.equal((await media.variables()).get('edgeflow_slot'), 'a');
        await server.waitFor('device_info after the fallback', () => lastDeviceInfo(deviceId)?.slot === 'a');
        assert.equal(lastDeviceInfo(deviceId).current_version, '1.0.0');

        const result = await updateAgain(agent, deviceId);
        assert.deepEqual([result.status, result.current_version], ['completed', '2.0.1'], JSON.stringify(result));
        const variables = await media.variables();
        assert.equal(variables.get('edgeflow_slot'), 'b');
        assert.equal(variables.get('upgrade_available'), '0');
        assert.equal(await media.slotHash('b', fixed.bytes.length), fixed.sha256);
        await server.waitFor('device_info on the new slot', () => lastDeviceInfo(deviceId)?.slot === 'b');
        assert.equal(lastDeviceInfo(deviceId).current_version, '2.0.1');
      } finally {
        await Promise.all(agents.map((agent) => agent.powerCut()));
        await media.remove();
      }
    });
  }
});
