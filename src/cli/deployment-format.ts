/**
 * The pure half of the deployment commands: flags → the `POST /api/v1/deployments` body, the
 * words for a deployment's strategy, settings, target, left-out devices and rollback, and the text
 * of a dry-run plan. No I/O, and only type imports from the server, so the dashboard shares these
 * words without bundling the server's schemas (the live status block is deployment-status.ts).
 * Unit-tested from plain values (test/unit/cli-deployments.test.ts).
 */
import type {
  AnsweredTarget,
  BatchSize,
  CreateDeploymentBody,
  DeploymentPlan,
  DeploymentSettings,
  DeviceSample,
  OnFailure,
  RestStrategy,
  Strategy,
} from '../server/deployments/schemas.ts';
import type { RollbackCounts, SkipReason } from '../server/model/deployment.ts';
import { formatWindow, type MaintenanceWindow, parseWindow } from '../server/model/maintenance-window.ts';
import { isActive, type UpdateStatus } from '../server/model/update-status.ts';
import { CliError } from './errors.ts';

/** Exit code of a command line the user has to correct (as for a bad --server URL). */
const USAGE = 2;

const usage = (message: string) => new CliError(message, USAGE);

// --- flags → request ---------------------------------------------------------------------------

const DURATION_PART = '(\\d+(?:\\.\\d+)?)';
const DURATION = new RegExp(`^(?:${DURATION_PART}h)?(?:${DURATION_PART}m)?(?:${DURATION_PART}s)?$`);

/**
 * A duration as typed on the command line, in minutes (the unit of the API): `30s` → 0.5,
 * `10m` → 10, `1h` → 60, `1h30m` → 90; a bare number is minutes. Fractions are kept: a bake of
 * 30 seconds is `bake_minutes: 0.5`.
 */
export function parseDuration(flag: string, text: string): number {
  const trimmed = text.trim();
  if (/^\d+(?:\.\d+)?$/.test(trimmed)) return Number(trimmed);
  const match = DURATION.exec(trimmed);
  if (!trimmed || !match) {
    throw usage(`${flag} must be a duration such as 30s, 10m, 1h or 1h30m (got ${JSON.stringify(text)})`);
  }
  const [, hours = '0', minutes = '0', seconds = '0'] = match;
  return Number(hours) * 60 + Number(minutes) + Number(seconds) / 60;
}

/** Minutes as a person reads them back: 0.5 → `30s`, 90 → `1h30m`, 0 → `0s`. */
export function formatMinutes(minutes: number): string {
  const totalSeconds = Math.round(minutes * 60);
  const hours = Math.floor(totalSeconds / 3600);
  const mins = Math.floor((totalSeconds % 3600) / 60);
  const secs = totalSeconds % 60;
  const text = `${hours ? `${hours}h` : ''}${mins ? `${mins}m` : ''}${secs ? `${secs}s` : ''}`;
  return text || '0s';
}

/** `50` → 50 devices, `10%` → a share of the target list (the API takes the string). */
export function parseBatchSize(text: string): BatchSize {
  const trimmed = text.trim();
  if (/^[1-9]\d*$/.test(trimmed)) return Number(trimmed);
  if (/^(100|[1-9]\d?)%$/.test(trimmed)) return trimmed;
  throw usage(
    `--batch-size must be a number of devices or a percentage from 1% to 100%, e.g. 50 or 10% (got ${JSON.stringify(text)})`,
  );
}

function wholeNumber(flag: string, text: string, minimum: number): number {
  const trimmed = text.trim();
  if (!/^\d+$/.test(trimmed) || Number(trimmed) < minimum) {
    throw usage(`${flag} must be a whole number from ${minimum} (got ${JSON.stringify(text)})`);
  }
  return Number(trimmed);
}

function percentage(flag: string, text: string): number {
  const trimmed = text.trim().replace(/%$/, '');
  const value = Number(trimmed);
  if (!/^\d+(?:\.\d+)?$/.test(trimmed) || value > 100) {
    throw usage(`${flag} must be a percentage from 0 to 100 (got ${JSON.stringify(text)})`);
  }
  return value;
}

