/**
 * How a device's OTA history row reads, in the CLI and on the dashboard: an update or a rollback
 * by its status and target; a version change the device reported and the server did not order
 * (`observed`) by what it was: `reverted to 1.0.0` (it fell back after committing), `reflashed to
 * 1.0.0` (changed by hand) — never "completed"; an install from an offline bundle as `installed
 * offline to 1.1.0 (bundle bnd_…)` (or `offline install failed …`). Pure, type-free of the server: the dashboard
 * bundles it.
 */

/** The fields of an update row (history, OTA record, the device list's latest update) that say what it was. */
export interface OtaRowFacts {
  kind: string;
  status: string;
  target_version: string;
  error_code: string | null;
  /** An install from an offline bundle (absent from the device list's latest update). */
  offline_bundle_id?: string | null;
}

/** `{ badge: 'reverted', label: 'to 1.0.0' }`: the word a badge shows, and what follows it. */
export function otaWords(row: OtaRowFacts): { badge: string; label: string } {
  if (row.offline_bundle_id) {
    const bundle = `(bundle ${row.offline_bundle_id})`;
    return row.status === 'completed'
      ? { badge: 'installed offline', label: `to ${row.target_version} ${bundle}` }
      : { badge: 'offline install failed', label: `to ${row.target_version} ${bundle}` };
  }
  if (row.kind === 'observed') {
    return { badge: row.error_code === 'reverted' ? 'reverted' : 'reflashed', label: `to ${row.target_version}` };
  }
  return { badge: row.status, label: `${row.kind === 'rollback' ? 'rollback ' : ''}to ${row.target_version}` };
}

/** `reverted to 1.0.0`, `completed to 2.0.0`, `failed rollback to 1.0.0`: the row in one phrase. */
export function describeOta(row: OtaRowFacts): string {
  const { badge, label } = otaWords(row);
  return `${badge.replace(/_/g, ' ')} ${label}`;
}

/** A device's update lock as the API answers it (null: unlocked). */
export interface LockFacts {
  reason: string;
  until: string | Date | null;
}

/** `locked: backup running (until 2030-01-31T02:00:00.000Z)`, `locked: backup running (until released)`; '' when unlocked. */
export function describeLock(lock: LockFacts | null | undefined): string {
  if (!lock) return '';
  const until = lock.until === null ? 'released' : new Date(lock.until).toISOString();
  return `locked: ${lock.reason} (until ${until})`;
}
