/**
 * The RAUC installer against Debian's real `rauc` (service on a private D-Bus, raw slots on
 * files, signed `plain` bundles): see test/helpers/rauc-system.ts for what stands in for the
 * boot loader. First the installer alone, then the whole agent taking an update from a
 * stand-in server: committed when healthy, marked bad and rebooted back when not.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import type { Agent, AgentOptions } from '../../src/agent/agent.ts';
import type { Installer } from '../../src/agent/installer.ts';
import { RaucInstaller } from '../../src/agent/rauc-installer.ts';
import { fastAgent, updateToSecondVersion, withTempDir } from '../helpers/agent-fixtures.ts';
import { StandInServer } from '../helpers/agent-stand-in-server.ts';
import { sha256Of as sha256 } from '../helpers/firmware.ts';
import { createRaucSystem, type RaucSystem, raucUnavailable } from '../helpers/rauc-system.ts';

const missing = await raucUnavailable();
const factory = randomBytes(100_000);
const update = randomBytes(300_000);

async function slotBytes(path: string, length: number): Promise<string> {
  return sha256((await readFile(path)).subarray(0, length));
}

describe('RAUC installer', { skip: missing }, () => {
  let system: RaucSystem;
  before(async () => {
    system = await createRaucSystem(factory);
  });
  after(() => system?.remove());

  it('installs a bundle into the other slot, boots it on trial, commits with mark-good', async () => {
    await withTempDir(async (dataDir) => {
      const installer = new RaucInstaller({ dataDir, initialVersion: '1.0.0', env: system.env });
      assert.equal(await system.powerOn(), 'a');
      assert.deepEqual(await installer.boot(), { kind: 'normal', version: '1.0.0' });
      const bundle = await system.bundle('2.0.0', update);
      await installer.install({ version: '2.0.0', sha256: 'unused', filePath: bundle });
      assert.equal(await slotBytes(system.slots.b, update.length), sha256(update), 'RAUC wrote slot B');
      assert.equal((await system.bootState()).get('primary'), 'b');

      assert.equal(await system.powerOn(), 'b');
      assert.deepEqual(await installer.boot(), { kind: 'trial', version: '2.0.0', previousVersion: '1.0.0' });
      await installer.commit();
      assert.equal((await system.bootState()).get('state_b'), 'good');
      assert.equal(await system.powerOn(), 'b');
      assert.deepEqual(await installer.boot(), { kind: 'normal', version: '2.0.0' });

      // Reverting the next trial marks it bad: the boot loader takes the other slot again.
      const next = await system.bundle('3.0.0', factory);
      await installer.install({ version: '3.0.0', sha256: 'unused', filePath: next });
      assert.equal(await system.powerOn(), 'a');
      assert.deepEqual(await installer.boot(), { kind: 'trial', version: '3.0.0', previousVersion: '2.0.0' });
      assert.equal(await installer.revert(), 'reboot');
      assert.equal((await system.bootState()).get('state_a'), 'bad');
      assert.equal(await system.powerOn(), 'b');
      assert.deepEqual(await installer.boot(), { kind: 'normal', version: '2.0.0' });
    });
  });
});

describe('the agent with the RAUC installer', { skip: missing }, () => {
  let server: StandInServer;
  before(async () => {
    server = await StandInServer.start();
  });
  after(() => server?.close());

  async function runUpdate(options: Partial<AgentOptions>, deviceId: string) {
    const system = await createRaucSystem(factory);
    try {
      return await withTempDir(async (dataDir) => {
        const inner = new RaucInstaller({ dataDir, initialVersion: '1.0.0', env: system.env });
        // Every (re)start of the agent, its soft restart included, begins with the machine booting.
        const installer: Installer = {
          boot: async () => {
            await system.powerOn();
            return inner.boot();
          },
          currentVersion: () => inner.currentVersion(),
          install: (image) => inner.install(image),
          commit: () => inner.commit(),
          revert: () => inner.revert(),
        };
        const bytes = await readFile(await system.bundle('2.0.0', update));
        const agent: Agent = fastAgent(server, { deviceId, dataDir, installer, confirmTimeoutMs: 10_000, ...options });
        await agent.start();
        try {
          assert.equal(await agent.waitUntilConnected(10_000), true);
          const result = await updateToSecondVersion(server, agent, deviceId, `${deviceId}.raucb`, bytes);
          return { result, version: agent.currentVersion, booted: system.booted, state: await system.bootState() };
        } finally {
          await agent.stop();
        }
      });
    } finally {
      await system.remove();
    }
  }

  it('takes an update: rauc install, reboot into slot B, health check, mark-good, completed', async () => {
    const outcome = await runUpdate({ healthCommand: 'test "$EDGEFLOW_VERSION" = 2.0.0' }, 'dev-rauc-ok');
    assert.equal(outcome.result.status, 'completed', JSON.stringify(outcome.result));
    assert.equal(outcome.result.current_version, '2.0.0');
    assert.equal(outcome.version, '2.0.0');
    assert.equal(outcome.booted, 'b');
    assert.equal(outcome.state.get('state_b'), 'good');
  });

  it('marks an unhealthy update bad, reboots into slot A and reports failed on 1.0.0', async () => {
    const outcome = await runUpdate({ healthCommand: 'test "$EDGEFLOW_VERSION" != 2.0.0' }, 'dev-rauc-bad');
    assert.equal(outcome.result.status, 'failed', JSON.stringify(outcome.result));
    assert.equal(outcome.result.error?.code, 'health_check_failed');
    assert.equal(outcome.result.current_version, '1.0.0');
    assert.equal(outcome.version, '1.0.0');
    assert.equal(outcome.booted, 'a');
    assert.equal(outcome.state.get('state_b'), 'bad');
  });
});
