/**
 * The words of a fleet deployment, as data and pure functions: its lifecycle and its batches'
 * (stored, each written through one guarded statement that lists the states allowed to lead to
 * the new one), where each matched device stands in it and why, the counts kept on write, the
 * controls an operator may use now, and the `deployment` event. No I/O: the deployments room,
 * the CLI and the dashboard all read the rules from here. No schema library either, so the
 * browser bundle takes it whole; the wire schemas built on it are in deployment-schemas.ts.
 */
import { UPDATE_STATUSES, type UpdateStatus } from './update-status.ts';

// --- the deployment's lifecycle ---------------------------------------------------------------

export const DEPLOYMENT_STATES = [
  'scheduled',
  'running',
  'paused',
  'completed',
  'failed',
  'cancelled',
  'rolled_back',
  'awaiting_approval',
  'rejected',
] as const;
export type DeploymentState = (typeof DEPLOYMENT_STATES)[number];

/**
 * Who moves a deployment where:
 * - scheduled → running at its start time; → paused, cancelled by the operator;
 * - running → paused (operator, or a gate with on_failure pause), completed (every batch
 *   passed), failed (a gate with on_failure abort), cancelled, rolled_back (a gate with
 *   on_failure rollback, or the operator);
 * - paused → running or scheduled (resume: scheduled while its start is still ahead), failed
 *   or rolled_back (a gate's abort or rollback is not held back by a pause), cancelled;
 * - completed, failed → rolled_back (the operator rolls back what it updated);
 * - awaiting_approval (created while its organization's approval policy applies: it holds its
 *   devices like scheduled, no attempt exists) → scheduled or running when an admin of another
 *   person approves it, rejected when one rejects it, cancelled by the operator;
 * - cancelled, rolled_back and rejected are final.
 */
const DEPLOYMENT_TRANSITIONS: Record<DeploymentState, readonly DeploymentState[]> = {
  scheduled: ['running', 'paused', 'cancelled'],
  running: ['paused', 'completed', 'failed', 'cancelled', 'rolled_back'],
  paused: ['running', 'scheduled', 'failed', 'cancelled', 'rolled_back'],
  completed: ['rolled_back'],
  failed: ['rolled_back'],
  cancelled: [],
  rolled_back: [],
  awaiting_approval: ['scheduled', 'running', 'cancelled', 'rejected'],
  rejected: [],
};

/** May still start batches or take devices: the "open" deployments that hold their devices. */
export const OPEN_STATES = [
  'scheduled',
  'running',
  'paused',
  'awaiting_approval',
] as const satisfies readonly DeploymentState[];

/** Ended: it takes no device any more. Its effects (cancels, rollbacks) may still be under way. */
export function isEnded(state: DeploymentState): boolean {
  return !(OPEN_STATES as readonly DeploymentState[]).includes(state);
}

export function canMoveDeployment(from: DeploymentState, to: DeploymentState): boolean {
  return DEPLOYMENT_TRANSITIONS[from].includes(to);
}

/** The `WHERE state = ANY(…)` of the guarded write to `to`. */
export function deploymentStatesLeadingTo(to: DeploymentState): DeploymentState[] {
  return DEPLOYMENT_STATES.filter((from) => canMoveDeployment(from, to));
}

// --- batches ----------------------------------------------------------------------------------

export const BATCH_STATES = ['pending', 'running', 'baking', 'passed', 'failed'] as const;
export type BatchState = (typeof BATCH_STATES)[number];

/**
 * pending → running when the rollout starts it; running ⇄ baking as its devices are in flight
 * or all baking; → passed or failed by its gate. A failed batch stays failed (an operator who
 * accepts its failures promotes it: the rollout goes on, the record keeps the failure). A passed
 * batch runs again only when a dynamic deployment adds a device to it.
 */
const BATCH_TRANSITIONS: Record<BatchState, readonly BatchState[]> = {
  pending: ['running'],
  running: ['baking', 'passed', 'failed'],
  baking: ['running', 'passed', 'failed'],
  passed: ['running'],
  failed: [],
};

export function canMoveBatch(from: BatchState, to: BatchState): boolean {
  return BATCH_TRANSITIONS[from].includes(to);
}

export function batchStatesLeadingTo(to: BatchState): BatchState[] {
  return BATCH_STATES.filter((from) => canMoveBatch(from, to));
}

/** A canary batch comes first and is gated like the others; the rest are plain batches. */
export type BatchKind = 'canary' | 'batch';

export function hasStarted(state: BatchState): boolean {
  return state !== 'pending';
}

// --- devices in a deployment ------------------------------------------------------------------

/**
 * Where a device the target matched stands in the deployment (`deployment_devices.state`),
 * kept in step with its update row by the database (migration 007):
 * - `pending`: its batch has not started;
 * - `queued`: its attempt waits for the device to take it (queued, or sent and not yet reported on);
 * - `in_progress`: the device reports on its attempt;
 * - `retrying`: its attempt failed and another comes at `retry_at` (max_retries);
 * - `baking`: it committed the version and is watched for bake_minutes;
 * - `completed`: committed and baked;
 * - `failed` | `timed_out`: no attempt left (`reason`: the error code, or bake_offline,
 *   bake_reverted, bake_unhealthy when it failed within its bake);
 * - `cancelled`: the deployment was cancelled, aborted or rolled back before it ran;
 * - `skipped`: never sent (`reason`, below).
 */
