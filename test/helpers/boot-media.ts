/**
 * File-backed boot media for the boot-loader installer: two partition files and a real boot
 * loader environment (U-Boot's, redundant, made with `mkenvimage` and read with libubootenv's
 * `fw_printenv`; or GRUB's 1 KiB block made with `grub-editenv`).
 *
 * No boot loader runs here. `bootLoaderStart()` stands in for it. On U-Boot media it runs the
 * boot script the package ships (packaging/boot/boot.cmd) through the hush interpreter of
 * test/helpers/uboot-script.ts against the real environment, and the "kernel" gets the command
 * line that script built. On GRUB media (whose shipped script grub-emu runs in
 * test/unit/agent-grub-script.test.ts), and for a U-Boot counting outside the environment, it
 * applies the same rules in TypeScript: while `upgrade_available` is 1, count the boot, and once
 * the count exceeds `bootlimit` switch `edgeflow_slot` back and clear `upgrade_available`. Each
 * start renews the boot id. Tests then check that the slot it boots holds a whole image.
 */
import { execFile } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { type BootEnvironmentStore, GrubEnvironment, UBootEnvironment } from '../../src/agent/boot-environment.ts';
import { type BootIdentitySources, kernelBootIdentity } from '../../src/agent/boot-identity.ts';
import { BootloaderInstaller, type BootSlot, BootVariables } from '../../src/agent/bootloader-installer.ts';
import type { Installer, StepHook } from '../../src/agent/installer.ts';
import { runUBootScript } from './uboot-script.ts';

/** The U-Boot boot script the package ships, which `bootLoaderStart()` runs on U-Boot media. */
export const bootCmdPath = fileURLToPath(new URL('../../packaging/boot/boot.cmd', import.meta.url));
/** The initial U-Boot environment the package ships (also the GRUB block's first variables here). */
export const initialEnvironmentPath = fileURLToPath(new URL('../../packaging/boot/uboot-env.txt', import.meta.url));
/** What `part uuid` answers on the test board, and the partition numbers the script defaults to. */
const boardPartUuids = { 'mmc 0:2': '0ac0ffee-02', 'mmc 0:3': '0ac0ffee-03' };

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
  /**
   * The "kernel" of this machine: a boot id that every `bootLoaderStart()` renews, and a command
   * line naming the slot booted (`edgeflow.slot=`, as the shipped boot files pass it).
   */
  proc: Required<BootIdentitySources>;
  /** What the boot loader does at power-on; returns the slot it boots. */
  bootLoaderStart(): Promise<BootSlot>;
  /** sha256 of the first `length` bytes of a slot's partition. */
  slotHash(slot: BootSlot, length: number): Promise<string>;
  variables(): Promise<Map<string, string>>;
  boots: number;
  remove(): Promise<void>;
}

export const envSizeBytes = 0x4000;

export interface BootMediaOptions {
  /**
   * `environment` (default): `bootcount` lives in the environment (U-Boot's CONFIG_BOOTCOUNT_ENV,
   * the GRUB script). `outside`: the boot loader counts elsewhere (CONFIG_BOOTCOUNT_RAM, a
   * register) and the environment's `bootcount` never moves.
   */
  counter?: 'environment' | 'outside';
  /** Whether the boot loader puts `edgeflow.slot=` on the kernel command line. Default true. */
  slotOnCommandLine?: boolean;
}

/**
 * Partitions of `partitionBytes` each; slot A holds the factory image, slot B zeros. The
 * environment starts as an image build would leave it: boot slot A, bootlimit 3.
 */
