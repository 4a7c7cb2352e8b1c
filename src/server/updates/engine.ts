/**
 * The rollout engine: turns queued update rows into `ota_update` commands through the
 * tunnel, and device reports into transitions. Durable by construction: the rows are the
 * work items, claimed with FOR UPDATE SKIP LOCKED, so a restart resumes from the database
 * and no row is dispatched by two replicas.
 *
 * Dispatch works in chunks: a chunk of rows is claimed in one statement, re-checked against
 * what each device runs now (one that no longer fits is skipped, never sent), and its commands
 * written back to back, while the next chunk is claimed. What is the same for every device of
 * a version in a pass (the firmware, its download link, the signed manifest of an update) is
 * made once. Reports come in bursts: progress and successful results of many devices are
 * written by one statement each.
 */

import { createPrivateKey, type KeyObject } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from 'pino';
import { signManifest } from '../../protocol/manifest.ts';
import {
  CloudAction,
  DEVICE_LOCKED,
  DeviceAction,
  type DeviceInfoPayload,
  EncodedPayload,
  type FirmwareManifest,
  type OtaResultPayload,
  type OtaUpdatePayload,
  payloadProblem,
  validate,
} from '../../protocol/tunnel.ts';
import { compareVersions } from '../../protocol/version.ts';
import { formatWireError, TunnelErrorCode, type WireError } from '../../protocol/wire-error.ts';
import * as devicesRepo from '../devices/repo.ts';
import type { EventFeed } from '../events/feed.ts';
import { downloadSlotsOptions, downloadSpreadMs } from '../firmware/download-slots.ts';
import * as firmwareRepo from '../firmware/repo.ts';
import { Batcher } from '../infra/batcher.ts';
import type { BlobStore, DownloadLink } from '../infra/blobstore/types.ts';
import { type Config, nowOf } from '../infra/config.ts';
import type { Db } from '../infra/db.ts';
import { BadRequestError } from '../infra/errors.ts';
import type { Metrics } from '../infra/metrics.ts';
import { newId } from '../infra/secrets.ts';
import { isActive } from '../model/update-status.ts';
import { findSigningKeys } from '../orgs/repo.ts';
import {
  type CommandAnswered,
  type ConnectedDevice,
  DeviceCommandError,
  DeviceOfflineError,
  type DeviceRef,
  DeviceUnresponsiveError,
  type TunnelHub,
} from '../tunnel/hub.ts';
import { handleOfflineInstalls } from './offline.ts';
import * as repo from './repo.ts';
import { committedVersionsAfter, rollbackTargetAfter } from './rollback.ts';
import type { Alongside, UpdateTransitions } from './transitions.ts';

/** Rows claimed per statement: the commands of one chunk go out while the next is claimed. */
const CLAIM_BATCH = 1000;
/** Reports of devices arriving within this window share one statement. */
const REPORT_BATCH = { maxSize: 2000, maxDelayMs: 5 };
/**
 * Progress and results write the same update rows: each is one writer, a flush at a time (at
 * 10,000 devices, up to 20 concurrent statements on the same rows spent the rollout waiting on
 * each other's row locks, P2).
 */
const WRITER_BATCH = { ...REPORT_BATCH, maxInFlight: 1 };
/** The least time between the end of a dispatch pass and the start of the next, whatever asked for it. */
const PASS_SPACING_MS = 100;

/**
 * Why a device refused `ota_update`, as the update's failure code and message (the device's
 * own "code: message" text). A stock EdgeFlow agent has no OTA handler and answers free text,
 * `unknown command action: ota_update`, which gets a code and an explanation of its own.
 */
export function commandRefusal(refusal: WireError): { code: string; message: string } {
  const text = formatWireError(refusal);
  if (refusal.code === TunnelErrorCode.unknownAction || /unknown (command )?action/i.test(text)) {
    return {
      code: 'ota_not_supported',
      message:
        `the device's agent has no OTA handler (it answered "${text}"): a stock EdgeFlow agent ` +
        'cannot take updates; install the EdgeFlow OTA agent (edgeflow-ota agent) on the device',
    };
  }
  return { code: refusal.code === TunnelErrorCode.unspecified ? 'refused' : refusal.code, message: text };
}

