import { join } from 'node:path';
import semver from 'semver';
import type { ArtifactKind } from '../protocol/artifact.ts';
import { readJsonIfExists, writeJsonAtomic } from './atomic-file.ts';
import {
  ArtifactMismatchError,
  type BootState,
  type Installer,
  type InstallImage,
  type RevertOutcome,
  type StepHook,
} from './installer.ts';
import { describeFailure, runProgram } from './shell.ts';

export interface RaucInstallerOptions {
  /** Where the agent remembers an install across the reboot. */
  dataDir: string;
  /** The version of a slot RAUC never installed a bundle to (the factory image). */
  initialVersion: string;
  /** Extra arguments before every rauc command, e.g. `['--conf=/etc/rauc/system.conf']`. */
  raucArgs?: string[];
  /** Added to the environment of every rauc command (e.g. a D-Bus address). */
  env?: Record<string, string>;
  timeoutMs?: number;
  stepHook?: StepHook;
}

interface RaucSlot {
  name: string;
  bootname: string | undefined;
  state: string;
  version: string | undefined;
}

interface BundleInfo {
  compatible?: string | null;
  version?: string | null;
}

interface PendingBundle {
  /** `installing` until `rauc install` returned. */
  stage: 'installing' | 'installed';
  version: string;
  previousVersion: string;
  /** The slot booted when the bundle was installed: booting another one means the trial. */
  fromSlot: string;
}

/**
 * Hands the firmware (a RAUC bundle, `.raucb`) to the RAUC service: `rauc install` writes the
 * other slot group and makes it primary; the boot loader integration RAUC is configured with
 * counts the attempts and falls back. Commit is `rauc status mark-good booted`, reverting a trial
 * `mark-bad booted` and a reboot. Slot versions are the bundles' as RAUC records them.
 */
export class RaucInstaller implements Installer {
  readonly artifactKinds: readonly ArtifactKind[] = ['raucb'];
  private readonly markerFile: string;
  private booted: RaucSlot | undefined;
  /** The system's `compatible` (system.conf), as `rauc status` says it. */
  private compatible: string | undefined;
  private onTrial = false;

  constructor(private readonly options: RaucInstallerOptions) {
    this.markerFile = join(options.dataDir, 'rauc-installer.json');
  }

  async boot(): Promise<BootState> {
    this.onTrial = false;
    this.booted = await this.bootedSlot();
    const version = this.currentVersion();
    const pending = (await readJsonIfExists(this.markerFile)) as PendingBundle | null | undefined;
    if (!pending) return { kind: 'normal', version };
    // Booted from another slot than the one the bundle was installed from: RAUC switched, and the
    // boot loader runs the new slot on trial. Decided by the slot, never by a version string.
    if (this.booted.name !== pending.fromSlot) {
      this.onTrial = true;
      return { kind: 'trial', version, previousVersion: pending.previousVersion };
    }
    // Not booted into the new bundle: the boot loader fell back, or the power went before the
    // reboot. Either way the running slot stays the one to boot.
    await this.rauc(['status', 'mark-active', 'booted']);
    await this.savePending(undefined);
    if (pending.stage === 'installing') return { kind: 'normal', version };
    return { kind: 'reverted', version, abandonedVersion: pending.version };
  }

  currentVersion(): string {
    return this.booted?.version ?? this.options.initialVersion;
  }

  currentSlot(): string | undefined {
    return this.booted?.bootname ?? this.booted?.name;
  }

  async install(image: InstallImage): Promise<void> {
    if (!image.filePath) throw new Error('the RAUC installer needs the bundle on disk');
    if (this.onTrial) throw new Error('a trial boot must be committed or reverted before the next install');
    const booted = this.booted ?? (await this.bootedSlot());
    await this.checkBundle(image.filePath, image.version);
    const pending: PendingBundle = {
      stage: 'installing',
      version: image.version,
      previousVersion: this.currentVersion(),
      fromSlot: booted.name,
    };
    await this.savePending(pending);
    await this.rauc(['install', image.filePath]);
    await this.options.stepHook?.('install:rauc-installed');
    await this.savePending({ ...pending, stage: 'installed' });
  }

  async commit(): Promise<void> {
    await this.rauc(['status', 'mark-good', 'booted']);
    await this.savePending(undefined);
    this.onTrial = false;
  }

  async revert(): Promise<RevertOutcome> {
    const wasOnTrial = this.onTrial;
    // On trial the running slot is the bad one; otherwise the running slot is the one to keep.
    await this.rauc(['status', wasOnTrial ? 'mark-bad' : 'mark-active', 'booted']);
    await this.savePending(undefined);
    // Only once RAUC and the saved state say so (as the A/B installers do).
    this.onTrial = false;
    return wasOnTrial ? 'reboot' : 'done';
  }

  /**
   * The bundle's own manifest (`rauc info`, signature left to `rauc install`) must name the
   * version the server offers and this system's compatible: a bundle versioned otherwise would
   * make the trial boot unrecognisable, and one for another system is refused by RAUC anyway.
   */
  private async checkBundle(path: string, version: string): Promise<void> {
    const info = JSON.parse(await this.rauc(['info', '--no-verify', '--output-format=json', path])) as BundleInfo;
    const bundleVersion = info.version ?? undefined;
    const sameVersion =
      bundleVersion !== undefined &&
      (bundleVersion === version || (semver.valid(bundleVersion) !== null && semver.eq(bundleVersion, version)));
    if (!sameVersion) {
      throw new ArtifactMismatchError(
        `the RAUC bundle's manifest says version ${bundleVersion ?? '(none)'}, the server offers it as ${version}: ` +
          'build the bundle with the version it is uploaded as',
      );
    }
    const compatible = info.compatible ?? undefined;
    if (this.compatible !== undefined && compatible !== this.compatible) {
      throw new ArtifactMismatchError(
        `the RAUC bundle is for compatible "${compatible ?? ''}", this system is "${this.compatible}"`,
      );
    }
  }

  private async bootedSlot(): Promise<RaucSlot> {
    const status = JSON.parse(await this.rauc(['status', '--detailed', '--output-format=json'])) as {
      compatible?: string;
      booted?: string;
      slots?: Record<string, RaucSlotJson>[];
    };
    this.compatible = status.compatible || undefined;
    const slots: RaucSlot[] = (status.slots ?? []).flatMap((entry) =>
      Object.entries(entry).map(([name, slot]) => ({
        name,
        bootname: slot.bootname ?? undefined,
        state: slot.state ?? '',
        version: slot.slot_status?.bundle?.version ?? undefined,
      })),
    );
    const booted = slots.find((slot) => slot.state === 'booted') ?? slots.find((s) => s.bootname === status.booted);
    if (!booted) throw new Error(`rauc status names no booted slot (booted: ${status.booted ?? 'none'})`);
    return booted;
  }

  private async rauc(args: string[]): Promise<string> {
    const all = [...(this.options.raucArgs ?? []), ...args];
    const result = await runProgram('rauc', all, {
      env: this.options.env,
      timeoutMs: this.options.timeoutMs ?? 600_000,
    });
    // RAUC gives its reason (`LastError: …`) on stdout.
    if (result.exitCode !== 0) throw new Error(describeFailure(`rauc ${args.join(' ')}`, result));
    return result.stdout;
  }

  private async savePending(pending: PendingBundle | undefined): Promise<void> {
    await writeJsonAtomic(this.markerFile, pending ?? null);
  }
}

interface RaucSlotJson {
  bootname?: string | null;
  state?: string;
  slot_status?: { bundle?: { version?: string | null } };
}
