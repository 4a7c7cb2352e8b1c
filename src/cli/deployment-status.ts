/**
 * A deployment's status block, as `deployments show`, `watch <id>` and `deploy --wait` print it:
 * what it deploys and to which devices, its stored status, the counts per device state (bake
 * failures among the failed), its rollback beside them, the devices it left out, why a gate
 * stopped it, the controls the server offers now, then one bar per batch with the state the
 * server stores for it. Pure: unit-tested from plain values (test/unit/cli-deployments.test.ts).
 * CLI only: it reads the counting rules from the server's model, which the dashboard must not
 * bundle.
 */
import type { Deployment } from '../server/deployments/schemas.ts';
import { describeActor } from '../server/model/approval.ts';
import {
  DEVICE_STATES,
  type DeviceCounts,
  type ExcludedCounts,
  failedOf,
  finishedOf,
  inFlightOf,
} from '../server/model/deployment.ts';
import {
  batchLabel,
  describeRollback,
  describeSettings,
  describeStrategy,
  describeTarget,
} from './deployment-format.ts';

/**
 * `2 completed, 1 failed (1 in the bake), 27 cancelled`: the non-zero counts in the order of a
 * device's life; `bakeFailed` (part of `failed`) says how many of the failed failed in the bake.
 */
export function summarizeCounts(counts: DeviceCounts, bakeFailed = 0): string {
  const parts = DEVICE_STATES.filter((state) => counts[state] > 0).map((state) => {
    const text = `${counts[state]} ${state.replace('_', ' ')}`;
    return state === 'failed' && bakeFailed > 0 ? `${text} (${bakeFailed} in the bake)` : text;
  });
  return parts.length > 0 ? parts.join(', ') : 'no devices';
}

/** `2 already_on_version, 1 busy`: the devices left out by reason (the reasons `deployments devices --reason` takes). */
export function summarizeExcluded(excluded: ExcludedCounts): string {
  return (Object.entries(excluded) as [keyof ExcludedCounts, number][])
    .filter(([, n]) => n > 0)
    .map(([reason, n]) => `${n} ${reason}`)
    .join(', ');
}

/**
 * A batch's bar: `#` completed, `=` baking (committed, watched for the bake), `x` failed or timed
 * out (in the update or in the bake), `-` cancelled or skipped, `>` on their way (queued, sent,
 * updating, waiting for a retry), `.` not started. Each segment's cells come from the running
 * total, so rounding never makes the bar longer or shorter than `width`.
 */
export function batchBar(counts: DeviceCounts, size: number, width: number): string {
  const segments: [string, number][] = [
    ['#', counts.completed],
    ['=', counts.baking],
    ['x', failedOf(counts)],
    ['-', counts.cancelled + counts.skipped],
    ['>', inFlightOf(counts) - counts.pending],
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

/** The answer of `GET /api/v1/deployments/{id}` as the CLI reads it (JSON: timestamps are strings). */
export type DeploymentView = Deployment;

/** The block's lines; `columns` is the terminal width they must fit. */
export function renderDeployment(deployment: DeploymentView, columns = 100): string[] {
  const lines = [
    `deployment ${deployment.id}: ${deployment.version} to ${deployment.total} device(s), ${describeStrategy(deployment)} — ${deployment.status}`,
    `  target: ${describeTarget(deployment.target)}`,
    `  ${describeSettings(deployment)}`,
    `  ${summarizeCounts(deployment.counts, deployment.bake_failed)}`,
  ];
  lines.push(...approvalLines(deployment));
  if (deployment.rollback) lines.push(`  rollback: ${describeRollback(deployment.rollback)}`);
  const excluded = summarizeExcluded(deployment.excluded);
  if (excluded) lines.push(`  left out: ${excluded}`);
  if (deployment.status === 'scheduled' && deployment.start_at) lines.push(`  starts at ${deployment.start_at}`);
  if (deployment.stop_reason) lines.push(`  stopped: ${deployment.stop_reason}`);
  lines.push(`  controls: ${deployment.controls.length > 0 ? deployment.controls.join(', ') : 'none'}`);
  const sizeWidth = String(Math.max(0, ...deployment.batches.map((batch) => batch.size))).length;
  const barWidth = Math.max(10, Math.min(40, columns - 50 - 2 * sizeWidth));
  for (const batch of deployment.batches) {
    const failures = failedOf(batch.counts);
    const bar = `[${batchBar(batch.counts, batch.size, barWidth)}]`;
    const done = `${String(finishedOf(batch.counts)).padStart(sizeWidth)}/${String(batch.size).padEnd(sizeWidth)}`;
    const notes = [
      ...(failures > 0
        ? [`${failures} failed${batch.bake_failed > 0 ? ` (${batch.bake_failed} in the bake)` : ''}`]
        : []),
      ...(batch.promoted ? ['promoted'] : []),
    ];
    lines.push(
      `  ${batchLabel(batch.index, batch.kind)} ${batch.state.padEnd(7)} ${bar} ${done}  ${notes.join(', ')}`.trimEnd(),
    );
  }
  return lines;
}

/**
 * Who created it and, when its organization asked for approval, where the approval stands:
 * awaiting (what to run), or who approved or rejected it, when, and their comment.
 */
export function approvalLines(deployment: Pick<DeploymentView, 'id' | 'status' | 'created_by' | 'approval'>): string[] {
  const lines: string[] = [];
  if (deployment.created_by) lines.push(`  created by ${describeActor(deployment.created_by)}`);
  const approval = deployment.approval;
  if (!approval) return lines;
  if (approval.decision === null) {
    if (deployment.status === 'awaiting_approval') {
      lines.push(
        `  awaiting approval (${approval.reason}): an admin key of another person runs ` +
          `edgeflow-ota deployments approve ${deployment.id} (or reject ${deployment.id} --comment …)`,
      );
    }
    return lines;
  }
  const by = approval.decided_by ? describeActor(approval.decided_by) : 'unknown';
  const comment = approval.comment ? `: ${JSON.stringify(approval.comment)}` : '';
  lines.push(`  ${approval.decision} by ${by} at ${approval.decided_at}${comment}`);
  return lines;
}

/**
 * What a log (not a terminal) gets when the block is drawn again: the lines that differ from
 * the previous drawing, so an unchanged batch is not repeated on every change of another.
 */
export function changedLines(previous: readonly string[], next: readonly string[]): string[] {
  return next.filter((line, index) => previous[index] !== line);
}
