/**
 * Where an OTA status changes: the only code that writes `ota_updates.status` (a test checks
 * it). Creation, claims, device reports, requeues and timeouts all come through here, batched
 * where they are batched. The allowed statuses come from status.ts; the statement that changes
 * a row also announces it on the event feed (repo.ts), so every process sees the change once
 * it commits; the metric and the log line follow here, in the process that made it.
 */
import type { Logger } from 'pino';
import type { Queryable } from '../infra/db.ts';
import type { Metrics } from '../infra/metrics.ts';
import { CLAIMABLE_STATUSES, isActive, statusesLeadingTo, type UpdateStatus } from '../model/update-status.ts';
import * as repo from './repo.ts';

export type { Alongside, Attempt, NewUpdate, ProgressReport, Transitioned, TransitionFields } from './repo.ts';

export interface UpdateTransitionsDeps {
  db: Queryable;
  metrics: Metrics;
  log: Logger;
  /** The report deadline of a dispatched update without a timeout of its own. */
  updateTimeoutSeconds: number;
}

export class UpdateTransitions {
  readonly #deps: UpdateTransitionsDeps;

  constructor(deps: UpdateTransitionsDeps) {
    this.#deps = deps;
  }

  /**
   * New `queued` updates (or `dispatched` ones, claimed by their creator to send at once); a
   * device that already has an active update gets none (not returned).
   */
  async create(updates: readonly repo.NewUpdate[], tx: Queryable = this.#deps.db): Promise<repo.Transitioned[]> {
    if (updates.length === 0) return [];
    return this.#followed(await repo.insertQueued(tx, updates, this.#deps.updateTimeoutSeconds));
  }

  /** create, for a deployment's attempts by the thousand: each row as sending it reads it (repo.Attempt). */
  async createAttempts(updates: readonly repo.NewUpdate[], tx: Queryable = this.#deps.db): Promise<repo.Attempt[]> {
    if (updates.length === 0) return [];
    return this.#followed(await repo.insertAttempts(tx, updates, this.#deps.updateTimeoutSeconds));
  }

  /**
   * One update to `to`, if its status allows it (else undefined: a late or duplicate report).
   * `tx` runs it inside a caller's transaction; `alongside`, statements of the same statement (a
   * result and the device's versions commit together).
   */
  async move(
    where: { organizationId: string; id: string; deviceId?: string | undefined },
    to: UpdateStatus,
    fields: repo.TransitionFields = {},
    tx: Queryable = this.#deps.db,
    alongside?: repo.Alongside,
  ): Promise<repo.Transitioned | undefined> {
    const [row] = await repo.applyTransition(
      tx,
      { kind: 'one', ...where },
      statusesLeadingTo(to),
      to,
      fields,
      alongside,
    );
    return row && this.#followed([row])[0];
  }

  /**
   * Many named updates to `to` with the same fields (a burst of results), each if its status
   * allows it; `alongside` as for move.
   */
  async moveMany(
    rows: readonly { organizationId: string; id: string; deviceId: string }[],
    to: UpdateStatus,
    fields: repo.TransitionFields = {},
    alongside?: repo.Alongside,
  ): Promise<repo.Transitioned[]> {
    if (rows.length === 0) return [];
    return this.#followed(
      await repo.applyTransition(this.#deps.db, { kind: 'rows', rows }, statusesLeadingTo(to), to, fields, alongside),
    );
  }