function oneOf<T extends string>(flag: string, text: string, choices: readonly T[]): T {
  if ((choices as readonly string[]).includes(text)) return text as T;
  throw usage(`${flag} must be one of ${choices.join(', ')} (got ${JSON.stringify(text)})`);
}

function listOf(text: string): string[] {
  return text
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean);
}

/** `--start-at` in any form Date understands, sent as UTC (a time without a zone is local time). */
function instant(text: string): string {
  const ms = Date.parse(text);
  if (!Number.isFinite(ms)) {
    throw usage(`--start-at must be a date and time such as 2030-01-31T02:00:00Z (got ${JSON.stringify(text)})`);
  }
  return new Date(ms).toISOString();
}

/** The `deploy` flags as commander hands them over: strings, parsed here so a mistake is one line. */
export interface DeployFlags {
  devices?: string;
  tags?: string;
  models?: string;
  currentVersions?: string;
  all?: boolean;
  dynamic?: boolean;
  strategy?: string;
  batchSize?: string;
  canaryPercent?: string;
  canaryCount?: string;
  rest?: string;
  bake?: string;
  threshold?: string;
  minSample?: string;
  onFailure?: string;
  maxPerMinute?: string;
  deviceTimeout?: string;
  retries?: string;
  startAt?: string;
  force?: boolean;
  dryRun?: boolean;
  /** `mon-fri 02:00-05:00`, repeatable; `none`: any time (not the organization's windows). */
  window?: string[];
  maxDownloads?: string;
  maxBandwidth?: string;
}

/** `--window` values as windows: `none` alone is none at all (any time). */
export function parseWindows(flag: string, texts: readonly string[]): MaintenanceWindow[] {
  if (texts.length === 1 && texts[0]!.trim() === 'none') return [];
  return texts.map((text) => {
    try {
      return parseWindow(text);
    } catch (error) {
      throw usage(`${flag}: ${(error as Error).message}`);
    }
  });
}

const RATE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1000,
  mb: 1000 ** 2,
  gb: 1000 ** 3,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
};

/** A rate as typed: `10MB/s` (10,000,000 bytes per second), `512KiB/s`, `2000000`; in bytes per second. */
export function parseRate(flag: string, text: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?(?:\/s)?$/i.exec(text.trim());
  const value = match ? Math.floor(Number(match[1]) * RATE_UNITS[(match[2] ?? 'b').toLowerCase()]!) : Number.NaN;
  if (!(value >= 1024)) {
    throw usage(`${flag} must be a rate of at least 1KiB/s such as 10MB/s or 512KiB/s (got ${JSON.stringify(text)})`);
  }
  return value;
}

/** `10 MB/s`, `512 KiB/s`: a rate in bytes per second, in the unit it reads best. */
export function formatRate(bytesPerSecond: number): string {
  for (const [unit, size] of [
    ['GB', 1000 ** 3],
    ['MB', 1000 ** 2],
    ['kB', 1000],
  ] as const) {
    if (bytesPerSecond >= size) return `${Number((bytesPerSecond / size).toFixed(1))} ${unit}/s`;
  }
  return `${bytesPerSecond} B/s`;
}

// --- an organization's settings ----------------------------------------------------------------

/** `GET /api/v1/settings/maintenance-windows`, as far as it is shown. */
export interface WindowSettings {
  maintenance_windows: MaintenanceWindow[];
  timezone: string;
  window_jitter_minutes: number;
}

/** `GET /api/v1/settings/budgets`, as far as it is shown. */
export interface BudgetSettings {
  max_concurrent_downloads: number | null;
  max_bytes_per_second: number | null;
}

/** The organization's default windows, zone and jitter, a line each (`settings windows`; the new-deployment form). */
export function windowSettingsLines(settings: WindowSettings): string[] {
  const windows = settings.maintenance_windows.length
    ? settings.maintenance_windows.map(formatWindow).join(' + ')
    : 'none (any time)';
  return [
    `maintenance windows: ${windows}`,
    `time zone of devices without one: ${settings.timezone}`,
    `start jitter: up to ${settings.window_jitter_minutes} min (at most half a window)`,
  ];
}

