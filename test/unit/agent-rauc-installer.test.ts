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
import { ArtifactMismatchError, type Installer } from '../../src/agent/installer.ts';
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

describe('RAUC: what the bundle says is checked, what RAUC says is reported', { skip: missing }, () => {
  let server: StandInServer;
  before(async () => {
    server = await StandInServer.start();
  });
  after(() => server?.close());

  /** A RAUC system booted on slot A and an agent on it, connected to the stand-in server. */
  async function withRaucAgent(deviceId: string, run: (agent: Agent, system: RaucSystem) => Promise<void>) {
    const system = await createRaucSystem(factory);
    try {
      await withTempDir(async (dataDir) => {
        const installer = new RaucInstaller({ dataDir, initialVersion: '1.0.0', env: system.env });
        await system.powerOn();
        const agent = fastAgent(server, { deviceId, dataDir, installer });
        await agent.start();
        try {
          assert.equal(await agent.waitUntilConnected(10_000), true);
          await run(agent, system);
        } finally {
          await agent.stop();
        }
      });
    } finally {
      await system.remove();
    }
  }

  it('refuses a bundle whose manifest version is not the version offered: artifact_mismatch, nothing written', async () => {
    const system = await createRaucSystem(factory);
    try {
      await withTempDir(async (dataDir) => {
        const installer = new RaucInstaller({ dataDir, initialVersion: '1.0.0', env: system.env });
        await system.powerOn();
        await installer.boot();
        const bundle = await system.bundle('2.5.0-build.7', update);
        await assert.rejects(
          installer.install({ version: '2.5.0', sha256: 'unused', filePath: bundle }),
          (error: Error) =>
            error instanceof ArtifactMismatchError &&
            /says version 2\.5\.0-build\.7.*offers it as 2\.5\.0/.test(error.message),
        );
        assert.equal((await system.bootState()).get('primary'), 'a', 'RAUC was not asked to install');
        assert.notEqual(await slotBytes(system.slots.b, update.length), sha256(update));
        assert.equal(await system.powerOn(), 'a');
        assert.deepEqual(await installer.boot(), { kind: 'normal', version: '1.0.0' });
      });
    } finally {
      await system.remove();
    }
  });

  it('the agent reports artifact_mismatch for it, before installing, and stays on 1.0.0', async () => {
    await withRaucAgent('dev-rauc-mismatch', async (agent, system) => {
      const bytes = await readFile(await system.bundle('2.0.0-build.7', update));
      const result = await updateToSecondVersion(server, agent, 'dev-rauc-mismatch', 'mismatch.raucb', bytes);
      assert.deepEqual(
        [result.status, result.error?.code, result.current_version],
        ['failed', 'artifact_mismatch', '1.0.0'],
      );
      assert.equal((await system.bootState()).get('primary'), 'a');
    });
  });

  it("RAUC's own reason (LastError, on its stdout) reaches the server", async () => {
    await withRaucAgent('dev-rauc-badsig', async (agent, system) => {
      const bytes = await readFile(await system.bundle('2.0.0', update));
      // The signature is at the end of a plain bundle: spoil a byte of it.
      bytes[bytes.length - 100]! ^= 0xff;
      const result = await updateToSecondVersion(server, agent, 'dev-rauc-badsig', 'badsig.raucb', bytes);
      assert.equal(result.error?.code, 'install_failed', JSON.stringify(result));
      assert.match(result.error?.message ?? '', /LastError: signature verification failed/);
      assert.equal(result.current_version, '1.0.0');
    });
  });

  it('refuses firmware of another kind (.bin) before downloading it', async () => {
    await withRaucAgent('dev-rauc-kind', async (agent) => {
      const before = server.firmwareRequests.length;
      const result = await updateToSecondVersion(server, agent, 'dev-rauc-kind', 'rootfs.bin', update);
      assert.equal(result.error?.code, 'artifact_mismatch', JSON.stringify(result));
      assert.match(result.error?.message ?? '', /raw image \(\.bin\); this device's installer takes \.raucb/);
      assert.equal(server.firmwareRequests.length, before, 'nothing was downloaded');
    });
  });
});
