/**
 * Fleet deployments: create (or plan), read, and the operator's controls. The scheduler does
 * the rollout; every state change goes through the lifecycle writer (lifecycle.ts).
 */
import type { Logger } from 'pino';
import * as approvalsRepo from '../approvals/repo.ts';
import { versionsOf } from '../devices/repo.ts';
import * as firmwareRepo from '../firmware/repo.ts';
import { closeDoors } from '../holds/repo.ts';
import type { OrgPrincipal } from '../infra/auth.ts';
import { type Config, nowOf } from '../infra/config.ts';
import type { Db, Queryable } from '../infra/db.ts';
import { BadRequestError, ConflictError, ForbiddenError, NotFoundError } from '../infra/errors.ts';
import { newId } from '../infra/secrets.ts';
import { approvalReason, isOtherPerson, type KeyActor } from '../model/approval.ts';
import {
  type ApprovalControl,
  type Control,
  controlsFor,
  type DeploymentState,
  explainDevice,
  isEnded,
  type OperatorControl,
} from '../model/deployment.ts';
import * as orgsRepo from '../orgs/repo.ts';
import type { UpdateTransitions } from '../updates/transitions.ts';
import { findRolloutSettings } from '../windows/repo.ts';
import {
  type DueDevice,
  firstChunkOf,
  queueAttempts,
  queueDueChunk,
  type SendDispatched,
  sendInBackground,
} from './attempts.ts';
import { type DeploymentLifecycle, loadView, loadViews } from './lifecycle.ts';
import { classifyTargets, describePlan, matchedDevices, planBatches, sampleOf, type TargetRules } from './plan.ts';
import * as repo from './repo.ts';
import type { DeploymentScheduler } from './scheduler.ts';
import {
  type CreateDeploymentBody,
  checkDeploymentRequest,
  type DeploymentPlan,
  deploymentSettingsOf,
  PLAN_SAMPLE_IDS,
} from './schemas.ts';
import { deploymentBody, timelineBucketSeconds } from './view.ts';
import { dispatchRulesOf, expectedRun } from './waits.ts';

export type DeploymentBody = ReturnType<typeof deploymentBody>;

export interface DeploymentServiceDeps {
  config: Config;
  db: Db;
  transitions: UpdateTransitions;
  lifecycle: DeploymentLifecycle;
  scheduler: Pick<DeploymentScheduler, 'kick'>;
  /** This process among the replicas: attempts for devices whose tunnel it holds are sent from here. */
  nodeId: string;
  sendDispatched: SendDispatched;
  log: Logger;
}

/** Why a control does not apply now: the 409 the API answers. */
function refusal(id: string, control: Control, state: DeploymentState): ConflictError {
  if (control === 'resume' && !isEnded(state)) {
    return new ConflictError('deployment_not_paused', `deployment ${id} is ${state}, not paused`);
  }
  if (control === 'promote' && !isEnded(state)) {
    return new ConflictError(
      'no_next_batch',
      `deployment ${id} has no batch to promote to: it has not started one, or it is on its last batch`,
    );
  }
  if (control === 'rollback' && state === 'rolled_back') {
    return new ConflictError('deployment_rolled_back', `deployment ${id} is rolled back already`);
  }
  if ((control === 'approve' || control === 'reject') && state !== 'awaiting_approval') {
    return new ConflictError(
      'deployment_not_awaiting_approval',
      `deployment ${id} is ${state}, not awaiting approval; only a deployment awaiting approval can be ${control}d`,
    );
  }
  if (state === 'awaiting_approval') {
    return new ConflictError(
      'deployment_awaiting_approval',
      `deployment ${id} is awaiting approval; it cannot ${control} before an admin of another person approves it ` +
        '(approve, reject or cancel it)',
    );
  }
  if (control === 'rollback' && state === 'scheduled') {
    return new ConflictError(
      'deployment_not_started',
      `deployment ${id} has not started: nothing to roll back; cancel it`,
    );
  }
  return new ConflictError('deployment_finished', `deployment ${id} is ${state}; it cannot ${control}`);
}

export class DeploymentService {
  readonly #deps: DeploymentServiceDeps;

  constructor(deps: DeploymentServiceDeps) {
    this.#deps = deps;
  }