/** The organization's download budgets, a line each. */
export function budgetSettingsLines(settings: BudgetSettings): string[] {
  return [
    `downloading at once: ${settings.max_concurrent_downloads ?? 'no cap'}`,
    `bandwidth: ${settings.max_bytes_per_second === null ? 'no cap' : formatRate(settings.max_bytes_per_second)}`,
  ];
}

const STRATEGIES: readonly Strategy[] = ['all_at_once', 'rolling', 'canary'];
const REST_STRATEGIES: readonly RestStrategy[] = ['rolling', 'all_at_once'];
const ON_FAILURE: readonly OnFailure[] = ['pause', 'abort', 'rollback'];

/**
 * The strategy the flags mean: the one named, else canary when a canary size is given, rolling
 * when only a batch size is, all at once otherwise. `--rest rolling` is implied by a canary
 * with a batch size: the batch size can only be the rest's.
 */
function strategyOf(flags: DeployFlags): Pick<CreateDeploymentBody, 'strategy' | 'rest_strategy'> {
  const canary = flags.canaryPercent !== undefined || flags.canaryCount !== undefined;
  const strategy = flags.strategy
    ? oneOf('--strategy', flags.strategy, STRATEGIES)
    : canary
      ? 'canary'
      : flags.batchSize !== undefined
        ? 'rolling'
        : 'all_at_once';
  const rest = flags.rest
    ? oneOf('--rest', flags.rest, REST_STRATEGIES)
    : strategy === 'canary' && flags.batchSize !== undefined
      ? 'rolling'
      : undefined;
  return { strategy, ...(rest ? { rest_strategy: rest } : {}) };
}

/**
 * The request body for `deploy <version>`. Only what the flags name is sent: the server fills
 * in its documented defaults and checks the combinations (its message names the field).
 */
export function deploymentRequestOf(version: string, flags: DeployFlags): CreateDeploymentBody {
  const target: CreateDeploymentBody['target'] = {
    ...(flags.devices !== undefined ? { device_ids: listOf(flags.devices) } : {}),
    ...(flags.tags !== undefined ? { tags: listOf(flags.tags) } : {}),
    ...(flags.models !== undefined ? { models: listOf(flags.models) } : {}),
    ...(flags.currentVersions !== undefined ? { current_versions: listOf(flags.currentVersions) } : {}),
    ...(flags.all ? { all: true as const } : {}),
  };
  if (Object.keys(target).length === 0) {
    throw usage('choose the devices: --devices a,b, --tags t1,t2, --models m, --current-versions v or --all');
  }
  const optional = <T>(text: string | undefined, parse: (text: string) => T) =>
    text === undefined ? undefined : parse(text);
  const body: CreateDeploymentBody = {
    version,
    target,
    ...strategyOf(flags),
    dynamic: flags.dynamic || undefined,
    batch_size: optional(flags.batchSize, parseBatchSize),
    canary_percent: optional(flags.canaryPercent, (text) => percentage('--canary-percent', text)),
    canary_count: optional(flags.canaryCount, (text) => wholeNumber('--canary-count', text, 1)),
    bake_minutes: optional(flags.bake, (text) => parseDuration('--bake', text)),
    failure_threshold_percent: optional(flags.threshold, (text) => percentage('--threshold', text)),
    min_sample: optional(flags.minSample, (text) => wholeNumber('--min-sample', text, 1)),
    on_failure: optional(flags.onFailure, (text) => oneOf('--on-failure', text, ON_FAILURE)),
    max_per_minute: optional(flags.maxPerMinute, (text) => wholeNumber('--max-per-minute', text, 1)),
    device_timeout_minutes: optional(flags.deviceTimeout, (text) => parseDuration('--device-timeout', text)),
    max_retries: optional(flags.retries, (text) => wholeNumber('--retries', text, 0)),
    start_at: optional(flags.startAt, instant),
    force: flags.force || undefined,
    maintenance_windows: flags.window?.length ? parseWindows('--window', flags.window) : undefined,
    max_concurrent_downloads: optional(flags.maxDownloads, (text) => wholeNumber('--max-downloads', text, 1)),
    max_bytes_per_second: optional(flags.maxBandwidth, (text) => parseRate('--max-bandwidth', text)),
    dry_run: flags.dryRun || undefined,
  };
  // Absent, not `undefined`: the body is sent as JSON and compared as a value in the tests.
  return Object.fromEntries(Object.entries(body).filter(([, value]) => value !== undefined)) as CreateDeploymentBody;
}

