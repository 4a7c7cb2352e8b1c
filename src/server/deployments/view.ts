/**
 * A deployment as the API and the scheduler see it, assembled from the rows the repository
 * read: per-device statuses, each batch's tally, state and counts, the gate's inputs and the
 * derived status. Pure (the rows and the time in, the view out), so the status the API shows and
 * the decision the scheduler takes come from the same computation.
 */
import { type GatedBatch, gateDecision, retryDelayMs, shouldRetry } from './gate.ts';
import type { BatchRow, DeploymentRow, DeviceStateRow } from './repo.ts';
import {
  type Batch,
  type DeploymentDeviceStatus,
  type DeploymentStatus,
  type DeviceCounts,
  emptyDeviceCounts,
} from './schemas.ts';
import { type BatchDevice, batchStateOf, type DeploymentFlags, deploymentStatusOf, tallyBatch } from './status.ts';

export function flagsOf(row: DeploymentRow): DeploymentFlags {
  return {
    startAtMs: row.start_at ? row.start_at.getTime() : null,
    paused: row.paused,
    cancelled: row.cancelled_at !== null,
    aborted: row.aborted_at !== null,
    rolledBack: row.rolled_back_at !== null,
    dynamic: row.dynamic,
  };
}

/** The deployment will take no more updates: cancelled, aborted, rolled back or finished. */
export function hasEnded(row: DeploymentRow): boolean {
  return (
    row.cancelled_at !== null || row.aborted_at !== null || row.rolled_back_at !== null || row.finished_at !== null
  );
}

export function deviceStatusOf(device: Pick<DeviceStateRow, 'status'>): DeploymentDeviceStatus {
  return device.status ?? 'pending';
}

const RETRIABLE = new Set(['failed', 'timed_out']);

/** When a failed device of an active deployment gets its next attempt (ms); null: none. */
export function retryAtMs(
  device: Pick<DeviceStateRow, 'status' | 'failures' | 'finished_at'>,
  maxRetries: number,
  retryBaseMs: number,
): number | null {
  if (device.status === null || !RETRIABLE.has(device.status)) return null;
  if (!shouldRetry(device.failures, maxRetries)) return null;
  return (device.finished_at?.getTime() ?? 0) + retryDelayMs(device.failures, retryBaseMs);
}

function batchDevice(device: DeviceStateRow, ended: boolean, maxRetries: number, retryBaseMs: number): BatchDevice {
  return {
    status: device.status,
    committedAtMs: device.status === 'completed' ? (device.finished_at?.getTime() ?? null) : null,
    failedDuringBake: device.bake_failed_at !== null,
    willRetry: !ended && retryAtMs(device, maxRetries, retryBaseMs) !== null,
  };
}

export interface DeploymentView {
  status: DeploymentStatus;
  total: number;
  counts: DeviceCounts;
  /** Devices that failed their bake (their update row completed). */
  bakeFailed: number;
  batches: Batch[];
  /** The batches as the gate and nextAction read them. */
  gated: GatedBatch[];
  /** Device rows by batch index. */
  devicesByBatch: DeviceStateRow[][];
}

export function viewOf(
  row: DeploymentRow,
  batchRows: readonly BatchRow[],
  devices: readonly DeviceStateRow[],
  nowMs: number,
  retryBaseMs: number,
): DeploymentView {
  const { settings } = row;
  const bakeMs = settings.bake_minutes * 60_000;
  const ended = hasEnded(row);
  const devicesByBatch: DeviceStateRow[][] = batchRows.map(() => []);
  const indexOf = new Map(batchRows.map((batch, position) => [batch.batch_index, position]));
  for (const device of devices) devicesByBatch[indexOf.get(device.batch_index) ?? 0]?.push(device);

  const counts = emptyDeviceCounts();
  const bakeFailed = devices.filter((device) => device.bake_failed_at !== null).length;
  const gated: GatedBatch[] = [];
  const batches: Batch[] = batchRows.map((batchRow, position) => {
    const members = devicesByBatch[position]!;
    const batchCounts = emptyDeviceCounts();
    for (const device of members) {
      batchCounts[deviceStatusOf(device)]++;
      counts[deviceStatusOf(device)]++;
    }
    const gatedBatch: GatedBatch = {
      started: batchRow.started_at !== null,
      promoted: batchRow.promoted,
      tally: tallyBatch(
        members.map((device) => batchDevice(device, ended, settings.max_retries, retryBaseMs)),
        bakeMs,
        nowMs,
      ),
    };
    gated.push(gatedBatch);
    const gate = gateDecision(gatedBatch.tally, settings);
    const state = batchStateOf(gatedBatch, gate.verdict);
    return {
      index: batchRow.batch_index,
      kind: batchRow.kind,
      size: members.length,
      state,
      counts: batchCounts,
      // The instant the gate waits for (its wake-up), so what is shown is what is judged.
      bake_ends_at: state === 'baking' && gate.wakeAtMs !== null ? new Date(gate.wakeAtMs).toISOString() : null,
    };
  });
  const status = deploymentStatusOf(
    flagsOf(row),
    batches.map((batch) => batch.state),
    nowMs,
  );
  return { status, total: devices.length, counts, bakeFailed, batches, gated, devicesByBatch };
}

/** The API's deployment object. */
export function deploymentBody(row: DeploymentRow, view: DeploymentView) {
  return {
    id: row.id,
    version: row.version,
    status: view.status,
    target: row.target,
    ...row.settings,
    start_at: row.start_at,
    total: view.total,
    counts: view.counts,
    bake_failed: view.bakeFailed,
    batches: view.batches,
    created_at: row.created_at,
    started_at: row.started_at,
    finished_at: row.finished_at,
    abort_reason: row.abort_reason,
  };
}

/** Bucket widths a timeline picks from (seconds), then whole days: round numbers on a time axis. */
const TIMELINE_STEPS = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400];
/** The most buckets a timeline spans when the caller does not choose their width. */
export const TIMELINE_MAX_BUCKETS = 120;

/** The narrowest round bucket width (seconds) that cuts a span of `spanMs` into at most 120 buckets. */
export function timelineBucketSeconds(spanMs: number): number {
  // Buckets start at the origin, so an outcome at the very end opens bucket floor(span / width).
  const fits = (width: number) => Math.floor(Math.max(0, spanMs) / 1000 / width) < TIMELINE_MAX_BUCKETS;
  const step = TIMELINE_STEPS.find(fits);
  if (step !== undefined) return step;
  return 86_400 * Math.ceil((Math.floor(spanMs / 1000) + 1) / 86_400 / TIMELINE_MAX_BUCKETS);
}
