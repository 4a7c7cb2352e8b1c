/**
 * The pure half of the deployment commands: flags → the `POST /api/v1/deployments` body, and
 * the text of a dry-run plan and of a deployment's status block (one bar per batch). No I/O,
 * so every rule here is unit-tested from plain values (test/unit/cli-deployments.test.ts).
 */
import type {
  BatchSize,
  CreateDeploymentBody,
  Deployment,
  DeploymentPlan,
  DeploymentSettings,
  DeploymentStatus,
  DeviceCounts,
  DeviceSample,
  OnFailure,
  RestStrategy,
  Strategy,
} from '../server/deployments/schemas.ts';
import { CliError } from './errors.ts';

/** Exit code of a command line the user has to correct (as for a bad --server URL). */
const USAGE = 2;

const usage = (message: string) => new CliError(message, USAGE);

/** The statuses a deployment does not leave: `--wait` and `watch <id>` stop there. */
export const FINISHED_STATUSES: readonly DeploymentStatus[] = ['completed', 'failed', 'cancelled', 'rolled_back'];

export function isFinished(status: DeploymentStatus): boolean {
  return FINISHED_STATUSES.includes(status);
}

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

const batchLabel = (index: number, kind: string) => `#${index} ${kind.padEnd(6)}`;

/** The dry-run answer as text: batches with their sizes and first ids, then who is left out and why. */
export function renderPlan(plan: DeploymentPlan): string {
  const header = `dry run: ${plan.version} to ${plan.total} device(s), ${describeStrategy(plan.settings)}`;
  const width = String(Math.max(plan.total, plan.skipped.count, plan.incompatible.count, plan.busy.count)).length;
  const count = (n: number) => String(n).padStart(width);
  const lines = [header, `  ${describeSettings(plan.settings)}`];
  if (plan.start_at) lines.push(`  starts at ${plan.start_at}`);
  if (plan.batches.length === 0) lines.push('  no batch: no device would be updated');
  for (const batch of plan.batches) {
    lines.push(
      `  ${batchLabel(batch.index, batch.kind)} ${count(batch.size)}  ${sampleIds(batch.device_ids, batch.size)}`,
    );
  }
  const left: [string, DeviceSample, string][] = [
    ['skipped', plan.skipped, `already on ${plan.version}`],
    ['incompatible', plan.incompatible, 'model not supported by the firmware'],
    ['busy', plan.busy, 'in another active deployment or update'],
    ['offline', plan.offline, 'in the batches; dispatched when they come online'],
  ];
  for (const [name, sample, why] of left) {
    if (sample.count === 0) continue;
    lines.push(`  ${name.padEnd(12)} ${count(sample.count)}  ${why}: ${sampleIds(sample.device_ids, sample.count)}`);
  }
  lines.push('nothing was created');
  return lines.join('\n');
}

/** The statuses in the order of a device's life, so summaries always read the same way. */
const COUNT_ORDER: readonly (keyof DeviceCounts)[] = [
  'completed',
  'failed',
  'timed_out',
  'in_progress',
  'dispatched',
  'queued',
  'pending',
  'cancelled',
  'skipped',
];

/** `40 completed, 3 failed, 67 pending`: the non-zero counts. */
export function summarizeCounts(counts: DeviceCounts): string {
  const parts = COUNT_ORDER.filter((status) => counts[status] > 0).map(
    (status) => `${counts[status]} ${status.replace('_', ' ')}`,
  );
  return parts.length > 0 ? parts.join(', ') : 'no devices';
}

/** The counts, and how many of the completed devices then failed their bake (the gate counts them failed). */
export function summarizeDeploymentCounts(deployment: Pick<Deployment, 'counts' | 'bake_failed'>): string {
  const bakeFailed = deployment.bake_failed > 0 ? `; ${deployment.bake_failed} completed, then failed the bake` : '';
  return `${summarizeCounts(deployment.counts)}${bakeFailed}`;
}

/**
 * A batch's bar: `#` completed, `x` failed or timed out, `-` cancelled or skipped, `>` on
 * their way (queued, dispatched, in progress), `.` not started. Each segment's cells come from
 * the running total, so rounding never makes the bar longer or shorter than `width`.
 */
export function batchBar(counts: DeviceCounts, size: number, width: number): string {
  const segments: [string, number][] = [
    ['#', counts.completed],
    ['x', counts.failed + counts.timed_out],
    ['-', counts.cancelled + counts.skipped],
    ['>', counts.queued + counts.dispatched + counts.in_progress],
  ];
  const known = segments.reduce((sum, [, n]) => sum + n, 0);
  // A dynamic deployment can count more devices than the size it started with.
  const total = Math.max(size, known + counts.pending);
  if (total === 0) return '.'.repeat(width);
  let bar = '';
  let running = 0;
  for (const [mark, n] of segments) {
    const from = Math.round((running * width) / total);
    running += n;
    bar += mark.repeat(Math.round((running * width) / total) - from);
  }
  return bar.padEnd(width, '.');
}

/** Devices of a batch that have their result. */
export function finishedCount(counts: DeviceCounts): number {
  return counts.completed + counts.failed + counts.timed_out + counts.cancelled + counts.skipped;
}

/** The deployment fields the status block reads; `abort_reason` is there when the server says why it stopped. */
export type DeploymentView = Deployment & { abort_reason?: string | null };

/**
 * The status block `show`, `watch` and `deploy --wait` print: what, where it stands, the counts,
 * then one line per batch with its bar. `columns` is the terminal width the lines must fit.
 */
export function renderDeployment(deployment: DeploymentView, columns = 100): string[] {
  const lines = [
    `deployment ${deployment.id}: ${deployment.version} to ${deployment.total} device(s), ${describeStrategy(deployment)} — ${deployment.status}`,
    `  ${describeSettings(deployment)}`,
    `  ${summarizeDeploymentCounts(deployment)}`,
  ];
  if (deployment.status === 'scheduled' && deployment.start_at) lines.push(`  starts at ${deployment.start_at}`);
  if (deployment.abort_reason) lines.push(`  stopped: ${deployment.abort_reason}`);
  const sizeWidth = String(Math.max(0, ...deployment.batches.map((batch) => batch.size))).length;
  const barWidth = Math.max(10, Math.min(40, columns - 50 - 2 * sizeWidth));
  for (const batch of deployment.batches) {
    const failures = batch.counts.failed + batch.counts.timed_out;
    const bar = `[${batchBar(batch.counts, batch.size, barWidth)}]`;
    const done = `${String(finishedCount(batch.counts)).padStart(sizeWidth)}/${String(batch.size).padEnd(sizeWidth)}`;
    const failed = failures > 0 ? `  ${failures} failed` : '';
    lines.push(`  ${batchLabel(batch.index, batch.kind)} ${batch.state.padEnd(7)} ${bar} ${done}${failed}`.trimEnd());
  }
  return lines;
}

/**
 * What a log (not a terminal) gets when the block is drawn again: the lines that differ from
 * the previous drawing, so an unchanged batch is not repeated on every change of another.
 */
export function changedLines(previous: readonly string[], next: readonly string[]): string[] {
  return next.filter((line, index) => previous[index] !== line);
}