// --- text ----------------------------------------------------------------------------------------

/** `canary 5%, then rolling by 10%`: the strategy of a deployment in a few words. */
export function describeStrategy(settings: DeploymentSettings): string {
  const batches = (size: BatchSize | null) => (size === null ? '' : ` by ${size}`);
  switch (settings.strategy) {
    case 'all_at_once':
      return 'all at once';
    case 'rolling':
      return `rolling${batches(settings.batch_size)}`;
    case 'canary': {
      const canary =
        settings.canary_count !== null ? `${settings.canary_count} device(s)` : `${settings.canary_percent}%`;
      const rest = settings.rest_strategy === 'rolling' ? `rolling${batches(settings.batch_size)}` : 'all at once';
      return `canary ${canary}, then ${rest}`;
    }
  }
}

/** The gate and the limits, each only when it says something: `gate ≤10% failed (from 10), bake 10m, on failure rollback`. */
export function describeSettings(settings: DeploymentSettings): string {
  const parts = [
    `gate ≤${settings.failure_threshold_percent}% failed (from ${settings.min_sample})`,
    `bake ${formatMinutes(settings.bake_minutes)}`,
    `on failure ${settings.on_failure}`,
  ];
  if (settings.max_per_minute !== null) parts.push(`${settings.max_per_minute}/min`);
  if (settings.device_timeout_minutes !== null)
    parts.push(`device timeout ${formatMinutes(settings.device_timeout_minutes)}`);
  if (settings.max_retries > 0) parts.push(`${settings.max_retries} retries`);
  if (settings.dynamic) parts.push('dynamic');
  if (settings.force) parts.push('force');
  if (settings.maintenance_windows?.length) {
    parts.push(`windows ${settings.maintenance_windows.map(formatWindow).join(' + ')} (device time)`);
  }
  if (settings.max_concurrent_downloads) parts.push(`≤${settings.max_concurrent_downloads} downloading`);
  if (settings.max_bytes_per_second) parts.push(`≤${formatRate(settings.max_bytes_per_second)}`);
  return parts.join(', ');
}

/** How many ids a line of text shows; the JSON answer has the server's longer sample. */
const IDS_SHOWN = 5;

/** `a, b, c … (+17)`: the first ids of a set of `count` devices. */
export function sampleIds(ids: readonly string[], count: number): string {
  const shown = ids.slice(0, IDS_SHOWN);
  const more = count - shown.length;
  return `${shown.join(', ')}${more > 0 ? ` … (+${more})` : ''}`;
}

export const batchLabel = (index: number, kind: string) => `#${index} ${kind.padEnd(6)}`;

/**
 * Why the devices the target matched were left out, by the server's reason (the keys are the
 * server's `SkipReason`s: a reason added there fails this type check until it has its words).
 */
export const LEFT_OUT_WORDS: Record<SkipReason, (version: string) => string> = {
  already_on_version: (version) => `already on ${version}`,
  newer_version: (version) => `they run a version newer than ${version}`,
  incompatible: () => 'model not supported by the firmware',
  busy: () => 'held by another open deployment or update',
  version_changed: () => 'their version changed since they were planned',
  offline_timeout: () => 'offline past the device timeout',
};

/** A plan's devices that are not batched as planned, in the order the plan text lists them. */
export function planExceptions(plan: DeploymentPlan): { name: string; sample: DeviceSample; why: string }[] {
  const reasons = Object.entries(LEFT_OUT_WORDS) as [SkipReason, (version: string) => string][];
  return [
    ...reasons.map(([reason, why]) => ({ name: reason, sample: plan.excluded[reason], why: why(plan.version) })),
    ...(plan.not_found ? [{ name: 'not_found', sample: plan.not_found, why: 'listed, but no such device' }] : []),
    { name: 'offline', sample: plan.offline, why: 'in the batches; dispatched when they come online' },
  ].filter(({ sample }) => sample.count > 0);
}