export async function createBootMedia(
  kind: BootLoaderKind,
  partitionBytes: number,
  factoryImage: Buffer,
  options: BootMediaOptions = {},
): Promise<BootMedia> {
  const dir = await mkdtemp(join(tmpdir(), `edgeflow-${kind}-`));
  const proc = { bootIdFile: join(dir, 'boot_id'), cmdlineFile: join(dir, 'cmdline') };
  const outsideCounter = join(dir, 'bootcount-outside');
  // The machine is running when the test starts: a boot id of the power-on before.
  await writeFile(proc.bootIdFile, `${randomUUID()}\n`);
  const slots = { a: join(dir, 'rootfs-a.img'), b: join(dir, 'rootfs-b.img') };
  for (const path of Object.values(slots)) {
    const handle = await open(path, 'w');
    await handle.truncate(partitionBytes);
    await handle.close();
  }
  await writeFile(slots.a, factoryImage, { flag: 'r+' });

  const fwEnvConfig = join(dir, 'fw_env.config');
  const grubEnvFile = join(dir, 'grubenv');
  // The initial environment the package ships (what an image build bakes in): edgeflow_slot=a, bootlimit=3.
  const initialText = await readFile(initialEnvironmentPath, 'utf8');
  const initial = Object.fromEntries(
    initialText
      .trim()
      .split('\n')
      .map((line) => line.split('=', 2)),
  );
  if (kind === 'uboot') {
    const copies = [join(dir, 'uboot-env-0.bin'), join(dir, 'uboot-env-1.bin')];
    // -r: a redundant environment, two copies with a flag byte, as on the device.
    for (const copy of copies) {
      await run('mkenvimage', ['-r', '-s', String(envSizeBytes), '-o', copy, initialEnvironmentPath]);
    }
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
    proc,
    boots: 0,
    variables: () => environment.read(),
    async bootLoaderStart() {
      media.boots += 1;
      const onCommandLine = options.slotOnCommandLine ?? true;
      if (kind === 'uboot' && options.counter !== 'outside') {
        // The shipped boot.cmd itself, interpreted against the real environment.
        const run = await runUBootScript(await readFile(bootCmdPath, 'utf8'), environment, {
          partUuids: boardPartUuids,
          builtins: { kernel_addr_r: '0x80000', fdt_addr: '0x2eff2e00' },
        });
        if (run.bootargs === undefined) throw new Error(`boot.cmd did not boot: ${run.output.join(' | ')}`);
        const booted = run.loads.at(-1)?.startsWith('mmc 0:3') ? 'b' : 'a';
        await writeFile(proc.bootIdFile, `${randomUUID()}\n`);
        const cmdline = onCommandLine ? run.bootargs : run.bootargs.replace(/\s*edgeflow\.slot=\S+/, '');
        await writeFile(proc.cmdlineFile, `${cmdline}\n`);
        return booted;
      }
      const variables = await environment.read();
      let slot = (variables.get(BootVariables.slot) ?? 'a') as BootSlot;
      const outside = options.counter === 'outside';
      const counted = outside
        ? Number((await readFile(outsideCounter, 'utf8').catch(() => '0')).trim())
        : Number(variables.get(BootVariables.bootCount) ?? '0');
      const setCount = async (count: number, changes: Record<string, string> = {}) => {
        if (outside) await writeFile(outsideCounter, String(count));
        const inEnvironment: Record<string, string> = outside ? {} : { [BootVariables.bootCount]: String(count) };
        if (Object.keys(changes).length + Object.keys(inEnvironment).length > 0) {
          await environment.update({ ...changes, ...inEnvironment });
        }
      };
      if (variables.get(BootVariables.upgradeAvailable) === '1') {
        const bootCount = counted + 1;
        const bootLimit = Number(variables.get(BootVariables.bootLimit) ?? '3');
        if (bootCount > bootLimit) {
          // altbootcmd: the new slot had its chances.
          slot = slot === 'a' ? 'b' : 'a';
          await setCount(0, { [BootVariables.slot]: slot, [BootVariables.upgradeAvailable]: '0' });
        } else {
          await setCount(bootCount);
        }
      } else if (outside && counted !== 0) {
        // A counter outside the environment is reset by the boot that finds nothing on trial.
        await setCount(0);
      }
      // The kernel starts: a new boot id, and the slot on its command line.
      await writeFile(proc.bootIdFile, `${randomUUID()}\n`);
      await writeFile(proc.cmdlineFile, `console=ttyS0 rootwait${onCommandLine ? ` edgeflow.slot=${slot}` : ''}\n`);
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
  options: { initialVersion?: string; bootLimit?: number; stepHook?: StepHook } = {},
): BootloaderInstaller {
  return new BootloaderInstaller({
    environment: media.environment,
    slots: media.slots,
    initialVersion: options.initialVersion ?? '1.0.0',
    bootLimit: options.bootLimit,
    bootIdentity: kernelBootIdentity(media.proc),
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
    artifactKinds: installer.artifactKinds,
    currentVersion: () => installer.currentVersion(),
    currentSlot: () => installer.currentSlot?.(),
    install: (image) => installer.install(image),
    commit: () => installer.commit(),
    revert: () => installer.revert(),
  };
}
