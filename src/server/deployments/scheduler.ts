/**
 * The deployment scheduler: a pass every `dispatchIntervalMs` and whenever the feed says
 * something moved (an update of a deployment changed status, a device came online, a
 * deployment changed). Each pass recomputes every unfinished deployment from the database
 * (view.ts, gate.ts) and does what `nextAction` says: start a batch, apply on_failure,
 * complete; then creates the update rows its started batches still need (new devices, due
 * retries) within max_per_minute. One process works one deployment at a time: the pass holds
 * the deployment's row lock (FOR UPDATE SKIP LOCKED) for its transaction, so replicas skip it.
 * Nothing lives in memory: a restart resumes from the rows.
 */
import type { Logger } from 'pino';
import type { EventFeed } from '../events/feed.ts';
import * as firmwareRepo from '../firmware/repo.ts';
import type { Config } from '../infra/config.ts';
import type { Db, Queryable } from '../infra/db.ts';
import { newId } from '../infra/secrets.ts';
import { isActive } from '../updates/status.ts';
import type { NewUpdate, UpdateTransitions } from '../updates/transitions.ts';
import { announceChanges } from './announce.ts';
import { dispatchAllowance, nextAction } from './gate.ts';
import { classifyTargets } from './plan.ts';
import * as repo from './repo.ts';
import { flagsOf, hasEnded, retryAtMs, viewOf } from './view.ts';

export interface DeploymentSchedulerDeps {
  config: Config;
  db: Db;
  feed: EventFeed;
  transitions: UpdateTransitions;
  log: Logger;
}

/**
 * Passes start at most this often however many events arrive: a pass reads every device of each
 * unfinished deployment, and a rollout of thousands sends thousands of events a second. After a
 * long pass the gap is twice its length, so passes never take more than a third of the
 * database's time from the dispatcher and the reports (the embedded database has one connection).
 */
const MIN_PASS_GAP_MS = 250;

export class DeploymentScheduler {
  readonly #deps: DeploymentSchedulerDeps;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #again = false;
  #stopped = false;
  #lastPassAtMs = 0;
  #gapMs = MIN_PASS_GAP_MS;
  #delayed: NodeJS.Timeout | undefined;

  constructor(deps: DeploymentSchedulerDeps) {
    this.#deps = deps;
    const { feed } = deps;
    // Only an update ending can change a gate; its queued/dispatched/progress steps cannot.
    feed.on('ota', (event) => {
      if (event.deployment_id !== null && event.status !== event.previous_status && !isActive(event.status)) {
        this.kick();
      }
    });
    feed.on('device', (event) => {
      if (event.online) this.kick();
    });
    feed.on('deployment', () => this.kick());
    feed.onResync(() => this.kick());
  }

