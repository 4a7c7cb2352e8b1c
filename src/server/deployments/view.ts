/**
 * A deployment as the API, the events and the scheduler see it, assembled from its row, its
 * batches and the counters kept on write. Pure: what is shown and what is judged come from the
 * same numbers, read in O(batches).
 */
import {
  type Control,
  controlsFor,
  DEVICE_STATES,
  type DeviceCounts,
  type ExcludedCounts,
  emptyDeviceCounts,
  emptyExcludedCounts,
  emptyRollbackCounts,
  emptyWaitingCounts,
  type RollbackCounts,
  SKIP_REASONS,
  WAIT_REASONS,
  type WaitingCounts,
} from '../model/deployment.ts';
import { UPDATE_STATUSES } from '../model/update-status.ts';
import type { GatedBatch } from './gate.ts';
import { tallyOf } from './gate.ts';
import type { BatchRow, DeploymentRow } from './repo.ts';
import type { Batch } from './schemas.ts';

/** The counters of one deployment: bucket → count, per batch index (-1: the devices left out). */
export type Counters = Map<number, Map<string, number>>;

export function countersOf(rows: readonly { batch_index: number; bucket: string; n: number }[]): Counters {
  const counters: Counters = new Map();
  for (const row of rows) {
    let batch = counters.get(row.batch_index);
    if (!batch) {
      batch = new Map();
      counters.set(row.batch_index, batch);
    }
    batch.set(row.bucket, (batch.get(row.bucket) ?? 0) + row.n);
  }
  return counters;
}

function deviceCountsOf(buckets: Map<string, number> | undefined): DeviceCounts {
  const counts = emptyDeviceCounts();
  for (const state of DEVICE_STATES) counts[state] = buckets?.get(state) ?? 0;
  return counts;
}

function waitingOf(buckets: Map<string, number> | undefined): WaitingCounts {
  const waiting = emptyWaitingCounts();
  for (const reason of WAIT_REASONS) waiting[reason] = buckets?.get(`waiting/${reason}`) ?? 0;
  return waiting;
}

function sumCounts(all: readonly DeviceCounts[]): DeviceCounts {
  const total = emptyDeviceCounts();
  for (const counts of all) for (const state of DEVICE_STATES) total[state] += counts[state];
  return total;
}

function sizeOf(counts: DeviceCounts): number {
  return DEVICE_STATES.reduce((sum, state) => sum + counts[state], 0);
}

export interface DeploymentView {
  status: DeploymentRow['state'];
  controls: Control[];
  total: number;
  counts: DeviceCounts;
  /** Of the pending and queued, those waiting for their window, bandwidth or a lock. */
  waiting: WaitingCounts;
  bake_failed: number;
  excluded: ExcludedCounts;
  /** Its rollback's rows by status; null when nothing was rolled back. */
  rollback: RollbackCounts | null;
  batches: Batch[];
  /** The batches as the gate and nextAction read them. */
  gated: GatedBatch[];
}

export function viewOf(
  row: Pick<DeploymentRow, 'state'>,
  batchRows: readonly BatchRow[],
  counters: Counters,
  bakeEnds: ReadonlyMap<number, Date> = new Map(),
): DeploymentView {
  const gated: GatedBatch[] = [];
  let bakeFailed = 0;
  const batches: Batch[] = batchRows.map((batchRow) => {
    const buckets = counters.get(batchRow.batch_index);
    const counts = deviceCountsOf(buckets);
    const endsAt = bakeEnds.get(batchRow.batch_index) ?? null;
    const batchBakeFailed = buckets?.get('bake_failed') ?? 0;
    bakeFailed += batchBakeFailed;
    gated.push({ state: batchRow.state, promoted: batchRow.promoted, tally: tallyOf(counts, endsAt?.getTime()) });
    return {
      index: batchRow.batch_index,
      kind: batchRow.kind,
      size: sizeOf(counts),
      state: batchRow.state,
      counts,
      waiting: waitingOf(buckets),
      bake_failed: batchBakeFailed,
      bake_ends_at: batchRow.state === 'baking' && endsAt ? endsAt.toISOString() : null,
      promoted: batchRow.promoted,
    };
  });
  const counts = sumCounts(batches.map((batch) => batch.counts));
  const waiting = emptyWaitingCounts();
  for (const batch of batches) for (const reason of WAIT_REASONS) waiting[reason] += batch.waiting[reason];
  const excluded = emptyExcludedCounts();
  const left = counters.get(-1);
  for (const reason of SKIP_REASONS) excluded[reason] = left?.get(`skipped/${reason}`) ?? 0;
  let rollback: RollbackCounts | null = null;
  for (const buckets of counters.values()) {
    for (const status of UPDATE_STATUSES) {
      const n = buckets.get(`rollback/${status}`) ?? 0;
      if (n === 0) continue;
      rollback ??= emptyRollbackCounts();
      rollback[status] += n;
    }
  }
  if (row.state === 'rolled_back') rollback ??= emptyRollbackCounts();
  return {
    status: row.state,
    controls: controlsFor(row.state, batches),
    total: sizeOf(counts),
    counts,
    waiting,
    bake_failed: bakeFailed,
    excluded,
    rollback,
    batches,
    gated,
  };
}

/** The row's settings, with those a deployment created before windows and budgets lacks: none. */
export function settingsOf(row: Pick<DeploymentRow, 'settings'>): DeploymentRow['settings'] {
  return {
    ...row.settings,
    maintenance_windows: row.settings.maintenance_windows ?? null,
    max_concurrent_downloads: row.settings.max_concurrent_downloads ?? null,
    max_bytes_per_second: row.settings.max_bytes_per_second ?? null,
  };
}

/** The API's deployment object. */
export function deploymentBody(row: DeploymentRow, view: DeploymentView) {
  return {
    id: row.id,
    version: row.version,
    status: view.status,
    controls: view.controls,
    target: row.target,
    ...settingsOf(row),
    start_at: row.start_at,
    total: view.total,
    counts: view.counts,
    waiting: view.waiting,
    bake_failed: view.bake_failed,
    excluded: view.excluded,
    rollback: view.rollback,
    batches: view.batches,
    created_at: row.created_at,
    started_at: row.started_at,
    ended_at: row.ended_at,
    stop_reason: row.stop_reason,
    stop: row.stop,
    created_by: row.created_by,
    approval: row.approval,
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