  /**
   * Plans the deployment on the organization's devices matching its target, in a stable order,
   * so a dry run answers what the real run then does. The real run plans with the organization's
   * doors closed (holds/repo.ts) and the firmware locked: two deployments never take one device,
   * a door (single update, rollback) never takes a device it took, and the firmware it installs
   * cannot be deleted under it.
   */
  async create(
    principal: Pick<OrgPrincipal, 'organizationId' | 'keyId'>,
    body: CreateDeploymentBody,
  ): Promise<{ dryRun: true; plan: DeploymentPlan } | { dryRun: false; deployment: DeploymentBody }> {
    checkDeploymentRequest(body);
    const { organizationId } = principal;
    const { db, config, lifecycle, scheduler, nodeId, transitions } = this.#deps;
    const settings = deploymentSettingsOf(body);
    const startAt = body.start_at ? new Date(body.start_at) : null;
    const rulesOf = (firmware: firmwareRepo.FirmwareRow): TargetRules => ({
      version: body.version,
      compatibleModels: firmware.compatible_models,
      force: settings.force,
    });
    const findFirmware = async (tx: Queryable, lock: 'share' | null) => {
      const firmware = await firmwareRepo.findFirmware(tx, organizationId, body.version, lock);
      if (!firmware) throw new NotFoundError('firmware_not_found', `no firmware ${body.version}`);
      return firmware;
    };
    if (body.dry_run) {
      const firmware = await findFirmware(db, null);
      const candidates = await repo.findTargetCandidates(db, { organizationId, target: body.target });
      const unknown = body.target.device_ids
        ? await repo.findUnknownDeviceIds(db, organizationId, body.target.device_ids, PLAN_SAMPLE_IDS)
        : null;
      const notFound = unknown ? sampleOf(unknown.sample, unknown.count) : null;
      const plan = describePlan(candidates, rulesOf(firmware), settings, startAt, notFound);
      const dispatch = dispatchRulesOf(settings, await findRolloutSettings(db, organizationId));
      const eligible = classifyTargets(candidates, rulesOf(firmware)).eligible;
      if (dispatch.windows.length > 0) {
        // When each batch is expected to run: from now (or its start), each device in its own window.
        const from = new Date(Math.max(nowOf(config).getTime(), startAt?.getTime() ?? 0));
        const candidateOf = new Map(candidates.map((candidate) => [candidate.device_id, candidate]));
        for (const [position, batch] of planBatches(eligible, settings).entries()) {
          const devices = batch.deviceIds.map((deviceId) => candidateOf.get(deviceId)!);
          plan.batches[position]!.expected = expectedRun(devices, dispatch, from);
        }
      }
      const reason = await this.#approvalReason(db, organizationId, body, eligible);
      return { dryRun: true, plan: { ...plan, approval: { required: reason !== null, reason } } };
    }
    const dispatch = dispatchRulesOf(settings, await findRolloutSettings(db, organizationId));
    const creator = await this.#actorOf(db, principal.keyId);
    const id = newId('dep');
    const started = await db.transaction(async (tx) => {
      await closeDoors(tx, organizationId);
      const open = await repo.countOpenDeployments(tx, organizationId);
      if (open >= config.maxOpenDeployments) {
        throw new ConflictError(
          'too_many_deployments',
          `the organization has ${open} open deployments (awaiting approval, scheduled, running or paused), the most allowed ` +
            `(EDGEFLOW_MAX_OPEN_DEPLOYMENTS); cancel or finish one first`,
        );
      }
      const firmware = await findFirmware(tx, 'share');
      const candidates = await repo.findTargetCandidates(tx, { organizationId, target: body.target, nodeId });
      const classes = classifyTargets(candidates, rulesOf(firmware));
      const batches = planBatches(classes.eligible, settings);
      // The policy as it is now, doors closed: awaiting approval, it holds its devices and
      // creates no attempt; approved, it runs the plan made here.
      const approvalWhy = await this.#approvalReason(tx, organizationId, body, classes.eligible);
      const awaiting = approvalWhy !== null;
      const startsNow = !awaiting && !(startAt && startAt.getTime() > Date.now());
      // Starting now, the first batch starts with the deployment, and its first chunk of attempts
      // is created in this transaction (its commands go out as it commits); the rest of the batch
      // is queued right after, chunk by chunk (queueDueChunk).
      const first = startsNow && batches.length > 0 ? batches[0]! : null;
      const chunk = new Map(
        firstChunkOf(first?.deviceIds ?? [], settings, dispatch).map((deviceId) => [deviceId, newId('upd')]),
      );
      const { device_ids: deviceIds, ...selectors } = body.target;
      // The writes go out back to back, each built while PostgreSQL runs the one before (the
      // connection runs them in order; PGlite one after the other): 10,000 attempts' parameters
      // are built while the device rows are inserted, not after.
      const inserted = repo.insertDeployment(tx, {
        id,
        organizationId,
        version: body.version,
        target: { ...selectors, ...(deviceIds ? { device_ids_count: deviceIds.length } : {}) },
        settings,
        startAt,
        state: awaiting ? 'awaiting_approval' : startsNow ? 'running' : 'scheduled',
        retryBaseMs: config.deploymentRetryBaseMs,
        matchedSeq: settings.dynamic ? await repo.currentChangeSeq(tx, organizationId) : 0,
        createdBy: creator,
        approval: awaiting
          ? { reason: approvalWhy, decision: null, decided_by: null, decided_at: null, comment: null }
          : null,
      });
      const written: Promise<unknown>[] = [inserted];
      if (deviceIds) written.push(repo.insertTargetIds(tx, id, deviceIds));
      // A dynamic deployment with nothing to take yet still has a batch for the devices to come.
      written.push(
        repo.insertBatches(
          tx,
          id,
          batches.length === 0 && settings.dynamic ? [{ index: 0, kind: 'batch' }] : batches,
          first ? [first.index] : [],
        ),
      );
      const batchOf = new Map<string, number>();
      for (const batch of batches) for (const deviceId of batch.deviceIds) batchOf.set(deviceId, batch.index);
      written.push(
        repo.insertDeploymentDevices(
          tx,
          id,
          organizationId,
          matchedDevices(
            candidates,
            classes,
            (deviceId) => batchOf.get(deviceId) ?? null,
            (deviceId) => chunk.get(deviceId),
          ),
          { created: true },
        ),
      );
      const candidateOf = new Map(candidates.map((candidate) => [candidate.device_id, candidate]));
      const due: DueDevice[] = [];
      for (const [deviceId, updateId] of chunk) {
        const { current_version, here } = candidateOf.get(deviceId)!;
        due.push({ device_id: deviceId, current_version, here, update_id: updateId });
      }
      const queued = queueAttempts(
        tx,
        transitions,
        { id, organization_id: organizationId, version: body.version, settings },
        due,
      );
      const [row, dispatched] = await Promise.all([inserted, queued, ...written]);
      await lifecycle.announce(tx, row);
      // What the devices run was read here, doors closed: the dispatch re-checks against it.
      const devices = versionsOf(organizationId, candidateOf);
      return first ? { row, dispatched, devices, more: first.deviceIds.length > chunk.size } : null;
    });
    if (started) {
      sendInBackground(this.#deps, id, started.dispatched, started.devices);
      if (started.more) void this.#queueFirstBatch(started.row);
    }
    scheduler.kick();
    return { dryRun: false, deployment: await this.get(organizationId, id) };
  }

  /** Why the organization's approval policy asks for approval of this deployment, or null. */
  async #approvalReason(
    db: Queryable,
    organizationId: string,
    body: CreateDeploymentBody,
    ids: readonly string[],
  ): Promise<string | null> {
    const policy = await approvalsRepo.findPolicy(db, organizationId);
    if (!policy.required) return null;
    return approvalReason(policy, {
      devices: ids.length,
      targetTags: body.target.tags ?? [],
      deviceTags: await approvalsRepo.tagsCarried(db, organizationId, ids, policy.tags ?? []),
    });
  }