export const DEVICE_STATES = [
  'pending',
  'queued',
  'in_progress',
  'retrying',
  'baking',
  'completed',
  'failed',
  'timed_out',
  'cancelled',
  'skipped',
] as const;
export type DeviceState = (typeof DEVICE_STATES)[number];

/** On its way: the gate waits for these. */
export const IN_FLIGHT_DEVICE_STATES = [
  'pending',
  'queued',
  'in_progress',
  'retrying',
] as const satisfies readonly DeviceState[];

/** The deployment holds the device (it is busy for every other door) while it is in one of these. */
export const HOLDING_DEVICE_STATES = [...IN_FLIGHT_DEVICE_STATES, 'baking'] as const satisfies readonly DeviceState[];

/**
 * Why a device is skipped: at planning (already on the version or a newer one, its model is
 * not one the firmware supports, busy in another deployment or update), at dispatch (its
 * version or model changed since), or offline past the device timeout of its batch.
 */
export const SKIP_REASONS = [
  'already_on_version',
  'newer_version',
  'incompatible',
  'busy',
  'version_changed',
  'offline_timeout',
] as const;
export type SkipReason = (typeof SKIP_REASONS)[number];

/**
 * Why a device of a started batch waits to be sent its attempt. It keeps its state (`pending`
 * before its attempt exists, `queued` when its attempt waits) and carries the reason, with
 * `detail`: `window`, outside its maintenance window (detail: when it may start, an ISO time);
 * `bandwidth`, beyond the deployment's or organization's download budget; `locked`, the device
 * holds an update lock (detail: its reason). The counts gain `waiting/<reason>`.
 */
export const WAIT_REASONS = ['window', 'bandwidth', 'locked'] as const;
export type WaitReason = (typeof WAIT_REASONS)[number];

export function isWaitReason(reason: string | null): reason is WaitReason {
  return (WAIT_REASONS as readonly (string | null)[]).includes(reason);
}

/** Devices waiting, by reason (every reason present). */
export type WaitingCounts = Record<WaitReason, number>;

export function emptyWaitingCounts(): WaitingCounts {
  return Object.fromEntries(WAIT_REASONS.map((reason) => [reason, 0])) as WaitingCounts;
}

/** What a waiting device waits for, in words. */
function explainWait(reason: WaitReason, detail: string | null): string {
  switch (reason) {
    case 'window':
      return detail ? `waiting for its window (opens ${detail})` : 'waiting for its window';
    case 'bandwidth':
      return 'waiting for bandwidth';
    case 'locked':
      return `locked by the device: ${detail ?? 'no reason given'}`;
  }
}

/** How a device that committed failed within its bake. */
export const BAKE_FAILURES = ['bake_offline', 'bake_reverted', 'bake_unhealthy'] as const;
export type BakeFailure = (typeof BAKE_FAILURES)[number];

/** What a device's state means, in words: the answer to "why didn't device X update?". */
export function explainDevice(device: {
  state: DeviceState;
  reason: string | null;
  detail: string | null;
  batch: number | null;
  from_version: string;
  current_version: string;
  version: string;
  rollback_status: UpdateStatus | null;
}): string {
  const rollback = device.rollback_status ? `; rollback ${device.rollback_status.replace('_', ' ')}` : '';
  const text = (() => {
    if ((device.state === 'pending' || device.state === 'queued') && isWaitReason(device.reason)) {
      return explainWait(device.reason, device.detail);
    }
    switch (device.state) {
      case 'pending':
        return `waiting for batch ${device.batch}`;
      case 'queued':
        return 'queued: waiting for the device to take the update';
      case 'in_progress':
        return 'updating';
      case 'retrying':
        return `failed (${device.reason ?? 'failed'}); retrying`;
      case 'baking':
        return `baking on ${device.version}`;
      case 'completed':
        return device.current_version === device.version
          ? `completed on ${device.version}`
          : `completed on ${device.version}, now runs ${device.current_version}`;
      case 'failed':
      case 'timed_out':
        if (device.reason === 'bake_reverted') return `reverted to ${device.current_version} during the bake`;
        if (device.reason === 'bake_offline') return 'went offline during the bake';
        if (device.reason === 'bake_unhealthy') return 'unhealthy during the bake';
        return `${device.state.replace('_', ' ')} (${device.reason ?? device.state})`;
      case 'cancelled':
        return 'cancelled before it ran';
      case 'skipped':
        switch (device.reason as SkipReason | null) {
          case 'already_on_version':
            return `skipped: already on ${device.version}`;
          case 'newer_version':
            return `skipped: runs ${device.current_version}, newer than ${device.version}`;
          case 'incompatible':
            return 'skipped: its model is not compatible with the firmware';
          case 'busy':
            return `skipped: busy in ${device.detail ?? 'another deployment or update'}`;
          case 'version_changed':
            return `skipped: its version changed to ${device.current_version} since it was planned`;
          case 'offline_timeout':
            return 'skipped: offline past the device timeout';
          default:
            return `skipped (${device.reason ?? 'no reason'})`;
        }
    }
  })();
  return `${text}${rollback}`;
}

