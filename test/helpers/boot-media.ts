/**
 * File-backed boot media for the boot-loader installer: two partition files and a real boot
 * loader environment (U-Boot's, redundant, made with `mkenvimage` and read with libubootenv's
 * `fw_printenv`; or GRUB's 1 KiB block made with `grub-editenv`).
 *
 * No boot loader runs here. `bootLoaderStart()` stands in for it: it reads the same environment
 * with the same tools and applies the boot script docs/devices.md gives for U-Boot and GRUB —
 * while `upgrade_available` is 1, count the boot in `bootcount`, and once it exceeds `bootlimit`
 * switch `edgeflow_slot` back and clear `upgrade_available` (U-Boot's altbootcmd) — then
 * "boots" `edgeflow_slot`. Tests then check that the slot it boots holds a whole image.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { type BootEnvironmentStore, GrubEnvironment, UBootEnvironment } from '../../src/agent/boot-environment.ts';
import { BootloaderInstaller, type BootSlot, BootVariables } from '../../src/agent/bootloader-installer.ts';
import type { Installer, StepHook } from '../../src/agent/installer.ts';

const run = promisify(execFile);

export type BootLoaderKind = 'uboot' | 'grub';

export interface BootMedia {
  kind: BootLoaderKind;
  dir: string;
  slots: Record<BootSlot, string>;
  /** For U-Boot: the fw_env.config naming both copies of the environment. */
  fwEnvConfig: string;
  grubEnvFile: string;
  environment: BootEnvironmentStore;
  /** What the boot loader does at power-on; returns the slot it boots. */
  bootLoaderStart(): Promise<BootSlot>;
  /** sha256 of the first `length` bytes of a slot's partition. */
  slotHash(slot: BootSlot, length: number): Promise<string>;
  variables(): Promise<Map<string, string>>;
  boots: number;
  remove(): Promise<void>;
}

export const envSizeBytes = 0x4000;

/**
 * Partitions of `partitionBytes` each; slot A holds the factory image, slot B zeros. The
 * environment starts as an image build would leave it: boot slot A, bootlimit 3.
 */
export async function createBootMedia(
  kind: BootLoaderKind,
  partitionBytes: number,
  factoryImage: Buffer,
): Promise<BootMedia> {
  const dir = await mkdtemp(join(tmpdir(), `edgeflow-${kind}-`));
  const slots = { a: join(dir, 'rootfs-a.img'), b: join(dir, 'rootfs-b.img') };
  for (const path of Object.values(slots)) {
    const handle = await open(path, 'w');
    await handle.truncate(partitionBytes);
    await handle.close();
  }
  await writeFile(slots.a, factoryImage, { flag: 'r+' });

  const fwEnvConfig = join(dir, 'fw_env.config');
  const grubEnvFile = join(dir, 'grubenv');
  const initial = { [BootVariables.slot]: 'a', [BootVariables.bootLimit]: '3' };
  if (kind === 'uboot') {
    const text = join(dir, 'uboot-env.txt');
    await writeFile(
      text,
      `${Object.entries(initial)
        .map(([name, value]) => `${name}=${value}`)
        .join('\n')}\n`,
    );
    const copies = [join(dir, 'uboot-env-0.bin'), join(dir, 'uboot-env-1.bin')];
    // -r: a redundant environment, two copies with a flag byte, as on the device.
    for (const copy of copies) await run('mkenvimage', ['-r', '-s', String(envSizeBytes), '-o', copy, text]);
    await writeFile(fwEnvConfig, copies.map((copy) => `${copy} 0x0 0x${envSizeBytes.toString(16)}\n`).join(''));
  } else {
    await run('grub-editenv', [grubEnvFile, 'create']);
    await run('grub-editenv', [grubEnvFile, 'set', ...Object.entries(initial).map(([n, v]) => `${n}=${v}`)]);
  }
  const environment = kind === 'uboot' ? new UBootEnvironment(fwEnvConfig) : new GrubEnvironment(grubEnvFile);

  const media: BootMedia = {
    kind,
    dir,
    slots,
    fwEnvConfig,
    grubEnvFile,
    environment,
    boots: 0,
    variables: () => environment.read(),
    async bootLoaderStart() {
      media.boots += 1;
      const variables = await environment.read();
      let slot = (variables.get(BootVariables.slot) ?? 'a') as BootSlot;
      if (variables.get(BootVariables.upgradeAvailable) === '1') {
        const bootCount = Number(variables.get(BootVariables.bootCount) ?? '0') + 1;
        const bootLimit = Number(variables.get(BootVariables.bootLimit) ?? '3');
        if (bootCount > bootLimit) {
          // altbootcmd: the new slot had its chances.
          slot = slot === 'a' ? 'b' : 'a';
          await environment.update({
            [BootVariables.slot]: slot,
            [BootVariables.upgradeAvailable]: '0',
            [BootVariables.bootCount]: '0',
          });
        } else {
          await environment.update({ [BootVariables.bootCount]: String(bootCount) });
        }
      }
      return slot;
    },
    async slotHash(slot, length) {
      const handle = await open(slots[slot], 'r');
      try {
        const buffer = Buffer.alloc(length);
        await handle.read(buffer, 0, length, 0);
        return createHash('sha256').update(buffer).digest('hex');
      } finally {
        await handle.close();
      }
    },
    remove: () => rm(dir, { recursive: true, force: true }),
  };
  return media;
}

/** The real installer on these media. */
export function bootloaderInstaller(
  media: BootMedia,
  options: { initialVersion?: string; stepHook?: StepHook } = {},
): BootloaderInstaller {
  return new BootloaderInstaller({
    environment: media.environment,
    slots: media.slots,
    initialVersion: options.initialVersion ?? '1.0.0',
    stepHook: options.stepHook,
  });
}

/**
 * The installer as an agent sees it on a device that really reboots: every (re)start of the
 * agent — its soft restart included — begins with the boot loader's turn.
 */
export function bootedByLoader(media: BootMedia, installer: Installer): Installer {
  return {
    boot: async () => {
      await media.bootLoaderStart();
      return installer.boot();
    },
    currentVersion: () => installer.currentVersion(),
    install: (image) => installer.install(image),
    commit: () => installer.commit(),
    revert: () => installer.revert(),
  };
}
