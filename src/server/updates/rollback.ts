/**
 * What a device may roll back to, as pure functions (no I/O). A device's last known good
 * version (`previous_version`, the target of a plain rollback) is the version it left in its
 * last successful update; every version it has run and committed (registration version
 * included) is a target an operator may name.
 */
import { compareVersions } from '../../protocol/version.ts';
import { ConflictError } from '../infra/errors.ts';

export interface FinishedUpdate {
  kind: 'update' | 'rollback' | 'observed';
  from_version: string;
  target_version: string;
}

/**
 * The rollback target once a device reported the end of `update`: the version it left after
 * a successful update; none after a successful rollback; unchanged after a failure, and
 * after a re-install of the version it already ran (re-installing must not make the running
 * version its own rollback target).
 */
export function rollbackTargetAfter(
  update: FinishedUpdate,
  succeeded: boolean,
  currentVersion: string,
): string | null | 'unchanged' {
  if (!succeeded) return 'unchanged';
  if (update.kind === 'rollback') return null;
  if (update.from_version === currentVersion) return 'unchanged';
  return update.from_version;
}

/** The versions a successful report shows the device has run and committed: the one it left, then the one it runs. */
export function committedVersionsAfter(update: FinishedUpdate, succeeded: boolean, currentVersion: string): string[] {
  if (!succeeded) return [];
  return [...new Set([update.from_version, currentVersion])];
}

export interface RunVersion {
  version: string;
  last_run_at: Date;
  /** The device fell back from it after committing it: not a version to go back to. */
  reverted_at?: Date | null;
}

/**
 * The versions a device may be rolled back to, most recently run first (a tie, higher
 * version first): every version it has committed except the one it runs and those it fell
 * back from.
 */
export function rollbackVersions(run: readonly RunVersion[], currentVersion: string): string[] {
  return run
    .filter((entry) => entry.version !== currentVersion && !entry.reverted_at)
    .sort((a, b) => b.last_run_at.getTime() - a.last_run_at.getTime() || safeCompare(b.version, a.version))
    .map((entry) => entry.version);
}

function safeCompare(a: string, b: string): number {
  try {
    return compareVersions(a, b);
  } catch {
    return a < b ? -1 : a > b ? 1 : 0;
  }
}

/**
 * The version a rollback request goes to: the one asked for, which the device must have
 * committed before, or else its last known good version.
 */
export function chooseRollbackTarget(
  device: { device_id: string; current_version: string; previous_version: string | null },
  run: readonly RunVersion[],
  requested?: string,
): string {
  if (requested === undefined) {
    const target = device.previous_version;
    if (!target || target === device.current_version) {
      throw new ConflictError(
        'no_rollback_target',
        `device ${device.device_id} has no earlier known good version${choices(run, device.current_version)}`,
      );
    }
    return target;
  }
  if (requested === device.current_version) {
    throw new ConflictError(
      'already_on_version',
      `device ${device.device_id} already runs ${requested}; to re-install it, update it with force`,
    );
  }
  if (run.some((entry) => entry.version === requested && entry.reverted_at)) {
    throw new ConflictError(
      'version_reverted',
      `device ${device.device_id} fell back from ${requested} after committing it${choices(run, device.current_version)}`,
    );
  }
  if (!run.some((entry) => entry.version === requested)) {
    throw new ConflictError(
      'version_not_committed',
      `device ${device.device_id} has never run and committed ${requested}${choices(run, device.current_version)}`,
    );
  }
  return requested;
}

function choices(run: readonly RunVersion[], currentVersion: string): string {
  const versions = rollbackVersions(run, currentVersion);
  return versions.length > 0 ? `; it can roll back to ${versions.join(', ')}` : '';
}
