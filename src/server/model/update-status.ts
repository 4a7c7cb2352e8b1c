/**
 * The per-device update state machine as plain data and pure functions (no I/O), after
 * Mender's device-deployment model. Every status change in the database goes through
 * `UpdateTransitions` (transitions.ts), whose statements only match rows in a status listed here
 * as leading to the target.
 */

/**
 * - queued: waiting for its device to be connected to a process that dispatches it;
 * - dispatched: the command was sent; in_progress: the device reports on it;
 * - completed: the device rebooted into the version, committed it and said so;
 * - failed, timed_out: the device reported a failure, or stopped reporting;
 * - cancelled: stopped before it ran, or on the device by `ota_cancel`;
 * - skipped: never sent: when it was due, the device no longer fit (its version or model had
 *   changed, or it stayed offline past its deployment's device timeout); error_code says which.
 */
export const UPDATE_STATUSES = [
  'queued',
  'dispatched',
  'in_progress',
  'completed',
  'failed',
  'timed_out',
  'cancelled',
  'skipped',
] as const;
export type UpdateStatus = (typeof UPDATE_STATUSES)[number];

/** Waiting for, or being worked on by, a device. At most one per device. */
export const ACTIVE_STATUSES = ['queued', 'dispatched', 'in_progress'] as const satisfies readonly UpdateStatus[];
/** What the dispatcher claims: waiting for a device connected to the claiming process. */
export const CLAIMABLE_STATUSES = ['queued'] as const satisfies readonly UpdateStatus[];
/** Active and taken: a device has the command and works on it (what `ota_cancel` can still stop). */
export const TAKEN_STATUSES = ACTIVE_STATUSES.filter(
  (status) => !(CLAIMABLE_STATUSES as readonly UpdateStatus[]).includes(status),
);

const TRANSITIONS: Record<UpdateStatus, readonly UpdateStatus[]> = {
  queued: ['dispatched', 'cancelled', 'failed', 'skipped'],
  // Back to queued when the device dropped before it took the command; skipped when, at
  // dispatch, the device no longer fits (its version or model changed).
  dispatched: ['queued', 'in_progress', 'completed', 'failed', 'timed_out', 'cancelled', 'skipped'],
  in_progress: ['in_progress', 'completed', 'failed', 'timed_out', 'cancelled'],
  completed: [],
  failed: [],
  timed_out: [],
  cancelled: [],
  skipped: [],
};

/** Finished: the row never changes again. */
export const TERMINAL_STATUSES = UPDATE_STATUSES.filter((status) => TRANSITIONS[status].length === 0);

/** Reached by a device's own report: they stamp `last_report_at`. */
export const REPORTED_STATUSES = ['in_progress', 'completed', 'failed'] as const satisfies readonly UpdateStatus[];

export function isActive(status: UpdateStatus): boolean {
  return (ACTIVE_STATUSES as readonly UpdateStatus[]).includes(status);
}

export function canTransition(from: UpdateStatus, to: UpdateStatus): boolean {
  return TRANSITIONS[from].includes(to);
}

/** Every status from which `to` may be reached: the `WHERE status = ANY(…)` of a transition. */
export function statusesLeadingTo(to: UpdateStatus): UpdateStatus[] {
  return UPDATE_STATUSES.filter((from) => canTransition(from, to));
}

/** The seed's four OTA statuses, as the device record shows them. */
export type OtaStatus = 'idle' | 'updating' | 'completed' | 'failed';

/**
 * The OTA status of a device from its latest history row: an update or rollback by its status
 * (never sent: idle); a version change the server observed is `failed` when the device fell back
 * from the version it had committed (`reverted`), else `idle`; an install from an offline bundle by its status.
 */
export function otaStatusOf(
  latest:
    | { status: UpdateStatus; kind: string; error_code: string | null; offline_bundle_id?: string | null }
    | undefined,
): OtaStatus {
  if (!latest) return 'idle';
  // An install from an offline bundle reads as an update: completed, or failed.
  if (latest.kind === 'observed' && !latest.offline_bundle_id)
    return latest.error_code === 'reverted' ? 'failed' : 'idle';
  switch (latest.status) {
    case 'cancelled':
    case 'skipped':
      return 'idle';
    case 'queued':
    case 'dispatched':
    case 'in_progress':
      return 'updating';
    case 'completed':
      return 'completed';
    case 'failed':
    case 'timed_out':
      return 'failed';
  }
}
