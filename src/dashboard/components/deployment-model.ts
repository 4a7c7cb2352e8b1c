/**
 * The pure half of the deployment pages: a `deployment` event applied to the deployment on screen,
 * a batch's counts in words, and the create form's fields → the `POST /api/v1/deployments` body.
 * Which controls apply is never decided here: the server answers them (`controls`). No DOM, no
 * fetch: unit-tested from plain values (test/unit/dashboard-deployments.test.ts).
 */
import { parseRate, parseWindows } from '../../cli/deployment-format.ts';
import type { CreateDeploymentBody, OnFailure, RestStrategy, Strategy } from '../../server/deployments/schemas.ts';
import { failedOf, inProgressOf } from '../../server/model/deployment.ts';
import type { Batch, Deployment, DeploymentEvent, DeviceCounts, Timeline } from '../types.ts';

/** The last batch that has started (its state is no longer `pending`), or -1. */
function currentBatch(batches: readonly Pick<Batch, 'state'>[]): number {
  return batches.map((batch) => batch.state !== 'pending').lastIndexOf(true);
}

/** What a `deployment` event carries of the deployment (everything but its settings and the other batches). */
type EventFields =
  | 'id'
  | 'status'
  | 'total'
  | 'counts'
  | 'bake_failed'
  | 'rollback'
  | 'controls'
  | 'stop_reason'
  | 'batches';

/**
 * The deployment with an event's news: status, counts, bake failures, rollback, controls, stop
 * reason and the batch that changed, applied at once; the rest (the chart, the devices, the
 * other batches' timers) comes with the next read.
 */
export function applyDeploymentEvent<T extends Pick<Deployment, EventFields>>(
  deployment: T,
  event: DeploymentEvent,
): T {
  if (event.deployment_id !== deployment.id) return deployment;
  const changed = event.batch;
  return {
    ...deployment,
    status: event.status,
    total: event.total,
    counts: event.counts,
    bake_failed: event.bake_failed,
    rollback: event.rollback,
    controls: event.controls,
    stop_reason: event.stop_reason,
    batches: changed
      ? deployment.batches.map((batch) =>
          batch.index === changed.index
            ? {
                ...batch,
                state: changed.state,
                size: changed.size,
                counts: changed.counts,
                bake_failed: changed.bake_failed,
                bake_ends_at: changed.bake_ends_at,
              }
            : batch,
        )
      : deployment.batches,
  };
}

export { failedOf, inProgressOf };

/**
 * `3 completed · 2 baking · 2 failed (1 in the bake) · 2 in progress of 9`: what a batch's (or a
 * deployment's) bar shows, in words. `bakeFailed` is part of the failed.
 */
export function describeProgress(counts: DeviceCounts, size: number, bakeFailed = 0): string {
  const parts = [`${counts.completed} completed`];
  if (counts.baking > 0) parts.push(`${counts.baking} baking`);
  if (failedOf(counts) > 0)
    parts.push(`${failedOf(counts)} failed${bakeFailed > 0 ? ` (${bakeFailed} in the bake)` : ''}`);
  if (inProgressOf(counts) > 0) parts.push(`${inProgressOf(counts)} in progress`);
  if (counts.cancelled + counts.skipped > 0) parts.push(`${counts.cancelled + counts.skipped} cancelled or skipped`);
  return `${parts.join(' · ')} of ${size}`;
}

