/**
 * The boot-loader A/B installer against the real tools: libubootenv's fw_printenv/fw_setenv on a
 * redundant U-Boot environment and grub-editenv on a GRUB environment block, with file-backed
 * partitions. The boot loader itself is the harness in test/helpers/boot-media.ts, which reads
 * the same environment and applies the documented boot script.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BootVariables } from '../../src/agent/bootloader-installer.ts';
import { type BootLoaderKind, type BootMedia, bootloaderInstaller, createBootMedia } from '../helpers/boot-media.ts';
import { sha256Of as sha256 } from '../helpers/firmware.ts';

const partitionBytes = 1024 * 1024;
const factory = randomBytes(300_000);

for (const kind of ['uboot', 'grub'] as BootLoaderKind[]) {
  describe(`boot-loader installer with ${kind}`, () => {
    let media: BootMedia;
    const created: BootMedia[] = [];
    let image: { path: string; bytes: Buffer; sha256: string };

    before(async () => {
      image = { path: '', bytes: randomBytes(400_000), sha256: '' };
    });
    const freshMedia = async () => {
      media = await createBootMedia(kind, partitionBytes, factory);
      created.push(media);
      image.path = join(media.dir, 'update.bin');
      image.sha256 = sha256(image.bytes);
      await writeFile(image.path, image.bytes);
      return media;
    };
    after(async () => {
      await Promise.all(created.splice(0).map((m) => m.remove()));
    });

    it('writes the image to the inactive partition, then lets the boot loader try it once and commits', async () => {
      await freshMedia();
      const installer = bootloaderInstaller(media);
      assert.equal(await media.bootLoaderStart(), 'a');
      assert.deepEqual(await installer.boot(), { kind: 'normal', version: '1.0.0' });

      await installer.install({ version: '2.0.0', sha256: image.sha256, filePath: image.path });
      assert.equal(await media.slotHash('b', image.bytes.length), image.sha256, 'slot B holds the image');
      assert.equal(await media.slotHash('a', factory.length), sha256(factory), 'the running slot is untouched');
      const pending = await media.variables();
      assert.equal(pending.get('edgeflow_slot'), 'b');
      assert.equal(pending.get('upgrade_available'), '1');
      assert.equal(pending.get('bootcount'), '0');
      assert.equal(pending.get('bootlimit'), '3');
      assert.equal(installer.currentVersion(), '1.0.0', 'still running the old version until the reboot');

      assert.equal(await media.bootLoaderStart(), 'b');
      assert.deepEqual(await installer.boot(), { kind: 'trial', version: '2.0.0', previousVersion: '1.0.0' });
      await installer.commit();
      const committed = await media.variables();
      assert.equal(committed.get('upgrade_available'), '0');
      assert.equal(committed.get('bootcount'), '0');
      assert.equal(committed.get(BootVariables.trialSlot), undefined);

      // Committed: every later boot runs slot B without counting.
      assert.equal(await media.bootLoaderStart(), 'b');
      assert.deepEqual(await installer.boot(), { kind: 'normal', version: '2.0.0' });
      assert.equal((await media.variables()).get('bootcount'), '0');
    });

    it('falls back to the previous slot when the new image never confirms within bootlimit boots', async () => {
      await freshMedia();
      const installer = bootloaderInstaller(media);
      await media.bootLoaderStart();
      await installer.boot();
      await installer.install({ version: '2.0.0', sha256: image.sha256, filePath: image.path });
      // Three boots of B that die before the agent commits (kernel panic, hung init…).
      for (let attempt = 1; attempt <= 3; attempt++) {
        assert.equal(await media.bootLoaderStart(), 'b', `attempt ${attempt}`);
        assert.equal((await media.variables()).get('bootcount'), String(attempt));
      }
      assert.equal(await media.bootLoaderStart(), 'a', 'the fourth boot falls back');
      assert.deepEqual(await installer.boot(), { kind: 'reverted', version: '1.0.0', abandonedVersion: '2.0.0' });
      assert.equal(installer.currentVersion(), '1.0.0');
      assert.equal((await media.variables()).get(BootVariables.trialSlot), undefined);
      assert.equal(await media.bootLoaderStart(), 'a');
      assert.deepEqual(await installer.boot(), { kind: 'normal', version: '1.0.0' });
    });

    it('reverting a trial boot points the boot loader back and asks for a reboot', async () => {
      await freshMedia();
      const installer = bootloaderInstaller(media);
      await media.bootLoaderStart();
      await installer.boot();
      await installer.install({ version: '2.0.0', sha256: image.sha256, filePath: image.path });
      await media.bootLoaderStart();
      assert.equal((await installer.boot()).kind, 'trial');
      assert.equal(await installer.revert(), 'reboot');
      assert.equal(await media.bootLoaderStart(), 'a');
      assert.deepEqual(await installer.boot(), { kind: 'normal', version: '1.0.0' });

      // The next update goes to B again and runs from there once committed.
      await installer.install({ version: '2.0.1', sha256: image.sha256, filePath: image.path });
      await media.bootLoaderStart();
      assert.equal((await installer.boot()).kind, 'trial');
      await installer.commit();
      // …and the one after that overwrites A, the slot no longer running.
      const next = randomBytes(200_000);
      await writeFile(image.path, next);
      await installer.install({ version: '3.0.0', sha256: sha256(next), filePath: image.path });
      assert.equal(await media.slotHash('a', next.length), sha256(next));
      assert.equal(await media.slotHash('b', image.bytes.length), image.sha256, 'B, running, untouched');
      assert.equal(await media.bootLoaderStart(), 'a');
      assert.deepEqual(await installer.boot(), { kind: 'trial', version: '3.0.0', previousVersion: '2.0.1' });
      await writeFile(image.path, image.bytes);
    });

    it('refuses an image that does not read back as its hash, and leaves the boot loader alone', async () => {
      await freshMedia();
      const installer = bootloaderInstaller(media);
      await media.bootLoaderStart();
      await installer.boot();
      const before = await media.variables();
      await assert.rejects(
        installer.install({ version: '2.0.0', sha256: 'f'.repeat(64), filePath: image.path }),
        /reads back sha256/,
      );
      const afterwards = await media.variables();
      assert.equal(afterwards.get('edgeflow_slot'), before.get('edgeflow_slot'));
      assert.equal(afterwards.get('upgrade_available'), undefined);
      assert.equal(await media.bootLoaderStart(), 'a');
    });

    it('refuses an image larger than the partition', async () => {
      await freshMedia();
      const installer = bootloaderInstaller(media);
      await media.bootLoaderStart();
      await installer.boot();
      const big = join(media.dir, 'big.bin');
      await writeFile(big, Buffer.alloc(partitionBytes + 1));
      await assert.rejects(installer.install({ version: '2.0.0', sha256: 'x', filePath: big }), /the image needs/);
    });

    it('abandons an installed image when the agent restarts without the machine rebooting', async () => {
      await freshMedia();
      const installer = bootloaderInstaller(media);
      await media.bootLoaderStart();
      await installer.boot();
      await installer.install({ version: '2.0.0', sha256: image.sha256, filePath: image.path });
      // No boot loader turn: the agent process alone restarted (crash, systemctl restart).
      assert.deepEqual(await installer.boot(), { kind: 'reverted', version: '1.0.0', abandonedVersion: '2.0.0' });
      assert.equal(await media.bootLoaderStart(), 'a', 'the next real reboot does not try the abandoned image');
    });
  });
}

describe('a trial boot recognised by the boot id, with the counter outside the environment', () => {
  /** U-Boot media counting outside the environment, booted on A, with 2.0.0 installed to B. */
  async function armedWithCounterOutside(options: { slotOnCommandLine?: boolean }) {
    const media = await createBootMedia('uboot', partitionBytes, factory, { counter: 'outside', ...options });
    const image = randomBytes(200_000);
    const path = join(media.dir, 'update.bin');
    await writeFile(path, image);
    const installer = bootloaderInstaller(media);
    await media.bootLoaderStart();
    await installer.boot();
    await installer.install({ version: '2.0.0', sha256: sha256(image), filePath: path });
    return { media, image, path, installer };
  }

  // CONFIG_BOOTCOUNT_RAM (or a register): U-Boot counts, but `bootcount` in the environment stays 0.
  for (const slotOnCommandLine of [true, false]) {
    const how = slotOnCommandLine ? 'the slot on the kernel command line' : 'no slot on the command line';
    it(`reboot into the new slot is the trial (${how}); an agent restart alone is not`, async () => {
      const { media, image, path, installer } = await armedWithCounterOutside({ slotOnCommandLine });
      try {
        assert.equal(await media.bootLoaderStart(), 'b');
        assert.equal((await media.variables()).get('bootcount'), '0', 'the environment never counts');
        assert.deepEqual(await installer.boot(), { kind: 'trial', version: '2.0.0', previousVersion: '1.0.0' });
        assert.equal(installer.currentSlot(), 'b');
        // The agent restarts during the health check, same boot: still the trial, not a fallback.
        const restarted = bootloaderInstaller(media);
        assert.deepEqual(await restarted.boot(), { kind: 'trial', version: '2.0.0', previousVersion: '1.0.0' });
        await restarted.commit();
        assert.equal(await media.bootLoaderStart(), 'b');
        const committed = bootloaderInstaller(media);
        assert.deepEqual(await committed.boot(), { kind: 'normal', version: '2.0.0' });

        // The next install, then an agent restart without reboot: abandoned, the next boot stays on B.
        await committed.install({ version: '3.0.0', sha256: sha256(image), filePath: path });
        assert.deepEqual(await bootloaderInstaller(media).boot(), {
          kind: 'reverted',
          version: '2.0.0',
          abandonedVersion: '3.0.0',
        });
        assert.equal(await media.bootLoaderStart(), 'b');
      } finally {
        await media.remove();
      }
    });
  }

  it('a boot past bootlimit that the boot loader fell back from is reported as reverted', async () => {
    const { media, installer } = await armedWithCounterOutside({});
    try {
      for (let attempt = 1; attempt <= 3; attempt++) assert.equal(await media.bootLoaderStart(), 'b');
      assert.equal(await media.bootLoaderStart(), 'a');
      assert.deepEqual(await installer.boot(), { kind: 'reverted', version: '1.0.0', abandonedVersion: '2.0.0' });
      assert.equal(installer.currentSlot(), 'a');
    } finally {
      await media.remove();
    }
  });
});
