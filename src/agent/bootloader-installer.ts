import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { type ArtifactKind, RAW_IMAGE_KINDS } from '../protocol/artifact.ts';
import type { BootEnvironmentStore } from './boot-environment.ts';
import { type BootIdentityReader, kernelBootIdentity } from './boot-identity.ts';
import type { BootState, Installer, InstallImage, RevertOutcome, StepHook } from './installer.ts';

export type BootSlot = 'a' | 'b';

/**
 * The variables shared with the boot loader (docs/devices.md has the U-Boot and GRUB scripts):
 * the boot loader boots `edgeflow_slot`; while `upgrade_available` is 1 it counts each boot in
 * `bootcount` and, once that exceeds `bootlimit`, switches `edgeflow_slot` back and clears
 * `upgrade_available` (U-Boot's `altbootcmd`). The rest only the agent reads.
 */
export const BootVariables = {
  slot: 'edgeflow_slot',
  upgradeAvailable: 'upgrade_available',
  bootCount: 'bootcount',
  bootLimit: 'bootlimit',
  /** The slot the agent last installed to, until it is committed or abandoned. */
  trialSlot: 'edgeflow_trial',
  /** The kernel's boot id when the trial was armed: a start with the same id is no reboot. */
  installBootId: 'edgeflow_install_boot',
  version: (slot: BootSlot) => `edgeflow_version_${slot}`,
} as const;

/** Puts an image into a slot through an updater, instead of the raw write; says which artifacts it takes. */
export type SlotWriter = ((imagePath: string, slot: BootSlot, image: InstallImage) => Promise<void>) & {
  readonly artifactKinds: readonly ArtifactKind[];
};

export interface BootloaderInstallerOptions {
  environment: BootEnvironmentStore;
  /** The partitions (block devices, or files in tests) holding each slot's root file system. */
  slots?: Record<BootSlot, string>;
  /** Instead of the raw write and read-back, e.g. `swupdate -i` with the slot's selection. */
  writeSlot?: SlotWriter;
  /** The factory image's version, for a slot the agent never wrote. */
  initialVersion: string;
  /** Boots of a new image the boot loader tries before it falls back. Default 3. */
  bootLimit?: number;
  /** Which boot this is and which slot it started (default: /proc's boot id and command line). */
  bootIdentity?: BootIdentityReader;
  stepHook?: StepHook;
}

const otherSlot = (slot: BootSlot): BootSlot => (slot === 'a' ? 'b' : 'a');
const copyChunkBytes = 1024 * 1024;

/**
 * A/B updates with a real boot loader (U-Boot or GRUB): the image goes onto the partition the
 * device does not run from, is read back and hashed, and only then does one environment write
 * make the boot loader try it — the classic `upgrade_available`/`bootcount`/`bootlimit` scheme.
 * The boot loader, not the agent, counts the attempts and falls back, so a new image that never
 * reaches user space still comes back to the old one.
 */
export class BootloaderInstaller implements Installer {
  readonly artifactKinds: readonly ArtifactKind[];
  private variables = new Map<string, string>();
  private onTrial = false;
  /** The slot booted at this start: the environment may already name the next one. */
  private running: BootSlot = 'a';
  private bootId: string | undefined;

  private readonly bootIdentity: BootIdentityReader;

  constructor(private readonly options: BootloaderInstallerOptions) {
    this.artifactKinds = options.writeSlot?.artifactKinds ?? RAW_IMAGE_KINDS;
    this.bootIdentity = options.bootIdentity ?? kernelBootIdentity();
  }

  async boot(): Promise<BootState> {
    const { environment } = this.options;
    const [variables, identity] = await Promise.all([environment.read(), this.bootIdentity.read()]);
    this.variables = variables;
    this.bootId = identity.bootId;
    this.onTrial = false;
    const booted = identity.slot === 'a' || identity.slot === 'b' ? identity.slot : undefined;
    const named = this.slotVariable(BootVariables.slot) ?? 'a';
    const trial = this.slotVariable(BootVariables.trialSlot);
    this.running = booted ?? named;
    if (trial === undefined) return { kind: 'normal', version: this.versionOf(this.running) };

    const upgradeAvailable = this.variables.get(BootVariables.upgradeAvailable) === '1';
    const armedIn = this.variables.get(BootVariables.installBootId);
    // The kernel's boot id tells a reboot from an agent restart; the counter only where no id
    // was recorded (an environment armed by an older agent, or a kernel without one).
    const rebooted =
      armedIn !== undefined && identity.bootId !== undefined
        ? armedIn !== identity.bootId
        : Number(this.variables.get(BootVariables.bootCount) ?? '0') > 0;
    // What the boot loader started: the command line says it; else the environment, which the
    // boot loader leaves naming the trial slot with upgrade_available set while it still tries it.
    const runsTrial = booted !== undefined ? booted === trial : upgradeAvailable && named === trial;
    if (rebooted && runsTrial) {
      this.running = trial;
      this.onTrial = true;
      return { kind: 'trial', version: this.versionOf(trial), previousVersion: this.versionOf(otherSlot(trial)) };
    }
    // Either the boot loader fell back, or the agent restarted without the machine rebooting:
    // the new image is not running, and is abandoned rather than left to surprise the next
    // unrelated reboot.
    const abandonedVersion = this.versionOf(trial);
    const previous = otherSlot(trial);
    await this.write({
      [BootVariables.slot]: previous,
      [BootVariables.upgradeAvailable]: '0',
      [BootVariables.bootCount]: '0',
      [BootVariables.trialSlot]: '',
      [BootVariables.installBootId]: '',
    });
    this.running = previous;
    return { kind: 'reverted', version: this.versionOf(previous), abandonedVersion };
  }

