import { copyFile, mkdir, open, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { RAW_IMAGE_KINDS } from '../protocol/artifact.ts';
import { fsyncDirectory, readJsonIfExists, writeJsonAtomic } from './atomic-file.ts';
import type { BootState, Installer, InstallImage, RevertOutcome, StepHook } from './installer.ts';

export type Slot = 'a' | 'b';

/** What a U-Boot/GRUB environment holds for A/B updates, as a file. */
export interface BootEnvironment {
  active: Slot;
  pending: Slot | null;
  /** Boots attempted of the pending slot; counted before each attempt so a hang still counts. */
  tries: number;
  maxTries: number;
}

export interface SlotMeta {
  version: string;
  sha256: string;
}

export interface AbInstallerOptions {
  dataDir: string;
  /** The factory image's version, running from slot A before any update was installed. */
  initialVersion: string;
  maxTries?: number;
  stepHook?: StepHook;
}

const otherSlot = (slot: Slot): Slot => (slot === 'a' ? 'b' : 'a');

/**
 * A/B slots under `<dataDir>/slots/{a,b}/` and a `boot.json` playing the bootloader environment.
 * The image goes into the inactive slot, which is only marked pending once it is completely on
 * disk, so the slot the device runs from is never written.
 */
export class AbInstaller implements Installer {
  readonly artifactKinds = RAW_IMAGE_KINDS;
  private readonly slotsDir: string;
  private readonly bootFile: string;
  private environment: BootEnvironment;
  private readonly versions: Partial<Record<Slot, string>> = {};
  private onTrial = false;

  constructor(private readonly options: AbInstallerOptions) {
    this.slotsDir = join(options.dataDir, 'slots');
    this.bootFile = join(options.dataDir, 'boot.json');
    this.environment = { active: 'a', pending: null, tries: 0, maxTries: options.maxTries ?? 3 };
  }

  get bootEnvironment(): Readonly<BootEnvironment> {
    return this.environment;
  }

  async boot(): Promise<BootState> {
    await mkdir(this.slotsDir, { recursive: true });
    const stored = (await readJsonIfExists(this.bootFile)) as BootEnvironment | undefined;
    if (stored) this.environment = { ...stored, maxTries: this.options.maxTries ?? stored.maxTries };
    for (const slot of ['a', 'b'] as const) {
      const meta = (await readJsonIfExists(join(this.slotsDir, slot, 'meta.json'))) as SlotMeta | undefined;
      const version = meta?.version ?? (slot === 'a' ? this.options.initialVersion : undefined);
      if (version === undefined) delete this.versions[slot];
      else this.versions[slot] = version;
    }
    this.onTrial = false;
    const { active, pending } = this.environment;
    const activeVersion = this.versions[active] ?? this.options.initialVersion;
    if (pending === null) return { kind: 'normal', version: activeVersion };

    await this.saveEnvironment({ ...this.environment, tries: this.environment.tries + 1 });
    await this.options.stepHook?.('boot:tries-persisted');
    const pendingVersion = this.versions[pending];
    if (this.environment.tries > this.environment.maxTries || pendingVersion === undefined) {
      await this.saveEnvironment({ ...this.environment, pending: null, tries: 0 });
      return { kind: 'reverted', version: activeVersion, abandonedVersion: pendingVersion ?? 'unknown' };
    }
    this.onTrial = true;
    return { kind: 'trial', version: pendingVersion, previousVersion: activeVersion };
  }

  currentVersion(): string {
    return this.versions[this.currentSlot()] ?? this.options.initialVersion;
  }

  currentSlot(): Slot {
    const { active, pending } = this.environment;
    return this.onTrial && pending !== null ? pending : active;
  }

  async install(image: InstallImage): Promise<void> {
    if (!image.filePath) throw new Error('the A/B installer needs the image on disk');
    if (this.onTrial) throw new Error('a trial boot must be committed or reverted before the next install');
    const target = otherSlot(this.environment.active);
    const slotDir = join(this.slotsDir, target);
    await mkdir(slotDir, { recursive: true });
    // Unmark first: a slot about to be overwritten must never be booted half-written.
    if (this.environment.pending !== null) await this.saveEnvironment({ ...this.environment, pending: null, tries: 0 });

    const firmwarePath = join(slotDir, 'firmware.bin');
    const temporaryPath = `${firmwarePath}.tmp`;
    await copyFile(image.filePath, temporaryPath);
    const handle = await open(temporaryPath, 'r+');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporaryPath, firmwarePath);
    await fsyncDirectory(slotDir);
    await this.options.stepHook?.('install:image-written');

    await writeJsonAtomic(join(slotDir, 'meta.json'), {
      version: image.version,
      sha256: image.sha256,
    } satisfies SlotMeta);
    this.versions[target] = image.version;
    await this.options.stepHook?.('install:meta-written');

    await this.saveEnvironment({ ...this.environment, pending: target, tries: 0 });
    await this.options.stepHook?.('install:pending-marked');
  }

  async commit(): Promise<void> {
    const { pending } = this.environment;
    if (pending === null) return;
    await this.saveEnvironment({ ...this.environment, active: pending, pending: null, tries: 0 });
    this.onTrial = false;
  }

  async revert(): Promise<RevertOutcome> {
    // The trial version stays the one reported until the boot environment no longer names it:
    // a report of the previous version must never precede the write that makes it true.
    if (this.environment.pending !== null) await this.saveEnvironment({ ...this.environment, pending: null, tries: 0 });
    this.onTrial = false;
    return 'done';
  }

  private async saveEnvironment(environment: BootEnvironment): Promise<void> {
    await writeJsonAtomic(this.bootFile, environment);
    this.environment = environment;
  }
}