  /** The key as a deployment records it (who created, approved or rejected it). */
  async #actorOf(db: Queryable, keyId: string): Promise<KeyActor> {
    const key = await orgsRepo.findKeyIdentity(db, keyId);
    return { key_id: keyId, key_name: key?.name ?? null, owner: key?.owner ?? null };
  }

  /**
   * Approves (→ scheduled while its start is ahead, else running: the scheduler starts its first
   * batch on its next pass, kicked here) or rejects (→ rejected, its devices released) a
   * deployment awaiting approval. The two-person rule: only an admin key (the route checks the
   * role) of another person than the creator's decides; the creator may cancel instead.
   */
  async decide(
    principal: Pick<OrgPrincipal, 'organizationId' | 'keyId'>,
    id: string,
    decision: ApprovalControl,
    comment: string | undefined,
  ): Promise<DeploymentBody> {
    const { db, lifecycle, scheduler } = this.#deps;
    const { organizationId } = principal;
    const text = comment?.trim() || null;
    if (decision === 'reject' && !text) {
      throw new BadRequestError('comment_required', 'a rejection needs a comment: why it is rejected');
    }
    await db.transaction(async (tx) => {
      const row = await this.#findOrThrow(tx, organizationId, id);
      if (row.state !== 'awaiting_approval') throw refusal(id, decision, row.state);
      const decider = await this.#actorOf(tx, principal.keyId);
      const creator = row.created_by ?? { key_id: '', key_name: null, owner: null };
      if (!isOtherPerson(creator, decider)) {
        throw new ForbiddenError(
          'approval_by_creator',
          `the two-person rule: deployment ${id} was created by ${creator.owner ?? 'this key'}; ` +
            `an admin key of another person must ${decision} it (the creator may cancel it)`,
        );
      }
      await repo.decideApproval(tx, id, {
        reason: row.approval?.reason ?? 'the organization requires approval',
        decision: decision === 'approve' ? 'approved' : 'rejected',
        decided_by: decider,
        decided_at: new Date().toISOString(),
        comment: text,
      });
      const startLater = row.start_at !== null && row.start_at.getTime() > Date.now();
      const to: DeploymentState = decision === 'reject' ? 'rejected' : startLater ? 'scheduled' : 'running';
      if (!(await lifecycle.move(tx, row, to))) throw refusal(id, decision, row.state);
      if (to === 'rejected') await repo.releaseDevices(tx, id, 'deployment_rejected');
      await lifecycle.announce(tx, row);
    });
    scheduler.kick();
    return this.get(organizationId, id);
  }

  /**
   * The rest of the first batch's attempts (past the chunk its creating transaction made), queued
   * chunk after chunk as soon as the deployment exists (the scheduler's passes would too, a pass
   * later): the answer does not wait for them.
   */
  async #queueFirstBatch(row: repo.DeploymentRow): Promise<void> {
    try {
      while (await queueDueChunk(this.#deps, row)) {
        // the next chunk
      }
    } catch (error) {
      this.#deps.log.error({ err: error, deployment_id: row.id }, 'queueing the first batch failed');
    }
  }

  async #findOrThrow(db: Queryable, organizationId: string, id: string) {
    const row = await repo.findDeployment(db, organizationId, id);
    if (!row) throw new NotFoundError('deployment_not_found', `no deployment ${id}`);
    return row;
  }

  async get(organizationId: string, id: string): Promise<DeploymentBody> {
    const { db } = this.#deps;
    const row = await this.#findOrThrow(db, organizationId, id);
    return deploymentBody(row, await loadView(db, row));
  }

  /** Newest first, optionally only those of some statuses. */
  async list(
    organizationId: string,
    query: { statuses?: readonly DeploymentState[] | undefined; limit: number },
  ): Promise<DeploymentBody[]> {
    const { db } = this.#deps;
    const rows = await repo.listDeployments(db, organizationId, { limit: query.limit, states: query.statuses });
    const views = await loadViews(db, rows);
    return rows.map((row) => deploymentBody(row, views.get(row.id)!));
  }

  /** The deployment's devices, a page at a time, each with where it stands and why. */
  async devices(organizationId: string, id: string, query: repo.DeviceFilter) {
    const { db } = this.#deps;
    const deployment = await this.#findOrThrow(db, organizationId, id);
    const rows = await repo.listDevicePage(db, id, query);
    return {
      devices: rows.map((row) => ({
        device_id: row.device_id,
        batch: row.batch_index,
        state: row.state,
        reason: row.reason,
        detail: row.detail,
        explanation: explainDevice({
          state: row.state,
          reason: row.reason,
          detail: row.detail,
          batch: row.batch_index,
          from_version: row.from_version,
          current_version: row.current_version,
          version: deployment.version,
          rollback_status: row.rollback_status,
        }),
        update_id: row.update_id,
        attempts_failed: row.failures,
        retry_at: row.retry_at,
        bake_until: row.bake_until,
        rollback_status: row.rollback_status,
        rollback_reason: row.rollback_reason,
        from_version: row.from_version,
        current_version: row.current_version,
        online: row.online,
        error_message: row.error_message,
      })),
      next_after: rows.length === query.limit ? (rows.at(-1)?.device_id ?? null) : null,
    };
  }

  /** The device ids the target lists, in its order, each with whether it names a device of the organization. */
  async targetIds(organizationId: string, id: string, query: { after?: number | undefined; limit: number }) {
    const { db } = this.#deps;
    const deployment = await this.#findOrThrow(db, organizationId, id);
    const rows = await repo.listTargetIds(db, deployment, { afterOrdinal: query.after ?? 0, limit: query.limit });
    return {
      device_ids: rows.map((row) => ({ device_id: row.device_id, found: row.found })),
      next_after: rows.length === query.limit ? (rows.at(-1)?.ordinal ?? null) : null,
    };
  }

  /**
   * Completions and failures over time: per bucket (aligned to when the deployment started, or
   * was created), its updates that completed, and those that failed or timed out plus its
   * devices that failed their bake. Without `bucketSeconds`, the width that fits the deployment's
   * span (to now while it runs, else to its end or its last outcome) into at most 120 buckets.
   */
  async timeline(organizationId: string, id: string, query: { bucketSeconds?: number | undefined }) {
    const { db } = this.#deps;
    const row = await this.#findOrThrow(db, organizationId, id);
    let bucketSeconds = query.bucketSeconds;
    if (bucketSeconds === undefined) {
      const span = await repo.findTimelineSpan(db, id);
      const endMs = Math.max(row.ended_at?.getTime() ?? Date.now(), span?.last_at?.getTime() ?? 0);
      bucketSeconds = timelineBucketSeconds(endMs - (span?.origin ?? row.created_at).getTime());
    }
    const points = await repo.countOutcomesByBucket(db, id, bucketSeconds);
    return { bucket_seconds: bucketSeconds, points };
  }

  /**
   * An operator's control, if the deployment's state allows it now (controlsFor; else a 409 that
   * says why), through the guarded lifecycle writer: a control and a pass that race are both
   * safe, and the one whose move the state no longer allows is refused.
   */
  async control(organizationId: string, id: string, control: OperatorControl): Promise<DeploymentBody> {
    const { db, lifecycle, transitions, scheduler } = this.#deps;
    await db.transaction(async (tx) => {
      const row = await this.#findOrThrow(tx, organizationId, id);
      const view = await loadView(tx, row);
      if (!controlsFor(row.state, view.batches).includes(control)) throw refusal(id, control, row.state);
      const move = async (to: DeploymentState) => {
        if (!(await lifecycle.move(tx, row, to))) throw refusal(id, control, row.state);
      };
      const stopAttempts = async (why: string) => {
        await transitions.cancelOfDeployment(
          { organizationId, deploymentId: id },
          ['queued'],
          { errorCode: `deployment_${why}`, errorMessage: `the deployment was ${why.replace('_', ' ')}` },
          tx,
        );
        await repo.releaseDevices(tx, id, `deployment_${why}`);
      };
      switch (control) {
        case 'pause':
          await move('paused');
          break;
        case 'resume': {
          // Resuming past a failed gate accepts its failures: those batches are no longer gated.
          const failed = view.batches.filter((batch) => batch.state === 'failed').map((batch) => batch.index);
          await repo.promoteBatches(tx, id, failed);
          await move(row.start_at && row.start_at.getTime() > Date.now() && !row.started_at ? 'scheduled' : 'running');
          break;
        }
        case 'cancel':
          await move('cancelled');
          await stopAttempts('cancelled');
          break;
        case 'promote': {
          const current = view.batches.map((batch) => batch.state !== 'pending').lastIndexOf(true);
          await repo.promoteBatches(tx, id, [view.batches[current]!.index]);
          break;
        }
        case 'rollback':
          await move('rolled_back');
          await stopAttempts('rolled_back');
          break;
      }
      await lifecycle.announce(tx, row);
    });
    scheduler.kick();
    return this.get(organizationId, id);
  }
}