  /** The slot running now (`a`/`b`), for what the device reports. */
  currentSlot(): BootSlot {
    return this.running;
  }

  currentVersion(): string {
    return this.versionOf(this.running);
  }

  async install(image: InstallImage): Promise<void> {
    if (!image.filePath) throw new Error('the boot-loader installer needs the image on disk');
    if (this.onTrial) throw new Error('a trial boot must be committed or reverted before the next install');
    const target = otherSlot(this.running);
    // The target slot's version is forgotten first: from here on it holds no known image.
    if (this.variables.get(BootVariables.version(target)) !== undefined) {
      await this.write({ [BootVariables.version(target)]: '' });
    }
    if (this.options.writeSlot) {
      await this.options.writeSlot(image.filePath, target, image);
      await this.options.stepHook?.('install:image-written');
    } else {
      const partition = this.options.slots?.[target];
      if (!partition) throw new Error(`no partition configured for slot ${target}`);
      const size = await writeImage(image.filePath, partition);
      await this.options.stepHook?.('install:image-written');
      const written = await hashPrefix(partition, size);
      if (written !== image.sha256) {
        throw new Error(`${partition} reads back sha256 ${written}, expected ${image.sha256}: the write did not stick`);
      }
      await this.options.stepHook?.('install:read-back');
    }

    await this.write({
      [BootVariables.version(target)]: image.version,
      [BootVariables.slot]: target,
      [BootVariables.trialSlot]: target,
      [BootVariables.upgradeAvailable]: '1',
      [BootVariables.bootCount]: '0',
      [BootVariables.bootLimit]: String(this.options.bootLimit ?? 3),
      [BootVariables.installBootId]: this.bootId ?? '',
    });
    await this.options.stepHook?.('install:pending-marked');
  }

  async commit(): Promise<void> {
    if (this.slotVariable(BootVariables.trialSlot) === undefined) return;
    await this.write({
      [BootVariables.upgradeAvailable]: '0',
      [BootVariables.bootCount]: '0',
      [BootVariables.trialSlot]: '',
      [BootVariables.installBootId]: '',
    });
    this.onTrial = false;
  }

  async revert(): Promise<RevertOutcome> {
    const trial = this.slotVariable(BootVariables.trialSlot);
    const wasRunningTrial = this.onTrial;
    if (trial === undefined) {
      this.onTrial = false;
      return 'done';
    }
    await this.write({
      [BootVariables.slot]: otherSlot(trial),
      [BootVariables.upgradeAvailable]: '0',
      [BootVariables.bootCount]: '0',
      [BootVariables.trialSlot]: '',
      [BootVariables.installBootId]: '',
    });
    // Only once the environment says so: a power cut before this boots the trial again.
    this.onTrial = false;
    // The abandoned image is still the one in memory: only a reboot brings the previous one back.
    return wasRunningTrial ? 'reboot' : 'done';
  }

  private slotVariable(name: string): BootSlot | undefined {
    const value = this.variables.get(name);
    if (value === undefined) return undefined;
    if (value !== 'a' && value !== 'b') throw new Error(`${this.options.environment.description}: ${name}=${value}`);
    return value;
  }

  private versionOf(slot: BootSlot): string {
    return this.variables.get(BootVariables.version(slot)) ?? this.options.initialVersion;
  }

  private async write(changes: Record<string, string>): Promise<void> {
    await this.options.environment.update(changes);
    for (const [name, value] of Object.entries(changes)) {
      if (value === '') this.variables.delete(name);
      else this.variables.set(name, value);
    }
  }
}

/** Copies the image onto the partition and flushes it; returns the image's size. */
async function writeImage(imagePath: string, partition: string): Promise<number> {
  const source = await open(imagePath, 'r');
  // r+ : a block device cannot be created or truncated, and a file-backed test partition must not be.
  const target = await open(partition, 'r+');
  try {
    const { size } = await source.stat();
    const targetStat = await target.stat();
    if (targetStat.isFile() && targetStat.size < size) {
      throw new Error(`${partition} holds ${targetStat.size} bytes, the image needs ${size}`);
    }
    const buffer = Buffer.allocUnsafe(copyChunkBytes);
    let position = 0;
    while (position < size) {
      const { bytesRead } = await source.read(buffer, 0, Math.min(copyChunkBytes, size - position), position);
      if (bytesRead === 0) throw new Error(`${imagePath} ended at ${position} of ${size} bytes`);
      let written = 0;
      while (written < bytesRead) {
        const result = await target.write(buffer, written, bytesRead - written, position + written);
        written += result.bytesWritten;
      }
      position += bytesRead;
    }
    await target.sync();
    return size;
  } finally {
    await Promise.all([source.close(), target.close()]);
  }
}

async function hashPrefix(path: string, length: number): Promise<string> {
  const hash = createHash('sha256');
  if (length === 0) return hash.digest('hex');
  for await (const chunk of createReadStream(path, { start: 0, end: length - 1 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