  start(): void {
    this.#timer = setInterval(() => this.kick(), this.#deps.config.dispatchIntervalMs);
    this.#timer.unref();
    this.kick();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    clearTimeout(this.#delayed);
    await this.#running;
  }

  /** Asks for a pass soon; passes never overlap, and a kick during one runs another after it. */
  kick(): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    const waitMs = this.#lastPassAtMs + this.#gapMs - Date.now();
    if (waitMs > 0) {
      this.#delayed ??= setTimeout(() => {
        this.#delayed = undefined;
        this.kick();
      }, waitMs);
      return;
    }
    this.#running = (async () => {
      try {
        do {
          this.#again = false;
          const sinceLastMs = Date.now() - this.#lastPassAtMs;
          if (sinceLastMs < this.#gapMs) await new Promise((resolve) => setTimeout(resolve, this.#gapMs - sinceLastMs));
          this.#lastPassAtMs = Date.now();
          await this.runPass();
          this.#gapMs = Math.max(MIN_PASS_GAP_MS, 2 * (Date.now() - this.#lastPassAtMs));
        } while (this.#again && !this.#stopped);
      } catch (error) {
        this.#deps.log.error({ err: error }, 'deployment pass failed');
      } finally {
        this.#running = undefined;
      }
    })();
  }

  /** One pass over every unfinished deployment. */
  async runPass(): Promise<void> {
    for (const id of await repo.listUnfinishedDeploymentIds(this.#deps.db)) {
      if (this.#stopped) return;
      try {
        await this.#deps.db.transaction((tx) => this.#work(tx, id));
      } catch (error) {
        this.#deps.log.error({ err: error, deployment_id: id }, 'deployment step failed');
      }
    }
  }

  async #work(tx: Queryable, id: string): Promise<void> {
    const row = await repo.claimDeployment(tx, id);
    if (!row) return; // another process is on it, or it just finished
    const { config, feed, log } = this.#deps;
    const batches = await repo.listBatches(tx, id);
    if (row.rolled_back_at) {
      await this.#queueRollbacks(tx, row);
    } else {
      if (row.dynamic && !hasEnded(row)) await this.#takeNewlyMatching(tx, row, batches);
      const devices = await repo.listDeviceStates(tx, id);
      // Each started batch may let the next one start at once (an empty or promoted batch):
      // at most one step per batch, then the rows.
      for (let step = 0; step <= batches.length; step++) {
        const nowMs = Date.now();
        const view = viewOf(row, batches, devices, nowMs, config.deploymentRetryBaseMs);
        const action = nextAction({
          flags: flagsOf(row),
          finished: row.finished_at !== null,
          settings: row.settings,
          batches: view.gated,
          nowMs,
        });
        if (action.action === 'start_batch') {
          const batch = batches[action.index]!;
          await repo.markBatchesStarted(tx, id, [batch.batch_index]);
          batch.started_at = new Date(nowMs);
          log.info({ deployment_id: id, batch: batch.batch_index }, 'deployment batch started');
          continue;
        }
        if (action.action === 'apply_on_failure') {
          const reason = `batch ${action.batchIndex} crossed the failure threshold (${action.gate.failurePercent?.toFixed(1)}% of ${action.gate.judged} failed)`;
          log.warn({ deployment_id: id, on_failure: action.onFailure }, reason);
          if (action.onFailure === 'pause') {
            await repo.markDeployment(tx, id, { paused: true });
            row.paused = true;
          } else {
            await this.#cancelQueued(tx, row, action.onFailure === 'rollback' ? 'rolled_back' : 'aborted');
            if (action.onFailure === 'abort') {
              await repo.markDeployment(tx, id, { aborted: reason });
              row.aborted_at = new Date();
              row.finished_at = new Date();
            } else {
              await repo.markDeployment(tx, id, { rolledBack: reason });
              row.aborted_at = new Date();
              row.rolled_back_at = new Date();
              await this.#queueRollbacks(tx, row);
            }
          }
        } else if (action.action === 'complete') {
          await repo.markDeployment(tx, id, { finished: true });
          row.finished_at = new Date();
          log.info({ deployment_id: id }, 'deployment completed');
        }
        break;
      }
      if (!hasEnded(row) && !row.paused && !(row.start_at && row.start_at.getTime() > Date.now())) {
        await this.#createDueRows(tx, row, batches, devices);
      }
    }
    const view = viewOf(row, batches, await repo.listDeviceStates(tx, id), Date.now(), config.deploymentRetryBaseMs);
    await announceChanges(tx, feed, row, view);
  }

  /**
   * Update rows for the devices of started batches that have none yet, or whose retry is due,
   * in batch order, no more than max_per_minute allows now (the rest on a later pass).
   */
  async #createDueRows(
    tx: Queryable,
    row: repo.DeploymentRow,
    batches: readonly repo.BatchRow[],
    devices: readonly repo.DeviceStateRow[],
  ): Promise<void> {
    const { config, transitions } = this.#deps;
    const started = new Set(batches.filter((batch) => batch.started_at).map((batch) => batch.batch_index));
    const nowMs = Date.now();
    const due = devices.filter((device) => {
      if (!started.has(device.batch_index)) return false;
      if (device.status === null) return true;
      const retryAt = retryAtMs(device, row.settings.max_retries, config.deploymentRetryBaseMs);
      return retryAt !== null && retryAt <= nowMs;
    });
    if (due.length === 0) return;
    const allowance = dispatchAllowance(
      row.settings.max_per_minute,
      row.settings.max_per_minute === null ? 0 : await repo.countCreatedInLastMinute(tx, row.id),
    );
    const timeoutSeconds =
      row.settings.device_timeout_minutes === null ? null : Math.ceil(row.settings.device_timeout_minutes * 60);
    const updates: NewUpdate[] = due.slice(0, allowance).map((device) => ({
      id: newId('upd'),
      organizationId: row.organization_id,
      deviceId: device.device_id,
      deploymentId: row.id,
      kind: 'update',
      targetVersion: row.version,
      fromVersion: device.current_version,
      force: row.settings.force,
      timeoutSeconds,
    }));
    await transitions.create(updates, tx);
  }

  /** A cancel, abort or rollback: the rows no device has taken are cancelled; running ones finish. */
  async #cancelQueued(tx: Queryable, row: repo.DeploymentRow, why: string): Promise<void> {
    await this.#deps.transitions.cancelOfDeployment(
      { organizationId: row.organization_id, deploymentId: row.id },
      ['queued'],
      { errorCode: `deployment_${why}`, errorMessage: `the deployment was ${why.replace('_', ' ')}` },
      tx,
    );
  }

  /**
   * A rolled-back deployment: every device it updated (its update completed) and that does not
   * already run its old version again gets a signed rollback to it, once. Devices still in
   * flight get theirs when they finish; then the deployment is finished.
   */
  async #queueRollbacks(tx: Queryable, row: repo.DeploymentRow): Promise<void> {
    const devices = await repo.listDeviceStates(tx, row.id);
    const already = await repo.listRolledBackDevices(tx, row.id);
    const wanted = devices.filter(
      (device) =>
        device.status === 'completed' &&
        !already.has(device.device_id) &&
        device.current_version !== device.from_version,
    );
    const created = await this.#deps.transitions.create(
      wanted.map((device) => ({
        id: newId('upd'),
        organizationId: row.organization_id,
        deviceId: device.device_id,
        deploymentId: row.id,
        kind: 'rollback',
        targetVersion: device.from_version,
        fromVersion: device.current_version,
        force: true,
      })),
      tx,
    );
    const inFlight = devices.some((device) => device.status !== null && isActive(device.status));
    if (!inFlight && created.length === wanted.length) {
      await repo.markDeployment(tx, row.id, { finished: true });
      row.finished_at = new Date();
    }
  }

  /** A dynamic deployment takes the devices that came to match its target, into its last batch. */
  async #takeNewlyMatching(tx: Queryable, row: repo.DeploymentRow, batches: repo.BatchRow[]): Promise<void> {
    const candidates = await repo.findTargetCandidates(tx, row.organization_id, row.target, row.id);
    if (candidates.length === 0) return;
    const firmware = await firmwareRepo.findFirmware(tx, row.organization_id, row.version);
    const classes = classifyTargets(candidates, {
      version: row.version,
      compatibleModels: firmware?.compatible_models ?? [],
      force: row.settings.force,
    });
    if (classes.eligible.length === 0) return;
    if (batches.length === 0) {
      await repo.insertBatches(tx, row.id, [{ index: 0, kind: 'batch' }]);
      batches.push({ batch_index: 0, kind: 'batch', started_at: null, promoted: false });
    }
    const last = batches.at(-1)!.batch_index;
    const versionOf = new Map(candidates.map((candidate) => [candidate.device_id, candidate.current_version]));
    await repo.insertDeploymentDevices(
      tx,
      row.id,
      row.organization_id,
      classes.eligible.map((deviceId) => ({ deviceId, batchIndex: last, fromVersion: versionOf.get(deviceId)! })),
    );
  }
}
