import { join } from 'node:path';
import { readJsonIfExists, writeJsonAtomic } from './atomic-file.ts';
import type { BootState, Installer, InstallImage, RevertOutcome } from './installer.ts';
import { runProgram } from './shell.ts';

export interface ScriptInstallerOptions {
  /** Called as `<script> install <file> <version>`, `<script> commit`, `<script> revert`, `<script> current-version`. */
  installScript: string;
  dataDir: string;
  maxTries?: number;
  timeoutMs?: number;
}

interface PendingInstall {
  version: string;
  previousVersion: string;
  tries: number;
}

/**
 * Hands the image to the device's own updater (RAUC, SWUpdate, Mender's client, a vendor tool)
 * through an operator script. The updater owns the slots; the agent only remembers that an image
 * was handed over, so that at the next start it can tell a trial boot from a fallback.
 */
export class ScriptInstaller implements Installer {
  private readonly markerFile: string;
  private version = 'unknown';

  constructor(private readonly options: ScriptInstallerOptions) {
    this.markerFile = join(options.dataDir, 'script-installer.json');
  }

  async boot(): Promise<BootState> {
    this.version = await this.queryVersion();
    const pending = (await readJsonIfExists(this.markerFile)) as PendingInstall | undefined;
    if (!pending) return { kind: 'normal', version: this.version };
    const counted = { ...pending, tries: pending.tries + 1 };
    await this.savePending(counted);
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
    await this.run(['install', image.filePath, image.version]);
    await this.savePending({ version: image.version, previousVersion: this.version, tries: 0 });
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
    if (result.exitCode !== 0) {
      const why = result.timedOut ? 'timed out' : `exited with ${result.exitCode}`;
      throw new Error(`${this.options.installScript} ${args[0]} ${why}: ${result.stderr.trim().slice(0, 500)}`);
    }
    return result.stdout;
  }

  private async savePending(pending: PendingInstall | undefined): Promise<void> {
    await writeJsonAtomic(this.markerFile, pending ?? null);
  }
}
