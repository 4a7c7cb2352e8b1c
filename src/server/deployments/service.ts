/** Fleet deployments: create (or plan), read, and the operator's controls. The scheduler does the rollout. */
import { getFirmware } from '../firmware/service.ts';
import type { Queryable } from '../infra/db.ts';
import { ConflictError, NotFoundError } from '../infra/errors.ts';
import { newId } from '../infra/secrets.ts';
import type { Services } from '../services.ts';
import { announceChanges } from './announce.ts';
import { classifyTargets, describePlan, planBatches, type TargetRules } from './plan.ts';
import * as repo from './repo.ts';
import {
  type CreateDeploymentBody,
  checkDeploymentRequest,
  type DeploymentPlan,
  type DeploymentStatus,
  deploymentSettingsOf,
} from './schemas.ts';
import { deploymentBody, deviceStatusOf, hasEnded, timelineBucketSeconds, viewOf } from './view.ts';

export type DeploymentBody = ReturnType<typeof deploymentBody>;
export type Control = 'pause' | 'resume' | 'cancel' | 'promote' | 'rollback';

/**
 * Plans the deployment on the organization's devices matching its target, in a stable order,
 * so a dry run answers what the real run then does. The real run plans under a per-organization
 * lock: two deployments created together never both take a device.
 */
export async function createDeployment(
  services: Services,
  organizationId: string,
  body: CreateDeploymentBody,
): Promise<{ dryRun: true; plan: DeploymentPlan } | { dryRun: false; deployment: DeploymentBody }> {
  checkDeploymentRequest(body);
  const settings = deploymentSettingsOf(body);
  const firmware = await getFirmware(services, organizationId, body.version);
  const rules: TargetRules = {
    version: body.version,
    compatibleModels: firmware.compatible_models,
    force: settings.force,
  };
  const startAt = body.start_at ? new Date(body.start_at) : null;
  if (body.dry_run) {
    const candidates = await repo.findTargetCandidates(services.db, organizationId, body.target);
    return { dryRun: true, plan: describePlan(candidates, rules, settings, startAt) };
  }
  const id = newId('dep');
  await services.db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`deployments:${organizationId}`]);
    const candidates = await repo.findTargetCandidates(tx, organizationId, body.target);
    const eligible = classifyTargets(candidates, rules).eligible;
    const batches = planBatches(eligible, settings);
    const versionOf = new Map(candidates.map((candidate) => [candidate.device_id, candidate.current_version]));
    const [row] = await repo.insertDeployment(tx, {
      id,
      organizationId,
      version: body.version,
      target: body.target,
      settings,
      startAt,
    });
    // A dynamic deployment with nothing to take yet still has a batch for the devices to come.
    await repo.insertBatches(
      tx,
      id,
      batches.length === 0 && settings.dynamic ? [{ index: 0, kind: 'batch' }] : batches,
    );
    await repo.insertDeploymentDevices(
      tx,
      id,
      organizationId,
      batches.flatMap((batch) =>
        batch.deviceIds.map((deviceId) => ({
          deviceId,
          batchIndex: batch.index,
          fromVersion: versionOf.get(deviceId)!,
        })),
      ),
    );
    await announce(services, tx, row!);
  });
  services.scheduler.kick();
  return { dryRun: false, deployment: await getDeployment(services, organizationId, id) };
}

async function viewIn(services: Services, db: Queryable, row: repo.DeploymentRow) {
  const [batches, devices] = [await repo.listBatches(db, row.id), await repo.listDeviceStates(db, row.id)];
  return viewOf(row, batches, devices, Date.now(), services.config.deploymentRetryBaseMs);
}

async function announce(services: Services, tx: Queryable, row: repo.DeploymentRow) {
  await announceChanges(tx, services.feed, row, await viewIn(services, tx, row));
}

async function findOrThrow(db: Queryable, organizationId: string, id: string) {
  const row = await repo.findDeployment(db, organizationId, id);
  if (!row) throw new NotFoundError('deployment_not_found', `no deployment ${id}`);
  return row;
}

export async function getDeployment(services: Services, organizationId: string, id: string): Promise<DeploymentBody> {
  const row = await findOrThrow(services.db, organizationId, id);
  return deploymentBody(row, await viewIn(services, services.db, row));
}

/** Newest first, optionally only those of one status (derived, so filtered after reading). */
export async function listDeployments(
  services: Services,
  organizationId: string,
  query: { status?: DeploymentStatus | undefined; limit: number },
): Promise<DeploymentBody[]> {
  const found: DeploymentBody[] = [];
  let before: { createdAt: Date; id: string } | undefined;
  for (;;) {
    const rows = await repo.listDeployments(services.db, organizationId, { limit: 100, before });
    for (const row of rows) {
      const body = deploymentBody(row, await viewIn(services, services.db, row));
      if (!query.status || body.status === query.status) found.push(body);
      if (found.length >= query.limit) return found;
    }
    if (rows.length < 100) return found;
    const last = rows.at(-1)!;
    before = { createdAt: last.created_at, id: last.id };
  }
}

