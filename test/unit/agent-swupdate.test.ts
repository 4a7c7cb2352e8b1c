/**
 * The boot-loader installer with SWUpdate as the slot writer, against Debian's real `swupdate`:
 * a signed .swu (sw-description signed with `openssl cms`, cpio archive) with one selection per
 * slot (`stable,copy-a` / `stable,copy-b`) writing file-backed partitions, and the real U-Boot
 * environment (fw_setenv) that the agent flips afterwards. The boot loader is the harness of
 * test/helpers/boot-media.ts. The whole agent takes the update from a stand-in server.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AgentOptions } from '../../src/agent/agent.ts';
import { kernelBootIdentity } from '../../src/agent/boot-identity.ts';
import { BootloaderInstaller } from '../../src/agent/bootloader-installer.ts';
import { swupdateSlotWriter } from '../../src/agent/swupdate.ts';
import { fastAgent, updateToSecondVersion } from '../helpers/agent-fixtures.ts';
import { StandInServer } from '../helpers/agent-stand-in-server.ts';
import { acquireSwupdateLock, buildSwu, swupdateUnavailable } from '../helpers/agent-swu.ts';
import { bootedByLoader, createBootMedia } from '../helpers/boot-media.ts';
import { sha256Of as sha256 } from '../helpers/firmware.ts';

const missing = await swupdateUnavailable();

describe('the agent with SWUpdate writing the slots', { skip: missing }, () => {
  const factory = randomBytes(100_000);
  const update = randomBytes(250_000);
  let server: StandInServer;
  let releaseSwupdate: (() => Promise<void>) | undefined;
  before(async () => {
    releaseSwupdate = await acquireSwupdateLock();
    server = await StandInServer.start();
  });
  after(async () => {
    await server?.close();
    await releaseSwupdate?.();
  });

  async function runUpdate(options: Partial<AgentOptions>, deviceId: string) {
    const media = await createBootMedia('uboot', 1024 * 1024, factory);
    try {
      const swu = await buildSwu(media, '2.0.0', update);
      const installer = new BootloaderInstaller({
        environment: media.environment,
        initialVersion: '1.0.0',
        bootIdentity: kernelBootIdentity(media.proc),
        writeSlot: swupdateSlotWriter({ args: ['-k', join(media.dir, 'swu-cert.pem'), '-H', 'edgeflow:1.0'] }),
      });
      const agent = fastAgent(server, {
        deviceId,
        dataDir: join(media.dir, 'data'),
        installer: bootedByLoader(media, installer),
        confirmTimeoutMs: 10_000,
        ...options,
      });
      await agent.start();
      try {
        assert.equal(await agent.waitUntilConnected(10_000), true);
        const result = await updateToSecondVersion(server, agent, deviceId, `${deviceId}.swu`, swu);
        return {
          result,
          version: agent.currentVersion,
          variables: await media.variables(),
          slotB: await media.slotHash('b', update.length),
        };
      } finally {
        await agent.stop();
      }
    } finally {
      await media.remove();
    }
  }

  it('swupdate writes the inactive slot, the agent flips U-Boot, the trial commits', async () => {
    const outcome = await runUpdate({ healthCommand: 'test "$EDGEFLOW_VERSION" = 2.0.0' }, 'dev-swu-ok');
    assert.equal(outcome.result.status, 'completed', JSON.stringify(outcome.result));
    assert.equal(outcome.result.current_version, '2.0.0');
    assert.equal(outcome.slotB, sha256(update), 'SWUpdate wrote slot B (selection stable,copy-b)');
    assert.equal(outcome.variables.get('edgeflow_slot'), 'b');
    assert.equal(outcome.variables.get('upgrade_available'), '0');
  });

  it('an unhealthy trial goes back to slot A and reports failed', async () => {
    const outcome = await runUpdate({ healthCommand: 'test "$EDGEFLOW_VERSION" != 2.0.0' }, 'dev-swu-bad');
    assert.equal(outcome.result.status, 'failed', JSON.stringify(outcome.result));
    assert.equal(outcome.result.error?.code, 'health_check_failed');
    assert.equal(outcome.result.current_version, '1.0.0');
    assert.equal(outcome.variables.get('edgeflow_slot'), 'a');
  });

  it('fails the install, leaving the boot loader alone, when SWUpdate refuses the .swu', async () => {
    const media = await createBootMedia('uboot', 1024 * 1024, factory);
    try {
      const swu = await buildSwu(media, '2.0.0', update);
      // The middle of the archive is inside rootfs.img (250 of 252 KB): its sha256 no longer matches.
      const middle = Math.floor(swu.length / 2);
      swu.writeUInt8(swu.readUInt8(middle) ^ 0xff, middle);
      await writeFile(join(media.dir, 'bad.swu'), swu);
      const installer = new BootloaderInstaller({
        environment: media.environment,
        initialVersion: '1.0.0',
        bootIdentity: kernelBootIdentity(media.proc),
        writeSlot: swupdateSlotWriter({ args: ['-k', join(media.dir, 'swu-cert.pem'), '-H', 'edgeflow:1.0'] }),
      });
      await media.bootLoaderStart();
      await installer.boot();
      await assert.rejects(
        installer.install({ version: '2.0.0', sha256: sha256(swu), filePath: join(media.dir, 'bad.swu') }),
        /swupdate -e stable,copy-b exited/,
      );
      assert.equal((await media.variables()).get('upgrade_available'), undefined);
      assert.equal(await media.bootLoaderStart(), 'a');
    } finally {
      await media.remove();
    }
  });
});