/** Seconds left until `endsAt` as `m:ss` (never negative). */
export function formatCountdown(endsAtMs: number, nowMs: number): string {
  const seconds = Math.max(0, Math.ceil((endsAtMs - nowMs) / 1000));
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, '0')}`;
}

// --- the create form ---------------------------------------------------------------------------

/** The create form as typed: text, so that an empty field means "the server's default". */
export interface DeploymentForm {
  version: string;
  /** The whole fleet, or the devices that match every selector below. */
  wholeFleet: boolean;
  tags: string;
  models: string;
  currentVersions: string;
  deviceIds: string;
  strategy: Strategy;
  /** Rolling batches, or a canary's rolling rest. */
  batchSize: string;
  batchUnit: 'devices' | 'percent';
  canarySize: string;
  canaryUnit: 'devices' | 'percent';
  restStrategy: RestStrategy;
  thresholdPercent: string;
  minSample: string;
  bakeMinutes: string;
  onFailure: OnFailure;
  maxPerMinute: string;
  deviceTimeoutMinutes: string;
  retries: string;
  /** A `datetime-local` value: local time, no zone. */
  startAt: string;
  /** Maintenance windows in each device's local time, `mon-fri 02:00-05:00`, `;` between; empty: the organization's. */
  windows: string;
  maxDownloads: string;
  /** `10MB/s`, `512KiB/s`. */
  maxBandwidth: string;
  force: boolean;
  dynamic: boolean;
}

export function emptyForm(): DeploymentForm {
  return {
    version: '',
    wholeFleet: true,
    tags: '',
    models: '',
    currentVersions: '',
    deviceIds: '',
    strategy: 'canary',
    batchSize: '',
    batchUnit: 'percent',
    canarySize: '10',
    canaryUnit: 'percent',
    restStrategy: 'all_at_once',
    thresholdPercent: '',
    minSample: '',
    bakeMinutes: '',
    onFailure: 'pause',
    maxPerMinute: '',
    deviceTimeoutMinutes: '',
    retries: '',
    startAt: '',
    windows: '',
    maxDownloads: '',
    maxBandwidth: '',
    force: false,
    dynamic: false,
  };
}

/** A field the form cannot turn into a request; shown next to the form like a server refusal. */
export class FormError extends Error {}

/** `a, b  c` → ['a', 'b', 'c']: commas or spaces separate. */
function listOf(text: string): string[] | undefined {
  const items = text
    .split(/[\s,]+/)
    .map((item) => item.trim())
    .filter(Boolean);
  return items.length > 0 ? items : undefined;
}

function numberOf(label: string, text: string): number | undefined {
  const trimmed = text.trim();
  if (!trimmed) return undefined;
  const value = Number(trimmed);
  if (!Number.isFinite(value)) throw new FormError(`${label} must be a number (got "${trimmed}")`);
  return value;
}

function batchSizeOf(size: string, unit: 'devices' | 'percent'): number | string | undefined {
  const value = numberOf('The batch size', size);
  if (value === undefined) return undefined;
  // The API takes a percentage as text ("10%") and checks it; a count as a number.
  return unit === 'percent' ? `${value}%` : value;
}

/** The CLI's parsers say what is wrong in one line: the form shows it like its own. */
function asFormError<T>(parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    throw new FormError((error as Error).message);
  }
}

/** `mon-fri 02:00-05:00; sat,sun 22:00-02:00` → windows; empty: none given (the organization's). */
function windowsOf(text: string) {
  const specs = text
    .split(/[;\n]+/)
    .map((spec) => spec.trim())
    .filter(Boolean);
  return specs.length > 0 ? parseWindows('Windows', specs) : undefined;
}

/**
 * The request body of the form, without `dry_run`. Only what the operator filled in is sent: the
 * server applies its documented defaults and refuses bad combinations with a code of its own.
 */
export function requestOf(form: DeploymentForm): CreateDeploymentBody {
  const target: CreateDeploymentBody['target'] = form.wholeFleet
    ? { all: true }
    : Object.fromEntries(
        Object.entries({
          device_ids: listOf(form.deviceIds),
          tags: listOf(form.tags),
          models: listOf(form.models),
          current_versions: listOf(form.currentVersions),
        }).filter(([, value]) => value !== undefined),
      );
  if (Object.keys(target).length === 0) {
    throw new FormError('Choose the devices: the whole fleet, or tags, models, current versions or device ids');
  }
  const rolling = form.strategy === 'rolling' || (form.strategy === 'canary' && form.restStrategy === 'rolling');
  const canary = form.strategy === 'canary' ? numberOf('The canary size', form.canarySize) : undefined;
  if (form.strategy === 'canary' && canary === undefined) throw new FormError('A canary needs its size');
  if (rolling && !form.batchSize.trim()) throw new FormError('Rolling batches need a batch size');
  const startAt = form.startAt.trim() ? Date.parse(form.startAt) : undefined;
  if (startAt !== undefined && !Number.isFinite(startAt)) throw new FormError('The start time is not a date and time');
  const body: Record<string, unknown> = {
    version: form.version,
    target,
    strategy: form.strategy,
    batch_size: rolling ? batchSizeOf(form.batchSize, form.batchUnit) : undefined,
    canary_percent: canary !== undefined && form.canaryUnit === 'percent' ? canary : undefined,
    canary_count: canary !== undefined && form.canaryUnit === 'devices' ? canary : undefined,
    rest_strategy: form.strategy === 'canary' ? form.restStrategy : undefined,
    failure_threshold_percent: numberOf('The failure threshold', form.thresholdPercent),
    min_sample: numberOf('The minimum sample', form.minSample),
    bake_minutes: numberOf('The bake time', form.bakeMinutes),
    on_failure: form.onFailure,
    max_per_minute: numberOf('The dispatch rate', form.maxPerMinute),
    device_timeout_minutes: numberOf('The device timeout', form.deviceTimeoutMinutes),
    max_retries: numberOf('The retries', form.retries),
    start_at: startAt !== undefined ? new Date(startAt).toISOString() : undefined,
    maintenance_windows: asFormError(() => windowsOf(form.windows)),
    max_concurrent_downloads: numberOf('The downloads at once', form.maxDownloads),
    max_bytes_per_second: form.maxBandwidth.trim()
      ? asFormError(() => parseRate('The bandwidth', form.maxBandwidth))
      : undefined,
    force: form.force || undefined,
    dynamic: form.dynamic || undefined,
  };
  return Object.fromEntries(Object.entries(body).filter(([, value]) => value !== undefined)) as CreateDeploymentBody;
}

/** A timestamp as the browser receives it: the server's schema also allows the Date it serializes. */
export function isoOf(at: string | Date | null): string | null {
  return at === null ? null : typeof at === 'string' ? at : at.toISOString();
}

/** How many started batches the page lists before the current one; older ones are summed up. */
export const BATCHES_BEFORE = 20;
/** How many batches still waiting the page lists after the current one. */
export const BATCHES_AFTER = 3;

/**
 * The batches worth a row: the current one, a few before and a few after. A rolling deployment by
 * one device over a large fleet has thousands of batches; the rest is counted, not drawn.
 */
export function visibleBatches<T extends Pick<Batch, 'state' | 'size'>>(
  batches: readonly T[],
): { earlier: { batches: number; devices: number }; shown: T[]; later: { batches: number; devices: number } } {
  const current = Math.max(0, currentBatch(batches));
  const from = Math.max(0, current - BATCHES_BEFORE);
  const to = Math.min(batches.length, current + BATCHES_AFTER + 1);
  const sum = (part: readonly T[]) => ({
    batches: part.length,
    devices: part.reduce((devices, batch) => devices + batch.size, 0),
  });
  return { earlier: sum(batches.slice(0, from)), shown: batches.slice(from, to), later: sum(batches.slice(to)) };
}

// --- the chart ---------------------------------------------------------------------------------

export interface Running {
  atMs: number;
  completed: number;
  failed: number;
}

/**
 * Running totals at the end of each bucket: zero from `fromMs` (the deployment's start) or the
 * first bucket's start, whichever is earlier, and the last totals held until `toMs` (now, or its
 * end), so that the line spans the rollout and a quiet spell reads as flat.
 */
export function runningTotals(timeline: Timeline, span: { fromMs?: number; toMs?: number } = {}): Running[] {
  const totals: Running[] = [];
  let completed = 0;
  let failed = 0;
  for (const point of timeline.points) {
    const atMs = Date.parse(point.at);
    if (totals.length === 0) totals.push({ atMs: Math.min(atMs, span.fromMs ?? atMs), completed: 0, failed: 0 });
    completed += point.completed;
    failed += point.failed;
    totals.push({ atMs: atMs + timeline.bucket_seconds * 1000, completed, failed });
  }
  const last = totals.at(-1);
  if (last && span.toMs !== undefined && span.toMs > last.atMs) totals.push({ ...last, atMs: span.toMs });
  return totals;
}
