import type { ArtifactKind } from '../protocol/artifact.ts';

/**
 * How a verified image becomes the running firmware. The agent only ever asks an installer to
 * write the image where the next boot will try it, to report what the bootloader did at this
 * start, and to commit or revert the trial; whatever "slot" means is the installer's business.
 */

/**
 * The artifact is not what this device can or should install (another kind, or a bundle built
 * for another version or system): reported as `artifact_mismatch`, nothing was written.
 */
export class ArtifactMismatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ArtifactMismatchError';
  }
}

/** What the bootloader decided at this (re)start. */
export type BootState =
  | { kind: 'normal'; version: string }
  /** The newly installed image runs on trial; it must be committed or reverted. */
  | { kind: 'trial'; version: string; previousVersion: string }
  /** The pending image used up its boot attempts; the previous one runs again. */
  | { kind: 'reverted'; version: string; abandonedVersion: string };

export interface InstallImage {
  version: string;
  sha256: string;
  /** The downloaded image on disk; absent when the download sink keeps no bytes (simulator). */
  filePath: string | undefined;
}

export type RevertOutcome = 'done' | 'reboot';

/** Called at named points of the install path; tests cut the power there. */
export type StepHook = (step: string) => void | Promise<void>;

export interface Installer {
  /** The artifact kinds it installs (src/protocol/artifact.ts); absent: any (it cannot tell). */
  readonly artifactKinds?: readonly ArtifactKind[];
  /** The bootloader's part of a start. Call once per (re)start, before anything else. */
  boot(): Promise<BootState>;
  /** The version running now: on trial, the new one. */
  currentVersion(): string;
  /** The A/B slot running now (`a`/`b`), for installers that know it; reported in `device_info`. */
  currentSlot?(): string | undefined;
  /** Writes the image where the next boot tries it once. Throws if it cannot. */
  install(image: InstallImage): Promise<void>;
  /** Makes the trial image the one every later boot runs. */
  commit(): Promise<void>;
  /**
   * Abandons a pending or trial image; the previous version runs (again) — at once, or, when the
   * abandoned image is the one running (`'reboot'`), after a reboot.
   */
  revert(): Promise<RevertOutcome>;
}