/** The dry-run answer as text: batches with their sizes and first ids, then who is left out and why. */
export function renderPlan(plan: DeploymentPlan): string {
  const header = `dry run: ${plan.version} to ${plan.total} device(s), ${describeStrategy(plan.settings)}`;
  const exceptions = planExceptions(plan);
  const width = String(Math.max(plan.total, ...exceptions.map(({ sample }) => sample.count))).length;
  const nameWidth = Math.max(12, ...exceptions.map(({ name }) => name.length));
  const count = (n: number) => String(n).padStart(width);
  const lines = [header, `  ${describeSettings(plan.settings)}`];
  if (plan.start_at) lines.push(`  starts at ${plan.start_at}`);
  if (plan.approval.required) lines.push(`  needs approval: ${plan.approval.reason}`);
  if (plan.batches.length === 0) lines.push('  no batch: no device would be updated');
  for (const batch of plan.batches) {
    lines.push(
      `  ${batchLabel(batch.index, batch.kind)} ${count(batch.size)}  ${sampleIds(batch.device_ids, batch.size)}`,
    );
    const expected = batch.expected;
    if (expected?.first_start_at) {
      const first = new Date(expected.first_start_at).toISOString();
      const last = new Date(expected.last_start_at ?? expected.first_start_at).toISOString();
      lines.push(`    in its windows: from ${first}${last === first ? '' : `, the last device from ${last}`}`);
    }
  }
  for (const { name, sample, why } of exceptions) {
    lines.push(
      `  ${name.padEnd(nameWidth)} ${count(sample.count)}  ${why}: ${sampleIds(sample.device_ids, sample.count)}`,
    );
  }
  lines.push('nothing was created');
  return lines.join('\n');
}

/** `tags edge, site-a · 120 devices listed`: a deployment's target in a few words. */
export function describeTarget(target: AnsweredTarget): string {
  if (target.all) return 'the whole fleet';
  const parts: string[] = [];
  if (target.device_ids_count !== undefined) {
    parts.push(`${target.device_ids_count} device${target.device_ids_count === 1 ? '' : 's'} listed`);
  }
  const list = (name: string, values: string[] | undefined, shown = 5) => {
    if (!values?.length) return;
    const more = values.length > shown ? ` … (+${values.length - shown})` : '';
    parts.push(`${name} ${values.slice(0, shown).join(', ')}${more}`);
  };
  list('tags', target.tags);
  list('models', target.models);
  list('current versions', target.current_versions);
  return parts.join(' · ');
}

/** The outcomes of a rollback's rows, in the order they read; the rows still moving are "under way". */
const ROLLBACK_OUTCOMES: readonly UpdateStatus[] = ['completed', 'failed', 'timed_out', 'skipped', 'cancelled'];

/**
 * A deployment's rollback, its progress and outcome: `2 completed, 1 skipped of 3, done` or
 * `1 completed, 2 under way of 3`. `separator` joins the parts (`' · '` on the dashboard).
 */
export function describeRollback(rollback: RollbackCounts, separator = ', '): string {
  const total = Object.values(rollback).reduce((sum, n) => sum + n, 0);
  if (total === 0) return 'nothing to roll back yet';
  const underWay = underWayOf(rollback);
  const parts = ROLLBACK_OUTCOMES.filter((status) => rollback[status] > 0).map(
    (status) => `${rollback[status]} ${status.replace('_', ' ')}`,
  );
  if (underWay > 0) parts.push(`${underWay} under way`);
  return `${parts.join(separator)} of ${total}${underWay > 0 ? '' : ', done'}`;
}

function underWayOf(rollback: RollbackCounts): number {
  return (Object.keys(rollback) as UpdateStatus[]).filter(isActive).reduce((sum, status) => sum + rollback[status], 0);
}

/** Whether some rollback row of the deployment is still queued, sent or running. */
export function rollbackUnderWay(rollback: RollbackCounts | null): boolean {
  return rollback !== null && underWayOf(rollback) > 0;
}
