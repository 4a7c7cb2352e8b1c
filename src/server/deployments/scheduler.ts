/**
 * The deployment scheduler: passes that read state and act, every `dispatchIntervalMs` and
 * sooner when woken (an attempt ended, a device came online, a deployment changed, the feed
 * came back after an interruption). A notification only asks for a pass, so a lost one delays an
 * effect by at most one pass and never loses it.
 *
 * A pass works each deployment that is not settled and has started (a scheduled one costs
 * nothing until its start): it takes a short lease on it (another replica's pass skips it),
 * ends the bakes that are over or failed, skips what stayed offline past its timeout, writes
 * each batch's state from its counters, does what `nextAction` says (start, start a batch, apply
 * on_failure, complete), queues the attempts that are due, and carries out what an ended
 * deployment still owes: its queued attempts cancelled, its rollbacks queued. Everything it reads
 * is counters and bounded chunks of rows: O(batches) per deployment, plus the rows it moves.
 *
 * Fair between organizations: the pass is a round robin over organizations, one bounded unit of
 * work each per round, within a time budget; what is left continues in the next pass, starting
 * with the organizations this one did not reach.
 */
import type { Logger } from 'pino';
import type { EventFeed } from '../events/feed.ts';
import * as firmwareRepo from '../firmware/repo.ts';
import { enterDoor } from '../holds/repo.ts';
import type { Config } from '../infra/config.ts';
import type { Db } from '../infra/db.ts';
import { newId } from '../infra/secrets.ts';
import { isEnded, type Stop } from '../model/deployment.ts';
import type { UpdateTransitions } from '../updates/transitions.ts';
import { CHUNK, queueDueChunk, type SendDispatched, settleHeldAttempts } from './attempts.ts';
import { batchStateFor, gateDecision, nextAction } from './gate.ts';
import { type DeploymentLifecycle, loadView } from './lifecycle.ts';
import { classifyTargets, matchedDevices } from './plan.ts';
import * as repo from './repo.ts';

export interface DeploymentSchedulerDeps {
  config: Config;
  db: Db;
  feed: EventFeed;
  transitions: UpdateTransitions;
  lifecycle: DeploymentLifecycle;
  log: Logger;
  /** This process among the replicas: the holder of the leases it takes. */
  nodeId: string;
  /** Sends attempts created already dispatched, for devices whose tunnel this process holds (answers come later). */
  sendDispatched: SendDispatched;
}

/** Passes start at most this often however many wake-ups arrive. */
const MIN_PASS_GAP_MS = 100;
/** A pass stops taking new units after this long; the rest waits for the next pass. */
const PASS_BUDGET_MS = 500;
/** How long a pass holds a deployment against other replicas' passes. */
const LEASE_MS = 15_000;
/** Devices a dynamic deployment matches per pass. */
const MATCH_CHUNK = 5000;

/** One bounded piece of a deployment's pass; answers whether more of it remains. */
type Unit = () => Promise<boolean>;

export class DeploymentScheduler {
  readonly #deps: DeploymentSchedulerDeps;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #again = false;
  #stopped = false;
  #lastPassAtMs = 0;
  #delayed: NodeJS.Timeout | undefined;
  /** Organizations the last pass did not reach: first in the next one. */
  #unserved: string[] = [];
  /** Deployments this pass leased, released when it ends. */
  readonly #leased = new Set<string>();
  /** Deployments whose decisions this pass took and whose chunks it is still queueing. */
  readonly #continuing = new Map<string, repo.DeploymentRow>();