export async function listDeploymentDevices(
  services: Services,
  organizationId: string,
  id: string,
  query: { status?: string | undefined; failing?: boolean | undefined; after?: string | undefined; limit: number },
) {
  await findOrThrow(services.db, organizationId, id);
  const rows = await repo.listDevicePage(services.db, id, query);
  return {
    devices: rows.map((row) => ({
      device_id: row.device_id,
      batch: row.batch_index,
      status: deviceStatusOf(row),
      update_id: row.update_id,
      from_version: row.from_version,
      current_version: row.current_version,
      online: row.online,
      error_code: row.error_code,
      error_message: row.error_message,
      bake_failure: row.bake_failure,
    })),
    next_after: rows.length === query.limit ? (rows.at(-1)?.device_id ?? null) : null,
  };
}

/**
 * Completions and failures over time: per bucket (aligned to when the deployment started, or
 * was created), its updates that completed, and those that failed or timed out plus its
 * devices that failed their bake. Without `bucketSeconds`, the width that fits the deployment's
 * span (to now while it runs, else to its end or its last outcome) into at most 120 buckets.
 */
export async function deploymentTimeline(
  services: Services,
  organizationId: string,
  id: string,
  query: { bucketSeconds?: number | undefined },
) {
  const row = await findOrThrow(services.db, organizationId, id);
  let bucketSeconds = query.bucketSeconds;
  if (bucketSeconds === undefined) {
    const span = await repo.findTimelineSpan(services.db, id);
    const endMs = Math.max(row.finished_at?.getTime() ?? Date.now(), span?.last_at?.getTime() ?? 0);
    bucketSeconds = timelineBucketSeconds(endMs - (span?.origin ?? row.created_at).getTime());
  }
  const points = await repo.countOutcomesByBucket(services.db, id, bucketSeconds);
  return { bucket_seconds: bucketSeconds, points };
}

/**
 * An operator's control, under the deployment's row lock (a scheduler pass on it finishes
 * first). pause and resume are refused on an ended deployment (409 deployment_finished), as
 * are cancel and promote; rollback also works on a completed deployment, once.
 */
export async function controlDeployment(
  services: Services,
  organizationId: string,
  id: string,
  control: Control,
): Promise<DeploymentBody> {
  await services.db.transaction(async (tx) => {
    const row = await repo.lockDeployment(tx, organizationId, id);
    if (!row) throw new NotFoundError('deployment_not_found', `no deployment ${id}`);
    const ended = () => new ConflictError('deployment_finished', `deployment ${id} has ended; it cannot ${control}`);
    const cancelQueued = (why: string) =>
      services.transitions.cancelOfDeployment(
        { organizationId, deploymentId: id },
        ['queued'],
        { errorCode: `deployment_${why}`, errorMessage: `the deployment was ${why.replace('_', ' ')}` },
        tx,
      );
    switch (control) {
      case 'pause':
        if (hasEnded(row)) throw ended();
        await repo.markDeployment(tx, id, { paused: true });
        row.paused = true;
        break;
      case 'resume': {
        if (hasEnded(row)) throw ended();
        if (!row.paused) throw new ConflictError('deployment_not_paused', `deployment ${id} is not paused`);
        // Resuming past a failed gate accepts its failures: those batches are no longer gated.
        const view = await viewIn(services, tx, row);
        const failed = view.batches.filter((batch) => batch.state === 'failed').map((batch) => batch.index);
        await repo.promoteBatches(tx, id, failed);
        await repo.markDeployment(tx, id, { paused: false });
        row.paused = false;
        break;
      }
      case 'cancel':
        if (hasEnded(row)) throw ended();
        await cancelQueued('cancelled');
        await repo.markDeployment(tx, id, { cancelled: true });
        row.cancelled_at = new Date();
        break;
      case 'promote': {
        if (hasEnded(row)) throw ended();
        const batches = await repo.listBatches(tx, id);
        const current = batches.map((batch) => batch.started_at !== null).lastIndexOf(true);
        if (current < 0) throw new ConflictError('deployment_not_started', `deployment ${id} has not started a batch`);
        if (current === batches.length - 1) {
          throw new ConflictError(
            'no_next_batch',
            `deployment ${id} is on its last batch; there is nothing to promote`,
          );
        }
        await repo.promoteBatches(tx, id, [batches[current]!.batch_index]);
        break;
      }
      case 'rollback':
        if (row.rolled_back_at) throw new ConflictError('deployment_rolled_back', `deployment ${id} is rolled back`);
        if (row.cancelled_at) throw ended();
        await cancelQueued('rolled_back');
        await repo.markDeployment(tx, id, { rolledBack: 'rolled back by an operator' });
        row.rolled_back_at = new Date();
        row.aborted_at ??= new Date();
        break;
    }
    await announce(services, tx, row);
  });
  services.scheduler.kick();
  return getDeployment(services, organizationId, id);
}
