import type { BootState, Installer, InstallImage, RevertOutcome } from './installer.ts';

export interface MemoryInstallerOptions {
  initialVersion: string;
  maxTries?: number;
  /** Fault injection: `install` throws. */
  failInstall?: boolean;
  /** Fault injection: the new version never comes up, so its boot ends in a revert. */
  failBoot?: boolean;
}

/** An installer without disk writes, for thousands of simulated devices in one process. */
export class MemoryInstaller implements Installer {
  failInstall: boolean;
  failBoot: boolean;
  private active: string;
  private pending: string | undefined;
  /** The version committed before `active`: where a bootloader with the old slot intact falls back. */
  private fallback: string | undefined;
  private onTrial = false;

  constructor(options: MemoryInstallerOptions) {
    this.active = options.initialVersion;
    this.failInstall = options.failInstall ?? false;
    this.failBoot = options.failBoot ?? false;
  }

  async boot(): Promise<BootState> {
    const pending = this.pending;
    if (pending === undefined) return { kind: 'normal', version: this.active };
    if (this.failBoot) {
      this.pending = undefined;
      this.onTrial = false;
      return { kind: 'reverted', version: this.active, abandonedVersion: pending };
    }
    this.onTrial = true;
    return { kind: 'trial', version: pending, previousVersion: this.active };
  }

  currentVersion(): string {
    return this.onTrial && this.pending !== undefined ? this.pending : this.active;
  }

  async install(image: InstallImage): Promise<void> {
    if (this.failInstall) throw new Error('simulated install failure');
    this.pending = image.version;
    this.onTrial = false;
  }

  async commit(): Promise<void> {
    if (this.pending !== undefined) {
      this.fallback = this.active;
      this.active = this.pending;
    }
    this.pending = undefined;
    this.onTrial = false;
  }

  /**
   * Fault injection: the committed version dies for good after its commit (a crash loop), and at
   * the next boot the bootloader falls back to the version committed before it. `false` when
   * there is none, or an install is pending.
   */
  fallBackToPrevious(): boolean {
    if (this.fallback === undefined || this.pending !== undefined) return false;
    this.active = this.fallback;
    this.fallback = undefined;
    return true;
  }

  async revert(): Promise<RevertOutcome> {
    this.pending = undefined;
    this.onTrial = false;
    return 'done';
  }
}