  constructor(deps: DeploymentSchedulerDeps) {
    this.#deps = deps;
    const { feed } = deps;
    feed.on('wake', () => this.kick());
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
    const waitMs = this.#lastPassAtMs + MIN_PASS_GAP_MS - Date.now();
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
          if (sinceLastMs < MIN_PASS_GAP_MS) {
            await new Promise((resolve) => setTimeout(resolve, MIN_PASS_GAP_MS - sinceLastMs));
          }
          this.#lastPassAtMs = Date.now();
          if (await this.runPass()) this.#again = true;
        } while (this.#again && !this.#stopped);
      } catch (error) {
        this.#deps.log.error({ err: error }, 'deployment pass failed');
      } finally {
        this.#running = undefined;
      }
    })();
  }

  /**
   * One pass: a round robin over the organizations with work, one unit each per round, until
   * nothing is left or the budget is spent. Answers whether work was left for the next pass.
   */
  async runPass(): Promise<boolean> {
    const { db, log } = this.#deps;
    this.#continuing.clear();
    const byOrganization = new Map<string, Unit[]>();
    for (const organizationId of this.#unserved) byOrganization.set(organizationId, []);
    // Devices whose lock holds their attempt show it (reason `locked`), and stop once it is released.
    await repo.markLockedWaiting(db);
    for (const { id, organization_id } of await repo.listWork(db)) {
      let units = byOrganization.get(organization_id);
      if (!units) {
        units = [];
        byOrganization.set(organization_id, units);
      }
      units.push(() => {
        const continuing = this.#continuing.get(id);
        if (!continuing) return this.#work(id);
        return this.#nextChunk(continuing).then(async (more) => {
          if (!more) this.#continuing.delete(id);
          await db.transaction((tx) => this.#deps.lifecycle.announce(tx, continuing));
          return more;
        });
      });
    }
    const started = Date.now();
    let queue = [...byOrganization.entries()].filter(([, units]) => units.length > 0);
    while (queue.length > 0 && !this.#stopped) {
      if (Date.now() - started > PASS_BUDGET_MS) break;
      const next: typeof queue = [];
      for (const [organizationId, units] of queue) {
        const unit = units.shift()!;
        let more = false;
        try {
          more = await unit();
        } catch (error) {
          log.error({ err: error, organization_id: organizationId }, 'deployment step failed');
        }
        if (more) units.push(unit);
        if (units.length > 0) next.push([organizationId, units]);
      }
      queue = next;
    }
    this.#unserved = queue.map(([organizationId]) => organizationId);
    for (const id of this.#leased) await repo.releaseLease(db, id, this.#deps.nodeId);
    this.#leased.clear();
    return queue.length > 0;
  }

  /**
   * The deployment's decisions under its lease, then its first chunk of attempts (or
   * rollbacks); when more chunks are due, the unit answers true and its next run queues the next
   * chunk only (a later round of the pass).
   */
  async #work(id: string): Promise<boolean> {
    const { db, nodeId, lifecycle } = this.#deps;
    const row = await repo.leaseDeployment(db, id, nodeId, LEASE_MS);
    if (!row) return false; // another replica's pass has it, or it just settled
    this.#leased.add(id);
    await this.#decide(row);
    const more = await this.#nextChunk(row);
    await db.transaction((tx) => lifecycle.announce(tx, row));
    if (more) this.#continuing.set(id, row);
    return more;
  }

  /** The chunk the deployment's state calls for: attempts while running, what it owes once ended. */
  async #nextChunk(row: repo.DeploymentRow): Promise<boolean> {
    if (row.state === 'running') return queueDueChunk(this.#deps, row);
    if (isEnded(row.state)) return this.#carryOutEnd(row);
    return false;
  }

  async #decide(row: repo.DeploymentRow): Promise<void> {
    const { db, config, transitions, lifecycle, log } = this.#deps;
    if (row.dynamic && row.state === 'running') await this.#matchChanged(row);
    if (row.state === 'running') await settleHeldAttempts(this.#deps, row);
    const settings = row.settings;
    if (!isEnded(row.state) && settings.device_timeout_minutes !== null) {
      await transitions.skipOfflinePastTimeout(row.id, Math.ceil(settings.device_timeout_minutes * 60));
    }
    let view = await loadView(db, row);
    if (view.counts.baking > 0) {
      await repo.completeBakes(db, row.id);
      if (!isEnded(row.state)) {
        for (const failed of await repo.failBakesFromRecord(db, row.id, config.bakeOfflineGraceSeconds)) {
          log.warn({ deployment_id: row.id, device_id: failed.device_id, reason: failed.reason }, 'bake failed');
        }
      }
      view = await loadView(db, row);
    }
    // At most one move of each batch and of the deployment: a step can let the next one happen
    // at once (an empty batch passes, the next starts).
    for (let step = 0; step <= 2 * view.batches.length + 2; step++) {
      const changes = view.gated
        .map((batch, position) => ({
          index: view.batches[position]!.index,
          from: batch.state,
          to: batchStateFor(batch, gateDecision(batch.tally, settings).verdict),
        }))
        .filter((change) => change.to !== change.from);
      if (changes.length > 0 && !isEnded(row.state)) {
        await db.transaction((tx) => lifecycle.moveBatches(tx, row, changes));
        view = await loadView(db, row);
        continue;
      }
      const action = nextAction({
        state: row.state,
        startAtMs: row.start_at?.getTime() ?? null,
        dynamic: row.dynamic,
        settings,
        batches: view.gated,
        nowMs: Date.now(),
      });
      if (action.action === 'start') {
        await db.transaction((tx) => lifecycle.move(tx, row, 'running'));
      } else if (action.action === 'start_batch') {
        await db.transaction((tx) => lifecycle.moveBatches(tx, row, [{ index: action.index, to: 'running' }]));
        log.info({ deployment_id: row.id, batch: action.index }, 'deployment batch started');
      } else if (action.action === 'apply_on_failure') {
        const batch = view.batches[action.batchIndex]!;
        const stop: Stop = {
          rule: 'failure_threshold',
          batch: batch.index,
          batch_kind: batch.kind,
          failed: action.gate.failed,
          judged: action.gate.judged,
          size: batch.size,
          threshold_percent: settings.failure_threshold_percent,
          on_failure: action.onFailure,
        };
        const to = action.onFailure === 'pause' ? 'paused' : action.onFailure === 'abort' ? 'failed' : 'rolled_back';
        await db.transaction((tx) => lifecycle.move(tx, row, to, stop));
        log.warn({ deployment_id: row.id, on_failure: action.onFailure, stop }, 'deployment gate failed');
        if (isEnded(row.state)) return;
      } else if (action.action === 'complete') {
        await db.transaction((tx) => lifecycle.move(tx, row, 'completed'));
        log.info({ deployment_id: row.id }, 'deployment completed');
        return;
      } else {
        return;
      }
      view = await loadView(db, row);
    }
  }

  /**
   * Queues one chunk of the attempts due now in the running deployment's started batches (devices
   * not started, retries due), within max_per_minute, in the planned order. A device that cannot
   * get one (an update of its own is active) is skipped as busy. Answers whether more are due.
   */
  /**
   * What an ended deployment still owes, level-triggered (repeated every pass until settled):
   * attempts still queued are cancelled and devices not started are marked cancelled; a rolled-back
   * deployment queues the rollback of each device it put on its version, a chunk at a time, and
   * skips those that no longer run it or that another deployment or update holds. Settles when
   * nothing is left. Answers whether more rollbacks are due.
   */
  async #carryOutEnd(row: repo.DeploymentRow): Promise<boolean> {
    const { db, transitions } = this.#deps;
    const why = (['rolled_back', 'cancelled', 'rejected'] as const).find((state) => state === row.state) ?? 'aborted';
    await transitions.cancelOfDeployment({ organizationId: row.organization_id, deploymentId: row.id }, ['queued'], {
      errorCode: `deployment_${why}`,
      errorMessage: `the deployment was ${why.replace('_', ' ')}`,
    });
    await repo.releaseDevices(db, row.id, `deployment_${why}`);
    let more = false;
    if (row.state === 'rolled_back') more = await this.#queueRollbacks(row);
    if (!more) await repo.settleIfDone(db, row.id);
    return more;
  }

  async #queueRollbacks(row: repo.DeploymentRow): Promise<boolean> {
    const { db, transitions } = this.#deps;
    return db.transaction(async (tx) => {
      await enterDoor(tx, row.organization_id);
      const candidates = await repo.claimRollbackCandidates(tx, row.id, CHUNK);
      const skipped: { deviceId: string; reason: string; detail: string | null }[] = [];
      const wanted = candidates.filter((device) => {
        if (device.current_version === device.from_version) {
          skipped.push({ deviceId: device.device_id, reason: 'already_on_version', detail: null });
        } else if (device.current_version !== row.version) {
          skipped.push({ deviceId: device.device_id, reason: 'version_changed', detail: device.current_version });
        } else if (device.held_by !== null) {
          skipped.push({ deviceId: device.device_id, reason: 'busy', detail: device.held_by });
        } else {
          return true;
        }
        return false;
      });
      const created = await transitions.createAttempts(
        wanted.map((device) => ({
          id: newId('upd'),
          organizationId: row.organization_id,
          deviceId: device.device_id,
          deploymentId: row.id,
          kind: 'rollback' as const,
          targetVersion: device.from_version,
          fromVersion: device.current_version,
          force: true,
          overrideLockAt: row.settings.force_after ? new Date(row.settings.force_after) : null,
        })),
        tx,
      );
      const got = new Set(created.map((update) => update.device_id));
      for (const device of wanted) {
        if (!got.has(device.device_id)) skipped.push({ deviceId: device.device_id, reason: 'busy', detail: null });
      }
      await repo.skipRollbacks(tx, row.id, skipped);
      return candidates.length === CHUNK;
    });
  }

  /**
   * A dynamic deployment takes the devices that came to match its target since its last match
   * (new, retagged, another model or version: devices.change_seq), into its last batch; the ones
   * it leaves out keep a row with why. Devices it left out as busy are taken once they are free.
   */
  async #matchChanged(row: repo.DeploymentRow): Promise<void> {
    const { db } = this.#deps;
    await repo.takeFreedBusyDevices(db, row.id);
    const candidates = await repo.findTargetCandidates(db, {
      organizationId: row.organization_id,
      target: row.target,
      changedAfter: row.matched_seq,
      deploymentId: row.id,
      ...(row.target.device_ids_count !== undefined ? { storedIdsOf: row.id } : {}),
      limit: MATCH_CHUNK,
    });
    if (candidates.length === 0) return;
    const firmware = await firmwareRepo.findFirmware(db, row.organization_id, row.version);
    const classes = classifyTargets(candidates, {
      version: row.version,
      compatibleModels: firmware?.compatible_models ?? [],
      force: row.settings.force,
    });
    await db.transaction(async (tx) => {
      const last = await repo.lastBatchIndex(tx, row.id);
      await repo.insertDeploymentDevices(
        tx,
        row.id,
        row.organization_id,
        matchedDevices(candidates, classes, () => last),
      );
      await repo.setMatchedSeq(tx, row.id, Math.max(...candidates.map((candidate) => candidate.change_seq)));
    });
  }
}
