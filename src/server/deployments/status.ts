/**
 * A deployment's status and its batches' states, derived from counters and a few operator
 * flags, never written by hand (Mender's deployment model): after a restart the same rows give
 * the same status. Pure; the service feeds it what it counted.
 */
import type { UpdateStatus } from '../updates/status.ts';
import type { BatchState, DeploymentStatus } from './schemas.ts';

/** A device's place in a gate's count. */
export type DeviceOutcome = 'pending' | 'baking' | 'succeeded' | 'failed' | 'skipped' | 'cancelled';

/** What the gate needs to know of one device of a batch. */
export interface BatchDevice {
  /** Its update row's status; null while its batch has not started (no row yet). */
  status: UpdateStatus | null;
  /** When it committed the new version (its row's finished_at when completed), in ms. */
  committedAtMs: number | null;
  /** It committed, then reverted, went offline, failed its health check or boot-looped within the bake. */
  failedDuringBake: boolean;
  /** A failed or timed-out attempt that will be retried (see `shouldRetry`). */
  willRetry: boolean;
}

/**
 * Where one device stands for the gate, at `nowMs`:
 * - `succeeded` only once it committed AND stayed healthy for the whole bake (SPEC: a device
 *   counts as succeeded for a gate only then); `baking` until then;
 * - `failed`: failed or timed out with no retry left, or failed during its bake;
 * - `pending`: not started, in flight, or failed with a retry to come.
 */
export function deviceOutcome(device: BatchDevice, bakeMs: number, nowMs: number): DeviceOutcome {
  switch (device.status) {
    case null:
    case 'queued':
    case 'dispatched':
    case 'in_progress':
      return 'pending';
    case 'completed':
      if (device.failedDuringBake) return 'failed';
      // A completed row without a commit time has not been seen to bake: it counts from now on.
      return (device.committedAtMs ?? nowMs) + bakeMs <= nowMs ? 'succeeded' : 'baking';
    case 'failed':
    case 'timed_out':
      return device.willRetry ? 'pending' : 'failed';
    case 'skipped':
      return 'skipped';
    case 'cancelled':
      return 'cancelled';
  }
}

/**
 * A batch's devices counted by outcome: what `gateDecision` judges. The service may build it
 * from SQL aggregates (`count(*) FILTER (…)`, `max(finished_at)`) just as well.
 */
export interface BatchTally {
  size: number;
  pending: number;
  baking: number;
  succeeded: number;
  failed: number;
  skipped: number;
  cancelled: number;
  /** When the last baking device finishes its bake (ms), null when none is baking. */
  bakeEndsAtMs: number | null;
}

export function emptyTally(): BatchTally {
  return { size: 0, pending: 0, baking: 0, succeeded: 0, failed: 0, skipped: 0, cancelled: 0, bakeEndsAtMs: null };
}

export function tallyBatch(devices: readonly BatchDevice[], bakeMs: number, nowMs: number): BatchTally {
  const tally = emptyTally();
  for (const device of devices) {
    const outcome = deviceOutcome(device, bakeMs, nowMs);
    tally.size++;
    tally[outcome]++;
    if (outcome === 'baking') {
      const endsAt = (device.committedAtMs ?? nowMs) + bakeMs;
      tally.bakeEndsAtMs = Math.max(tally.bakeEndsAtMs ?? endsAt, endsAt);
    }
  }
  return tally;
}

/** The operator's and the gate's decisions, as recorded on the deployment. */
export interface DeploymentFlags {
  /** Scheduled start (ms), null to start at once. */
  startAtMs: number | null;
  /** Paused by the operator, or by a gate with `on_failure: pause`. */
  paused: boolean;
  cancelled: boolean;
  /** A gate applied `abort` (or `rollback`, which also sets rolledBack). */
  aborted: boolean;
  /** Rolled back, by a gate's `on_failure: rollback` or by the operator. */
  rolledBack: boolean;
  /** Takes devices that come to match while active: it never completes by itself (AWS IoT's continuous jobs). */
  dynamic: boolean;
}

/**
 * The deployment's status, from its flags and its batches' states (themselves from the
 * per-device counts, see batchStateOf). The flags that end a deployment win, the latest
 * decision first: rolled back (which follows an abort) over cancelled over failed; then paused;
 * then scheduled while the start is ahead. It is completed when every batch passed, so a last
 * batch still baking, or whose gate is failing, is not completed (no batch at all: completed
 * at once); a dynamic deployment keeps running until it is cancelled.
 */
export function deploymentStatusOf(
  flags: DeploymentFlags,
  batchStates: readonly BatchState[],
  nowMs: number,
): DeploymentStatus {
  if (flags.rolledBack) return 'rolled_back';
  if (flags.cancelled) return 'cancelled';
  if (flags.aborted) return 'failed';
  if (flags.paused) return 'paused';
  if (flags.startAtMs !== null && flags.startAtMs > nowMs) return 'scheduled';
  if (!flags.dynamic && batchStates.every((state) => state === 'passed')) return 'completed';
  return 'running';
}

/**
 * A batch's state from its tally and gate verdict:
 * `pending` (not started) → `running` (devices in flight) → `baking` (all have a verdict or are
 * baking) → `passed` | `failed`. A promoted batch is no longer gated: it passed once its devices
 * are no longer in flight, whatever their bake.
 */
export function batchStateOf(
  batch: { started: boolean; promoted: boolean; tally: BatchTally },
  verdict: 'wait' | 'pass' | 'fail',
): BatchState {
  if (!batch.started) return 'pending';
  if (batch.promoted) return batch.tally.pending > 0 ? 'running' : 'passed';
  if (verdict === 'fail') return 'failed';
  if (verdict === 'pass') return 'passed';
  return batch.tally.pending > 0 ? 'running' : 'baking';
}