/**
 * Whether a claimed update still fits its device, re-checked at dispatch (the device may have
 * been updated, rolled back, re-flashed or re-modelled since the row was queued); the skip
 * reason when it does not. An update never goes to a version the device runs already (unless
 * forced) or to an older one; a rollback only from the version it was decided on.
 */
export function dispatchProblem(
  update: Pick<repo.UpdateRow, 'kind' | 'target_version' | 'from_version' | 'force'>,
  device: { current_version: string; model: string | null },
  compatibleModels: readonly string[],
): { code: string; message: string } | null {
  if (update.kind === 'rollback') {
    if (device.current_version === update.target_version) {
      return { code: 'already_on_version', message: `the device already runs ${update.target_version}` };
    }
    if (device.current_version !== update.from_version) {
      return {
        code: 'version_changed',
        message: `the device now runs ${device.current_version}, not ${update.from_version} that the rollback was for`,
      };
    }
    return null;
  }
  if (compatibleModels.length > 0 && !compatibleModels.includes(device.model ?? '')) {
    return {
      code: 'incompatible',
      message: `firmware ${update.target_version} is for ${compatibleModels.join(', ')}, not ${device.model ?? 'an unknown model'}`,
    };
  }
  const comparison = compareVersions(device.current_version, update.target_version);
  if (comparison === 0 && !update.force) {
    return { code: 'already_on_version', message: `the device already runs ${update.target_version}` };
  }
  if (comparison > 0) {
    return {
      code: 'version_changed',
      message: `the device now runs ${device.current_version}, newer than ${update.target_version}: no downgrade is sent`,
    };
  }
  return null;
}

export interface UpdateEngineDeps {
  config: Config;
  db: Db;
  store: BlobStore;
  metrics: Metrics;
  log: Logger;
  tunnel: TunnelHub;
  feed: EventFeed;
  transitions: UpdateTransitions;
  /** This process among the replicas: it dispatches to the devices whose tunnel it holds. */
  nodeId: string;
}

/** What a pass makes once per firmware version: the row, its link, the signed manifest of an update. */
interface VersionCommand {
  firmware: firmwareRepo.FirmwareRow;
  link: DownloadLink;
  /** The `update` manifest and its signature, shared by every device of the version. */
  update: { manifest: FirmwareManifest; signature: string };
  /** The command's JSON after its update_id, by `force` and spread: the same for every device of the version. */
  encoded?: Map<string, Buffer>;
}

interface ReportedResult {
  device: DeviceRef;
  payload: OtaResultPayload;
  row: repo.UpdateRow;
}

/** Whether the update is sent despite its device's update lock now (its force_after passed, a force_lock). */
export function overridesLock(update: Pick<repo.Attempt, 'override_lock_at'>, nowMs: number): boolean {
  return update.override_lock_at !== null && update.override_lock_at.getTime() <= nowMs;
}

/** Whether `update` was sent to the device before its current tunnel opened (at `connectedAtMs`). */
function sentBefore(update: Pick<repo.UpdateRow, 'dispatched_at'>, connectedAtMs: number): boolean {
  return (update.dispatched_at?.getTime() ?? Number.POSITIVE_INFINITY) < connectedAtMs;
}

/**
 * Whether a version change a device reported as it connected is its current update's to report
 * (a trial boot, the update's own fall-back) rather than a change to record (a fall-back after a
 * crash, a re-flash by hand). It is the update's when the device had that update under way as it
 * spoke: it names it in its `device_info`, or (an agent that names none) the update was taken up
 * before this tunnel opened and was still open when it did — it may have ended since, the
 * device's result reaching the server before its report was handled. An update that only waits
 * for the device (queued, or sent but not taken up) or that reached it over this tunnel, after its
 * report, explains nothing: a rollback queued while it was away and dispatched the moment it
 * returned must not hide its fall-back.
 */
export function changeIsTheUpdates(
  update: Pick<repo.UpdateRow, 'id' | 'status' | 'dispatched_at' | 'finished_at'>,
  info: Pick<DeviceInfoPayload, 'update_id'>,
  connectedAtMs: number,
): boolean {
  if (info.update_id === update.id) return true;
  if (!sentBefore(update, connectedAtMs)) return false;
  if (isActive(update.status)) return update.status === 'in_progress';
  return (update.finished_at?.getTime() ?? Number.NEGATIVE_INFINITY) >= connectedAtMs;
}