// --- counts -----------------------------------------------------------------------------------

/** How many devices are in each state; every state is present (0 when none). */
export type DeviceCounts = Record<DeviceState, number>;

export function emptyDeviceCounts(): DeviceCounts {
  return Object.fromEntries(DEVICE_STATES.map((state) => [state, 0])) as DeviceCounts;
}

/** A rollback's rows of a deployment by status (every status present). */
export type RollbackCounts = Record<UpdateStatus, number>;

export function emptyRollbackCounts(): RollbackCounts {
  return Object.fromEntries(UPDATE_STATUSES.map((status) => [status, 0])) as RollbackCounts;
}

/** The devices the target matched and left out, by reason. */
export type ExcludedCounts = Record<SkipReason, number>;

export function emptyExcludedCounts(): ExcludedCounts {
  return Object.fromEntries(SKIP_REASONS.map((reason) => [reason, 0])) as ExcludedCounts;
}

/** Devices on their way (not started, queued, updating, or waiting for a retry). */
export function inFlightOf(counts: DeviceCounts): number {
  return IN_FLIGHT_DEVICE_STATES.reduce((sum, state) => sum + counts[state], 0);
}

/** Devices on their way now (their batch started): queued or sent, updating, or waiting for a retry. */
export function inProgressOf(counts: DeviceCounts): number {
  return counts.queued + counts.in_progress + counts.retrying;
}

/** Devices with no attempt left that did not commit and bake: failed or timed out. */
export function failedOf(counts: DeviceCounts): number {
  return counts.failed + counts.timed_out;
}

/** Devices the batch is done with, whatever the outcome. */
export function finishedOf(counts: DeviceCounts): number {
  return counts.completed + failedOf(counts) + counts.cancelled + counts.skipped;
}

/** Devices whose rollback still waits for or runs on the device. */
export function rollbackInFlightOf(rollback: RollbackCounts): number {
  return rollback.queued + rollback.dispatched + rollback.in_progress;
}

// --- the operator's controls ------------------------------------------------------------------

export const CONTROLS = ['pause', 'resume', 'cancel', 'promote', 'rollback', 'approve', 'reject'] as const;
export type Control = (typeof CONTROLS)[number];
/** The decisions on a deployment awaiting approval (admin of another person; their own routes, with a comment). */
export type ApprovalControl = Extract<Control, 'approve' | 'reject'>;
/** The controls an operator applies by POST /api/v1/deployments/{id}/<control> with no body. */
export type OperatorControl = Exclude<Control, ApprovalControl>;

/**
 * The controls that apply now; the server refuses the others with a 409, and the CLI and the
 * dashboard show what the server answers. promote: a batch has started and another waits;
 * rollback: the deployment may have updated devices and is not already rolled back or cancelled;
 * approve, reject: it awaits approval (the server also checks who asks: the two-person rule).
 */
export function controlsFor(state: DeploymentState, batches: readonly { state: BatchState }[]): Control[] {
  const started = batches.map((batch) => hasStarted(batch.state)).lastIndexOf(true);
  const canPromote = started >= 0 && started < batches.length - 1;
  switch (state) {
    case 'scheduled':
      return ['pause', 'cancel'];
    case 'running':
      return ['pause', 'cancel', ...(canPromote ? (['promote'] as const) : []), 'rollback'];
    case 'paused':
      return ['resume', 'cancel', ...(canPromote ? (['promote'] as const) : []), 'rollback'];
    case 'completed':
    case 'failed':
      return ['rollback'];
    case 'awaiting_approval':
      return ['approve', 'reject', 'cancel'];
    case 'cancelled':
    case 'rolled_back':
    case 'rejected':
      return [];
  }
}

// --- why it stopped ---------------------------------------------------------------------------

/** The rule a gate applied and the counts it used, as stored with the deployment. */
export interface Stop {
  rule: 'failure_threshold';
  batch: number;
  batch_kind: string;
  /** Devices of the batch judged failed. */
  failed: number;
  /** Devices of the batch with a verdict (succeeded or failed). */
  judged: number;
  size: number;
  threshold_percent: number;
  on_failure: string;
}

/** `batch 0 (canary): 3 failed of 12 with a verdict (25.0%, of 50 in the batch), more than the 10% allowed; on_failure rollback`. */
export function describeStop(stop: Stop): string {
  const percent = stop.judged > 0 ? ((stop.failed * 100) / stop.judged).toFixed(1) : '0';
  return (
    `batch ${stop.batch} (${stop.batch_kind}): ${stop.failed} failed of ${stop.judged} with a verdict ` +
    `(${percent}%, of ${stop.size} in the batch), more than the ${stop.threshold_percent}% allowed; ` +
    `on_failure ${stop.on_failure}`
  );
}
