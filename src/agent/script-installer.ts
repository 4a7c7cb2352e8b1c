import { join } from 'node:path';
import { readJsonIfExists, writeJsonAtomic } from './atomic-file.ts';
import { type BootIdentityReader, kernelBootIdentity } from './boot-identity.ts';
import type { BootState, Installer, InstallImage, RevertOutcome } from './installer.ts';
import { describeFailure, runProgram } from './shell.ts';

export interface ScriptInstallerOptions {
  /** Called as `<script> install <file> <version>`, `<script> commit`, `<script> revert`, `<script> current-version`. */
  installScript: string;
  dataDir: string;
  maxTries?: number;
  timeoutMs?: number;
  /** Which boot this is (default: the kernel's boot id in /proc). */
  bootIdentity?: BootIdentityReader;
}

interface PendingInstall {
  version: string;
  previousVersion: string;
  /** Boots of the new image seen so far. */
  tries: number;
  /** The kernel's boot id when the image was installed (absent in markers of older agents). */
  boot_id?: string;
  /** The boot last counted in `tries`: an agent restart within one boot is not another try. */
  counted_boot_id?: string;
}

/**
 * Hands the image to the device's own updater (Mender's client, a vendor tool, your own A/B
 * scheme) through an operator script. The updater owns the slots; the agent only remembers that
 * an image was handed over, and in which boot, so that at the next start it can tell a trial
 * boot from a fallback, and both from a restart of the agent alone.
 */
export class ScriptInstaller implements Installer {
  private readonly markerFile: string;
  private version = 'unknown';

  private readonly bootIdentity: BootIdentityReader;

  constructor(private readonly options: ScriptInstallerOptions) {
    this.markerFile = join(options.dataDir, 'script-installer.json');
    this.bootIdentity = options.bootIdentity ?? kernelBootIdentity();
  }

  async boot(): Promise<BootState> {
    this.version = await this.queryVersion();
    const pending = (await readJsonIfExists(this.markerFile)) as PendingInstall | undefined;
    if (!pending) return { kind: 'normal', version: this.version };
    const { bootId } = await this.bootIdentity.read();
    const rebooted = pending.boot_id === undefined || bootId === undefined || pending.boot_id !== bootId;
    if (!rebooted) {
      // The agent restarted after `install` and the machine did not reboot: the image is still
      // armed. Disarm it now, or the next unrelated reboot boots it with nobody to check it.
      await this.run(['revert']);
      await this.savePending(undefined);
      this.version = await this.queryVersion();
      return { kind: 'reverted', version: this.version, abandonedVersion: pending.version };
    }
    const sameBoot = bootId !== undefined && pending.counted_boot_id === bootId;
    const counted = sameBoot ? pending : { ...pending, tries: pending.tries + 1, counted_boot_id: bootId };
    if (!sameBoot) await this.savePending(counted);
    if (this.version !== counted.version || counted.tries > (this.options.maxTries ?? 3)) {
      if (this.version === counted.version) {
        await this.run(['revert']);
        this.version = await this.queryVersion();
      }
      await this.savePending(undefined);
      return { kind: 'reverted', version: this.version, abandonedVersion: counted.version };
    }
    return { kind: 'trial', version: this.version, previousVersion: counted.previousVersion };
  }

  currentVersion(): string {
    return this.version;
  }

  async install(image: InstallImage): Promise<void> {
    if (!image.filePath) throw new Error('the script installer needs the image on disk');
    const { bootId } = await this.bootIdentity.read();
    await this.run(['install', image.filePath, image.version]);
    await this.savePending({
      version: image.version,
      previousVersion: this.version,
      tries: 0,
      ...(bootId ? { boot_id: bootId } : {}),
    });
  }

  async commit(): Promise<void> {
    await this.run(['commit']);
    await this.savePending(undefined);
    this.version = await this.queryVersion();
  }

  async revert(): Promise<RevertOutcome> {
    const output = await this.run(['revert']);
    await this.savePending(undefined);
    this.version = await this.queryVersion();
    // A script whose updater only switches slots at the next boot says so on its last line.
    return output.trim().split('\n').at(-1)?.trim() === 'reboot' ? 'reboot' : 'done';
  }

  private async queryVersion(): Promise<string> {
    const output = (await this.run(['current-version'])).trim();
    if (!output) throw new Error(`${this.options.installScript} current-version printed nothing`);
    return output;
  }

  private async run(args: string[]): Promise<string> {
    const result = await runProgram(this.options.installScript, args, { timeoutMs: this.options.timeoutMs ?? 600_000 });
    if (result.exitCode !== 0) throw new Error(describeFailure(`${this.options.installScript} ${args[0]}`, result));
    return result.stdout;
  }

  private async savePending(pending: PendingInstall | undefined): Promise<void> {
    await writeJsonAtomic(this.markerFile, pending ?? null);
  }
}