  /**
   * Claims up to `limit` queued updates of devices whose tunnel `nodeId` holds, moving them to
   * dispatched with a report deadline; at `now` (the clock of windows), none whose window closed.
   * SKIP LOCKED: replicas never claim the same row.
   */
  async claim(
    nodeId: string,
    limit: number,
    deadlineInSeconds: number,
    now = new Date(),
  ): Promise<repo.Transitioned[]> {
    return this.#followed(
      await repo.applyTransition(
        this.#deps.db,
        { kind: 'claim', nodeId, limit, now },
        CLAIMABLE_STATUSES,
        'dispatched',
        {
          deadlineInSeconds,
        },
      ),
    );
  }

  /**
   * Progress reports of many devices in one statement: each update still active goes (or stays)
   * in_progress with its phase, its progress moving only forward, and its report deadline pushed.
   * Within a burst, a device's later report in the same phase replaces the earlier one; a new
   * phase is written (and announced) after it, by a statement of its own, so no phase is lost.
   */
  async reportProgress(
    reports: readonly repo.ProgressReport[],
    deadlineInSeconds: number,
  ): Promise<repo.Transitioned[]> {
    const layers: repo.ProgressReport[][] = [];
    const last = new Map<string, { layer: number; index: number; phase: string }>();
    for (const report of reports) {
      const key = `${report.organizationId}\u0000${report.deviceId}\u0000${report.id}`;
      const previous = last.get(key);
      if (previous && previous.phase === report.phase) {
        layers[previous.layer]![previous.index] = report;
        continue;
      }
      const layer = previous ? previous.layer + 1 : 0;
      layers[layer] ??= [];
      last.set(key, { layer, index: layers[layer]!.push(report) - 1, phase: report.phase });
    }
    const written: repo.Transitioned[] = [];
    for (const layer of layers) {
      const rows = await repo.applyTransition(
        this.#deps.db,
        { kind: 'reports', reports: layer },
        statusesLeadingTo('in_progress'),
        'in_progress',
        // phase: each report's own (given per row by the selection).
        { phase: null, deadlineInSeconds },
      );
      written.push(...this.#followed(rows));
    }
    return written;
  }

  /**
   * Cancels the deployment's attempts (not its rollbacks) still in one of `from` (a cancel or an
   * abort: `queued`, the ones no device has taken; running ones finish or get `ota_cancel`).
   * Batched; in the caller's transaction.
   */
  async cancelOfDeployment(
    where: { organizationId: string; deploymentId: string },
    from: readonly UpdateStatus[],
    fields: repo.TransitionFields,
    tx: Queryable = this.#deps.db,
  ): Promise<repo.Transitioned[]> {
    const allowed = statusesLeadingTo('cancelled').filter((status) => from.includes(status));
    return this.#followed(
      await repo.applyTransition(
        tx,
        { kind: 'deployment', ...where, updateKind: 'update' },
        allowed,
        'cancelled',
        fields,
      ),
    );
  }

  /**
   * Queued attempts of a deployment whose device's maintenance window opened again: claimable
   * until it closes (`ends_at`). Not a status change: the attempt stays queued.
   */
  async reopenWindows(deploymentId: string, renewed: readonly { update_id: string; ends_at: Date | null }[]) {
    await repo.renewWindows(this.#deps.db, deploymentId, renewed);
  }

  /** A deployment's queued attempts whose device stayed offline past its device timeout: skipped, never sent. */
  async skipOfflinePastTimeout(deploymentId: string, timeoutSeconds: number): Promise<repo.Transitioned[]> {
    return this.#followed(
      await repo.applyTransition(
        this.#deps.db,
        { kind: 'stale_queued', deploymentId, olderThanSeconds: timeoutSeconds },
        statusesLeadingTo('skipped').filter((status) => status === 'queued'),
        'skipped',
        {
          errorCode: 'offline_timeout',
          errorMessage: `the device stayed offline for more than the device timeout (${timeoutSeconds} s)`,
        },
      ),
    );
  }

  /**
   * A version change the device reported that the server did not order: a row of its history
   * (an offline install among them: undefined when it is on record already). `alongside` as for move.
   */
  async recordObserved(
    observed: Parameters<typeof repo.insertObserved>[1],
    tx: Queryable = this.#deps.db,
    alongside?: repo.Alongside,
  ): Promise<repo.Transitioned | undefined> {
    const [row] = await repo.insertObserved(tx, observed, alongside);
    return row && this.#followed([row])[0];
  }

  /** Active updates whose device has not reported in time, each with the status it really left. */
  async expireOverdue(): Promise<repo.Transitioned[]> {
    return this.#followed(
      await repo.applyTransition(this.#deps.db, { kind: 'overdue' }, statusesLeadingTo('timed_out'), 'timed_out', {
        errorCode: 'timed_out',
        errorMessage: 'the device did not report within the update timeout',
      }),
    );
  }

  /**
   * The metric and one info line per status change (progress within a status is not one). A
   * statement that moved many rows into an active status (a rollout's attempts created, claimed,
   * queued again) logs one line per deployment, version and change, with its count, as it announced them
   * (ota_bulk); an outcome (completed, failed, …) keeps its own line, device by device.
   */
  #followed<Row extends repo.Attempt>(rows: Row[]): Row[] {
    const { metrics, log } = this.#deps;
    const bulk = rows.length > repo.BULK_EVENT_ROWS;
    const summed = new Map<string, { row: Row; count: number }>();
    for (const row of rows) {
      if (row.status === row.previous_status) continue;
      if (bulk && isActive(row.status)) {
        const key = `${row.organization_id}\u0000${row.deployment_id}\u0000${row.target_version}\u0000${row.previous_status}\u0000${row.status}`;
        const change = summed.get(key);
        if (change) change.count += 1;
        else summed.set(key, { row, count: 1 });
        continue;
      }
      metrics.updatesByStatus.labels(row.status).inc();
      log.info(
        {
          organization_id: row.organization_id,
          device_id: row.device_id,
          update_id: row.id,
          ...(row.deployment_id ? { deployment_id: row.deployment_id } : {}),
          target_version: row.target_version,
          from: row.previous_status,
          ...(row.error_code ? { error: { code: row.error_code, message: row.error_message ?? '' } } : {}),
        },
        `update ${row.status}`,
      );
    }
    for (const { row, count } of summed.values()) {
      metrics.updatesByStatus.labels(row.status).inc(count);
      log.info(
        {
          organization_id: row.organization_id,
          ...(row.deployment_id ? { deployment_id: row.deployment_id } : {}),
          target_version: row.target_version,
          from: row.previous_status,
          count,
        },
        `${count} updates ${row.status}`,
      );
    }
    return rows;
  }
}