export class UpdateEngine {
  readonly #deps: UpdateEngineDeps;
  readonly #timers: NodeJS.Timeout[] = [];
  readonly #signingKeys = new Map<string, Promise<KeyObject>>();
  readonly #progress: Batcher<repo.ProgressReport, void>;
  readonly #successes: Batcher<ReportedResult, void>;
  /** Connected devices' current updates, looked up together: a reconnecting fleet asks for thousands. */
  readonly #currentUpdates: Batcher<DeviceRef, repo.UpdateRow | undefined>;
  /** The updates devices report results of, looked up together (a fleet finishing at once). */
  readonly #updatesById: Batcher<{ organizationId: string; id: string }, repo.UpdateRow | undefined>;
  #dispatching: Promise<void> | undefined;
  readonly #answering = new Set<Promise<void>>();
  #again = false;
  #lastPassEndMs = Number.NEGATIVE_INFINITY;
  #stopped = false;

  constructor(deps: UpdateEngineDeps) {
    this.#deps = deps;
    const { tunnel, feed, log, config, transitions } = deps;
    this.#progress = new Batcher(async (reports) => {
      await transitions.reportProgress(reports, config.updateTimeoutSeconds);
      return reports.map(() => undefined);
    }, WRITER_BATCH);
    this.#successes = new Batcher(async (results) => {
      await this.#recordSuccesses(results);
      return results.map(() => undefined);
    }, WRITER_BATCH);
    this.#currentUpdates = new Batcher(async (devices) => {
      const current = new Map(
        (await repo.findCurrentUpdates(deps.db, devices)).map((row) => [
          devicesRepo.deviceKey(row.organization_id, row.device_id),
          row,
        ]),
      );
      return devices.map((device) => current.get(devicesRepo.deviceKey(device.organizationId, device.deviceId)));
    }, REPORT_BATCH);
    this.#updatesById = new Batcher(async (refs) => {
      const found = new Map(
        (
          await repo.findUpdates(
            deps.db,
            refs.map((ref) => ref.id),
          )
        ).map((row) => [row.id, row]),
      );
      // Another organization's update is none of this device's business: as if there were none.
      return refs.map((ref) => {
        const row = found.get(ref.id);
        return row?.organization_id === ref.organizationId ? row : undefined;
      });
    }, REPORT_BATCH);
    tunnel.onDeviceRequest(DeviceAction.otaProgress, (device, payload) => this.#onProgress(device, payload));
    tunnel.onDeviceRequest(DeviceAction.otaResult, (device, payload) => this.#onResult(device, payload));
    tunnel.onDeviceRequest(DeviceAction.otaRefreshUrl, (device, payload) => this.#onRefreshUrl(device, payload));
    handleOfflineInstalls(
      tunnel,
      deps.transitions,
      async (organizationId) => (await findSigningKeys(deps.db, organizationId))?.publicKeyPem,
      log,
    );
    tunnel.onDeviceInfo((device, info, changedFrom) => {
      this.#reconcile(device, info, changedFrom).catch((error: Error) =>
        log.warn({ err: error, device_id: device.deviceId }, 'reconciling a reconnected device failed'),
      );
    });
    // Wake-ups from any process: an update queued (new or back to the queue), a device online.
    feed.on('ota', (event) => {
      if (event.status === 'queued') this.kick();
    });
    feed.on('ota_bulk', (event) => {
      if (event.status === 'queued') this.kick();
    });
    feed.on('device', (event) => {
      if (event.online) this.kick();
    });
    feed.onResync(() => this.kick());
  }

  start(): void {
    const { config } = this.#deps;
    this.#timers.push(setInterval(() => this.kick(), config.dispatchIntervalMs));
    this.#timers.push(
      setInterval(() => {
        this.expireOverdue().catch((error: Error) => this.#deps.log.warn({ err: error }, 'expiring updates failed'));
      }, config.dispatchIntervalMs),
    );
    for (const timer of this.#timers) timer.unref();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const timer of this.#timers) clearInterval(timer);
    await this.#dispatching;
    // Answers that come soon are recorded; a silent device's command is rejected when the tunnels close.
    await Promise.race([Promise.allSettled([...this.#answering]), new Promise((resolve) => setTimeout(resolve, 1000))]);
  }

  /** Asks for a dispatch pass soon; passes never overlap, and a kick during one runs another. */
  kick(): void {
    if (this.#stopped) return;
    if (this.#dispatching) {
      this.#again = true;
      return;
    }
    this.#dispatching = (async () => {
      try {
        do {
          // Each pass starts PASS_SPACING_MS after the last one ended, whatever asked for it. A
          // fleet coming back online (each device a wake-up) costs a pass per spacing, not one per
          // device (9,211 claim statements, 24 s of the embedded database, in a 10,000-device
          // rollout); and a pass whose own answers wake the next (a command to a device whose
          // tunnel just closed goes back to the queue, announced) leaves room for the rest, above
          // all on PGlite, where nothing in that cycle would otherwise leave the microtask queue.
          const wait = this.#lastPassEndMs + PASS_SPACING_MS - performance.now();
          if (wait > 0) await delay(wait);
          if (this.#stopped) return;
          this.#again = false;
          try {
            await this.dispatchDueUpdates();
          } finally {
            this.#lastPassEndMs = performance.now();
          }
        } while (this.#again && !this.#stopped);
      } catch (error) {
        this.#deps.log.error({ err: error }, 'dispatch pass failed');
      } finally {
        this.#dispatching = undefined;
      }
    })();
  }

  /**
   * Claims queued updates of devices connected here, a chunk at a time, and sends their
   * commands. The next chunk is claimed while the devices answer the last one; the answers
   * (accepted, refused, silent) are handled as they come, before the pass ends.
   */
  async dispatchDueUpdates(): Promise<number> {
    const { transitions, nodeId, config } = this.#deps;
    const pass = this.#dispatchPass();
    let claimedTotal = 0;
    for (;;) {
      const claimed = await transitions.claim(nodeId, CLAIM_BATCH, config.updateTimeoutSeconds, nowOf(config));
      claimedTotal += claimed.length;
      if (claimed.length > 0) await pass.send(claimed);
      if (claimed.length < CLAIM_BATCH) break;
    }
    this.#settleLater(pass.done());
    return claimedTotal;
  }

  /**
   * Sends updates created already claimed by this process (a deployment's chunk for devices
   * connected here): the same re-check and commands as a claimed chunk, without the queue. With
   * `devices`, what the creating transaction read of them is the re-check's input (no second read).
   */
  async sendDispatched(rows: readonly repo.Attempt[], devices?: devicesRepo.DeviceVersions): Promise<void> {
    if (rows.length === 0) return;
    const pass = this.#dispatchPass();
    const sent = pass.send(rows, devices);
    this.#settleLater(sent.then(() => pass.done()));
    await sent;
  }

  /**
   * The devices' answers are handled as they come, without holding up the next chunk or pass: a
   * device that never answers costs its command's timeout, not everyone's. Awaited on stop.
   */
  #settleLater(answers: Promise<void>): void {
    this.#answering.add(answers);
    void answers
      .catch((error: Error) => this.#deps.log.error({ err: error }, 'handling the answers to ota_update failed'))
      .finally(() => this.#answering.delete(answers));
  }

  /**
   * One dispatch pass: per firmware version, the row, link and signed manifest made once; per
   * chunk, what the devices run now read in one statement, the ones that no longer fit skipped,
   * the others' commands written back to back. `done` waits for the devices' answers.
   */
  #dispatchPass() {
    const { transitions, db, tunnel, metrics } = this.#deps;
    /** Per organization and version, once per pass: its command, or why there is none. */
    const versions = new Map<string, Promise<VersionCommand | string>>();
    const keyOf = (row: repo.Attempt) => `${row.organization_id}\u0000${row.target_version}`;
    const commandsFor = async (rows: readonly repo.Attempt[]) => {
      for (const row of rows) {
        const key = keyOf(row);
        if (versions.has(key)) continue;
        versions.set(
          key,
          this.#versionCommand(row.organization_id, row.target_version).then(
            (command) => command ?? `firmware ${row.target_version} is no longer in the store`,
            (error: Error) => error.message,
          ),
        );
      }
      const settled = new Map<string, VersionCommand | string>();
      for (const [key, command] of versions) settled.set(key, await command);
      return settled;
    };
    /** The handling of answers that move a row (refused, silent, offline) and of rows not sent. */
    const answers: Promise<void>[] = [];
    let waiting = 0;
    let allAnswered: (() => void) | undefined;
    // One function for every command of the pass, its row given back with the answer: a command
    // costs no promise, closure or timer of its own while it waits (hub.send).
    const startedAt = new Date();
    const answered: CommandAnswered<repo.Attempt> = (row, error) => {
      if (error) answers.push(this.#onCommandFailed(row, error, startedAt));
      waiting -= 1;
      if (waiting === 0) allAnswered?.();
    };
    const sendCommand = (row: repo.Attempt, payload: OtaUpdatePayload | EncodedPayload) => {
      const device = { organizationId: row.organization_id, deviceId: row.device_id };
      const offline = tunnel.send(device, CloudAction.otaUpdate, payload, answered, row);
      if (offline) {
        answers.push(this.#onCommandFailed(row, offline));
        return;
      }
      waiting += 1;
      metrics.commandsDispatched.inc();
      metrics.lastCommandDispatched.set(Date.now() / 1000);
    };
    return {
      // The commands of a chunk are written in one synchronous run (no await between two rows but
      // a rollback's signature): nothing else runs on the event loop until the last is written.
      send: async (rows: readonly repo.Attempt[], known?: devicesRepo.DeviceVersions) => {
        const devices = known ?? (await devicesRepo.findDeviceVersions(db, rows));
        const locks = await devicesRepo.findLocks(db, rows);
        const commands = await commandsFor(rows);
        const spreadMs = this.#downloadSpreadMs(rows.length);
        const nowMs = Date.now();
        for (const row of rows) {
          const overridden = overridesLock(row, nowMs);
          if (!overridden && locks.has(devicesRepo.deviceKey(row.organization_id, row.device_id))) {
            // The device is locked (created dispatched for it, or locked since the claim): it waits.
            const where = { organizationId: row.organization_id, id: row.id };
            answers.push(transitions.move(where, 'queued').then(() => {}));
            continue;
          }
          const command = commands.get(keyOf(row))!;
          if (typeof command === 'string') {
            answers.push(this.#fail(row, 'firmware_unavailable', command));
            continue;
          }
          const device = devices.get(row.organization_id, row.device_id);
          const problem = device ? dispatchProblem(row, device, command.firmware.compatible_models) : null;
          if (problem) {
            const where = { organizationId: row.organization_id, id: row.id };
            answers.push(
              transitions
                .move(where, 'skipped', { errorCode: problem.code, errorMessage: problem.message })
                .then(() => {}),
            );
            continue;
          }
          const payload =
            row.kind === 'rollback'
              ? await this.#rollbackPayload(row, command, spreadMs, overridden)
              : this.#updatePayload(row, command, spreadMs, overridden);
          sendCommand(row, payload);
        }
      },
      /** Once every command sent so far is answered (or expired), and every answer handled. */
      done: async () => {
        if (waiting > 0) await new Promise<void>((resolve) => (allAnswered = resolve));
        await Promise.all(answers);
      },
    };
  }

  async expireOverdue(): Promise<void> {
    await this.#deps.transitions.expireOverdue();
  }

  /** The firmware of a version with its link and signed update manifest, once per pass. */
  async #versionCommand(organizationId: string, version: string): Promise<VersionCommand | undefined> {
    const { db, store, config } = this.#deps;
    const firmware = await firmwareRepo.findFirmware(db, organizationId, version);
    if (!firmware) return undefined;
    const link = await store.downloadLink(firmware.storage_key, config.downloadLinkTtlSeconds);
    const manifest: FirmwareManifest = {
      organization_id: organizationId,
      version: firmware.version,
      sha256: firmware.sha256,
      size: firmware.size,
      kind: 'update',
      issued_at: new Date().toISOString(),
    };
    return {
      firmware,
      link,
      update: { manifest, signature: signManifest(manifest, await this.#signingKey(organizationId)) },
    };
  }

  /** What every command of a version carries, an update's and a rollback's alike. */
  #commonFields(command: VersionCommand, spreadMs: number) {
    const { firmware, link } = command;
    return {
      version: firmware.version,
      url: link.url,
      url_expires_at: link.expires_at,
      size: firmware.size,
      sha256: firmware.sha256,
      artifact_type: firmware.artifact_type,
      ...(spreadMs > 0 ? { start_within_ms: spreadMs } : {}),
    };
  }

  /**
   * An update shares its version's signed manifest, and so the whole encoding of its command but
   * its id (EncodedPayload).
   */
  #updatePayload(row: repo.Attempt, command: VersionCommand, spreadMs: number, overrideLock: boolean): EncodedPayload {
    command.encoded ??= new Map();
    const force = row.force;
    const key = `${force}:${spreadMs}:${overrideLock}`;
    let tail = command.encoded.get(key);
    if (tail === undefined) {
      const { manifest, signature } = command.update;
      tail = Buffer.from(
        JSON.stringify({
          ...this.#commonFields(command, spreadMs),
          manifest,
          signature,
          force,
          ...(overrideLock ? { override_lock: true } : {}),
        }).slice(1),
      );
      command.encoded.set(key, tail);
    }
    // The rate is the device's own share of a byte budget: in the head, with the id.
    const rate = row.max_bytes_per_second ? `"max_bytes_per_second":${row.max_bytes_per_second},` : '';
    return new EncodedPayload(`{"update_id":${JSON.stringify(row.id)},${rate}`, tail);
  }

  /** A rollback is signed for its device and update alone. */
  async #rollbackPayload(
    row: repo.Attempt,
    command: VersionCommand,
    spreadMs: number,
    overrideLock: boolean,
  ): Promise<OtaUpdatePayload> {
    const manifest: FirmwareManifest = {
      ...command.update.manifest,
      kind: 'rollback',
      device_id: row.device_id,
      update_id: row.id,
    };
    const signature = signManifest(manifest, await this.#signingKey(row.organization_id));
    return {
      update_id: row.id,
      ...this.#commonFields(command, spreadMs),
      manifest,
      signature,
      force: row.force,
      ...(overrideLock ? { override_lock: true } : {}),
    };
  }

  /**
   * What a pass of `commands` asks its devices to spread their download starts over: the local
   * store's slots and line (download-slots.ts); an S3 bucket takes a fleet at once.
   */
  #downloadSpreadMs(commands: number): number {
    const { store, config } = this.#deps;
    if (store.kind !== 'local') return 0;
    return downloadSpreadMs(commands, downloadSlotsOptions(config));
  }

  /** A command the device did not take: refused, unanswered, or its device gone. */
  async #onCommandFailed(row: repo.Attempt, error: Error, sentAt = new Date()): Promise<void> {
    if (error instanceof DeviceCommandError && error.deviceError.code === DEVICE_LOCKED) {
      // Locked a moment before the command came (the server had not heard yet): it waits, no
      // attempt spent, and the lock is on record until the device's own report says more.
      const reason = error.deviceError.message || 'the device is locked';
      await this.#deps.transitions.move({ organizationId: row.organization_id, id: row.id }, 'queued');
      await devicesRepo.recordLockFromRefusal(
        this.#deps.db,
        { organizationId: row.organization_id, deviceId: row.device_id, deploymentId: row.deployment_id },
        reason,
        sentAt,
      );
      this.#deps.log.info(
        { update_id: row.id, device_id: row.device_id, reason },
        'update waits: the device is locked',
      );
      return;
    }
    if (error instanceof DeviceCommandError) {
      // The device refused it outright (busy with another update, invalid command, no OTA handler).
      const refusal = commandRefusal(error.deviceError);
      await this.#fail(row, refusal.code, refusal.message);
      return;
    }
    if (error instanceof DeviceOfflineError || error instanceof DeviceUnresponsiveError) {
      // It may not have seen the command: back to the queue, sent again (same id) when it returns.
      await this.#deps.transitions.move({ organizationId: row.organization_id, id: row.id }, 'queued');
      return;
    }
    this.#deps.log.error({ err: error, update_id: row.id }, 'sending ota_update failed');
  }

  /**
   * The organization's private key, read and parsed once (parsing the PEM costs more than the
   * signature). The promise is what is kept, so the thousands of commands of one pass that ask
   * at once share one read.
   */
  #signingKey(organizationId: string): Promise<KeyObject> {
    let key = this.#signingKeys.get(organizationId);
    if (!key) {
      key = findSigningKeys(this.#deps.db, organizationId).then((keys) => {
        if (!keys) throw new Error(`organization ${organizationId} has no signing key`);
        return createPrivateKey(keys.privateKeyPem);
      });
      key.catch(() => this.#signingKeys.delete(organizationId));
      this.#signingKeys.set(organizationId, key);
    }
    return key;
  }

  async #fail(row: Pick<repo.Attempt, 'organization_id' | 'id'>, code: string, message: string): Promise<void> {
    await this.#deps.transitions.move({ organizationId: row.organization_id, id: row.id }, 'failed', {
      errorCode: code,
      errorMessage: message,
    });
  }

  /**
   * Progress of many devices in one statement per burst (transitions.reportProgress): a device's
   * reports arrive in order (the hub runs one device's requests one after the other), and a new
   * phase within a burst is a statement of its own, so no phase is lost.
   */
  async #onProgress(device: DeviceRef, payload: unknown): Promise<unknown> {
    if (!validate.otaProgress.Check(payload)) throw new BadRequestError('invalid_payload', 'ota_progress payload');
    await this.#progress.add({
      organizationId: device.organizationId,
      id: payload.update_id,
      deviceId: device.deviceId,
      phase: payload.phase,
      progress: payload.progress,
    });
    this.#deps.metrics.reportsIngested.inc();
    return { ok: true };
  }

  /**
   * A device's result. A success joins a burst written by one transaction; a failure (rarer, each
   * with its own code) is written alone. A result that moves no update (a duplicate, a replay of an
   * old one, a late one after a timeout) changes nothing: what the device runs, it says on every
   * connect (device_info).
   */
  async #onResult(device: DeviceRef, payload: unknown): Promise<unknown> {
    if (!validate.otaResult.Check(payload)) {
      throw new BadRequestError('invalid_payload', `ota_result: ${payloadProblem(validate.otaResult, payload)}`);
    }
    const { db, metrics, transitions } = this.#deps;
    metrics.reportsIngested.inc();
    const row = await this.#updatesById.add({ organizationId: device.organizationId, id: payload.update_id });
    // Unknown or not this device's: acknowledge, so the device stops resending it.
    if (!row || row.device_id !== device.deviceId || row.kind === 'observed') return { ok: true, ignored: true };
    if (!isActive(row.status)) {
      // The server gave up on it (timed out) and the device finished after all: the update stays
      // timed out, and the record follows what the device runs. A replay of a result the server
      // already took (completed, failed) changes nothing.
      if (row.status === 'timed_out') {
        await devicesRepo.reportCurrentVersions(db, [
          { ...device, currentVersion: payload.current_version, agentVersion: null, slot: null },
        ]);
      }
      return { ok: true, ignored: true };
    }
    const succeeded = payload.status === 'completed' && payload.current_version === row.target_version;
    if (succeeded) {
      await this.#successes.add({ device, payload, row });
      return { ok: true };
    }
    // The failure and the version the device runs now: one statement (see #recordSuccesses).
    const where = { organizationId: device.organizationId, id: row.id, deviceId: device.deviceId };
    const record: devicesRepo.VersionRecord = {
      organizationId: device.organizationId,
      deviceId: device.deviceId,
      currentVersion: payload.current_version,
      rollbackTarget: rollbackTargetAfter(row, false, payload.current_version),
      committed: [],
    };
    const alongside: Alongside = (moved, $) => devicesRepo.deviceVersionsSql([record], $, moved);
    // It stopped on the server's ota_cancel (a cancelled deployment): cancelled, not failed.
    const cancelled = payload.status === 'failed' && payload.error?.code === 'cancelled';
    await transitions.move(
      where,
      cancelled ? 'cancelled' : 'failed',
      cancelled
        ? { phase: 'cancelled', errorCode: 'cancelled', errorMessage: payload.error?.message ?? null }
        : {
            phase: 'failed',
            errorCode: payload.error?.code ?? (payload.status === 'completed' ? 'version_mismatch' : 'failed'),
            errorMessage:
              payload.error?.message ?? `the device reports ${payload.current_version}, not ${row.target_version}`,
          },
      db,
      alongside,
    );
    return { ok: true };
  }

  /**
   * Successes of a burst in one statement: their updates completed, and for each one that moved,
   * the device's version, its rollback target (the version it left, none after a rollback,
   * unchanged by a re-install) and the versions it committed. One statement, not a transaction
   * of several: a transaction holding these rows while a busy event loop got round to its next
   * statement kept a 10,000-device rollout's other writes waiting on its locks (P2).
   */
  async #recordSuccesses(results: readonly ReportedResult[]): Promise<void> {
    const records = results.map(
      ({ device, payload, row }): devicesRepo.VersionRecord => ({
        organizationId: device.organizationId,
        deviceId: device.deviceId,
        currentVersion: payload.current_version,
        rollbackTarget: rollbackTargetAfter(row, true, payload.current_version),
        committed: committedVersionsAfter(row, true, payload.current_version),
      }),
    );
    await this.#deps.transitions.moveMany(
      results.map(({ device, row }) => ({
        organizationId: device.organizationId,
        id: row.id,
        deviceId: device.deviceId,
      })),
      'completed',
      { phase: 'completed', errorCode: null },
      (moved, $) => devicesRepo.deviceVersionsSql(records, $, moved),
    );
  }

  async #onRefreshUrl(device: DeviceRef, payload: unknown): Promise<unknown> {
    if (!validate.otaRefreshUrl.Check(payload)) throw new BadRequestError('invalid_payload', 'ota_refresh_url payload');
    const { db, store, config } = this.#deps;
    const row = await repo.findUpdate(db, device.organizationId, payload.update_id);
    if (!row || row.device_id !== device.deviceId || !isActive(row.status)) {
      throw new BadRequestError('update_not_active', 'that update is not active for this device');
    }
    const firmware = await firmwareRepo.findFirmware(db, row.organization_id, row.target_version);
    if (!firmware) throw new BadRequestError('firmware_unavailable', 'the firmware is gone');
    const link = await store.downloadLink(firmware.storage_key, config.downloadLinkTtlSeconds);
    return { url: link.url, url_expires_at: link.expires_at };
  }

  /**
   * A device came back and said what it runs and which update it is in the middle of. A
   * dispatched update it does not know never reached it: queue it again (same id, so a duplicate
   * is harmless). A version the server did not put it on (it fell back after a crash, or was
   * re-flashed by hand) is kept in its history; after a fall-back, the version it left is no
   * rollback target any more.
   */
  async #reconcile(device: ConnectedDevice, info: DeviceInfoPayload, changedFrom: string | null): Promise<void> {
    const { db, transitions } = this.#deps;
    const current = await this.#currentUpdates.add(device);
    const active = current && isActive(current.status) ? current : undefined;
    const sentBeforeThisTunnel = active !== undefined && sentBefore(active, device.connectedAtMs);
    // Only a command sent over an earlier tunnel can have been lost; one sent over this
    // tunnel may simply not have arrived before the device spoke.
    if (active?.status === 'dispatched' && info.update_id !== active.id && sentBeforeThisTunnel) {
      await transitions.move({ organizationId: device.organizationId, id: active.id }, 'queued');
    }
    if (active) this.kick();
    if (changedFrom === null || (current && changeIsTheUpdates(current, info, device.connectedAtMs))) return;
    const latest = await repo.latestFinishedUpdate(db, device.organizationId, device.deviceId);
    const fellBack =
      latest !== undefined &&
      latest.status === 'completed' &&
      latest.target_version === changedFrom &&
      latest.from_version === info.current_version;
    // A waiting update whose target the device now runs explains the change, unless the device fell
    // back to it: a bake's failure queues a rollback to the very version the boot loader returns
    // to, and the fall-back must be on record all the same (its bake failure reads reverted, the
    // rollback is skipped as moot), whichever of the two the server heard first.
    if (active && !fellBack && info.current_version === active.target_version) return;
    await db.transaction(async (tx) => {
      await transitions.recordObserved(
        {
          id: newId('upd'),
          organizationId: device.organizationId,
          deviceId: device.deviceId,
          fromVersion: changedFrom,
          toVersion: info.current_version,
          why: fellBack ? 'reverted' : 'reflashed',
          message: fellBack
            ? `the device fell back to ${info.current_version} after committing ${changedFrom}`
            : `the device reports ${info.current_version}; the server had ${changedFrom} on record`,
        },
        tx,
      );
      await devicesRepo.recordRunVersions(tx, device.organizationId, device.deviceId, [info.current_version]);
      if (fellBack) await devicesRepo.recordFallBack(tx, device.organizationId, device.deviceId, changedFrom);
    });
  }
}
