import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import { MAX_BUNDLE_HEADER_BYTES } from '../protocol/offline-bundle.ts';
import { parseBundleHeader } from '../protocol/offline-bundle-file.ts';
import {
  backoffDelayMs,
  DeviceAction,
  type DeviceInfoPayload,
  MAX_START_WITHIN_MS,
  type OfflineInstallPayload,
  type OtaFailureCode,
  type OtaPhase,
  type OtaProgressPayload,
  type OtaResultPayload,
  type OtaUpdatePayload,
  validate,
} from '../protocol/tunnel.ts';
import type { DownloadSink } from './download-sink.ts';
import { DownloadFailedError, type DownloadSettings, downloadToSink } from './downloader.ts';
import { ArtifactMismatchError, type BootState, type Installer, type StepHook } from './installer.ts';
import { errorMessage, type Logger } from './logger.ts';
import { authorizeOfflineBundle, authorizeUpdate, type UpdatePolicy } from './ota-policy.ts';
import {
  assertTransition,
  type BootObservation,
  isCancellable,
  type OtaStep,
  overallProgress,
  planNextStep,
} from './ota-state-machine.ts';
import type { OtaJob, OtaState, OtaStateStore, RecordedResult } from './ota-state-store.ts';
import { CommandRefusedError } from './tunnel-client.ts';

/** What the OTA handler needs from the tunnel. */
export interface OtaTunnel {
  readonly connected: boolean;
  request(action: string, payload: unknown, options?: { timeoutMs?: number }): Promise<unknown>;
  notify(action: string, payload: unknown): boolean;
  waitUntilConnected(timeoutMs: number): Promise<boolean>;
}

export interface HealthVerdict {
  healthy: boolean;
  message: string;
}

/** What the agent shows of an update in progress. */
export interface OtaSnapshot {
  update_id: string;
  target_version: string;
  phase: OtaPhase;
  progress: number;
  bytes_downloaded: number;
}

/** An offline bundle this device will not install (`edgeflow-agent install`): nothing was changed. */
export class OfflineInstallRefusedError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'OfflineInstallRefusedError';
  }
}

/** What `installOffline` did with a bundle it accepted. */
export interface OfflineInstallOutcome {
  status: 'installing' | 'already_installed';
  bundle_id: string;
  version: string;
  from_version: string;
}

export interface OtaHandlerOptions {
  policy: UpdatePolicy;
  /** The device's model, checked against an offline bundle's compatible models. */
  model?: string | undefined;
  agentVersion: string;
  installer: Installer;
  /** What `device_info` says of the device besides the update (default: the installer's version). */
  describeDevice?: () => Omit<DeviceInfoPayload, 'agent_version' | 'update_id'>;
  store: OtaStateStore;
  createSink: (updateId: string) => DownloadSink;
  tunnel: OtaTunnel;
  /**
   * Restarts into the pending image: resolves once the restart is under way (a reboot command
   * that returned, or a soft restart scheduled); the handler then waits to be started again.
   */
  reboot: () => Promise<void>;
  /** The trial boot's health check (besides reaching `connected`). */
  checkHealth: (version: string) => Promise<HealthVerdict>;
  confirmTimeoutMs: number;
  download: DownloadSettings;
  progressIntervalMs: number;
  resultRetryBaseMs: number;
  requestTimeoutMs: number;
  logger: Logger;
  stepHook?: StepHook;
  onSnapshot?: (snapshot: OtaSnapshot) => void;
  onResult?: (result: OtaResultPayload) => void;
}

type StepOutcome = 'continue' | 'pause';

const acknowledgedResultsKept = 10;

/** How long the job's first download is put off at most (start_within_ms); a later attempt, not at all. */
function spreadOf(job: OtaJob): number {
  return job.download_attempts === 0 ? Math.min(job.payload.start_within_ms ?? 0, MAX_START_WITHIN_MS) : 0;
}

/**
 * Runs one update at a time as a reconcile loop: each turn asks the pure planner for the next
 * step from the persisted job and the boot observation, runs it, persists its effect. A fresh
 * update and the recovery after a power cut take the same path.
 */
export class OtaHandler {
  private state: OtaState = { job: null, results: [] };
  private boot: BootObservation = 'normal';
  private stopped = true;
  /** A reboot was asked for in this run: nothing more happens until the next `start`. */
  private rebootRequested = false;
  private driving: Promise<void> | undefined;
  private driveAgain = false;
  private downloadAbort: AbortController | undefined;
  private sink: { updateId: string; sink: DownloadSink } | undefined;
  private lastProgressAt = 0;
  /** The last report that went out on this connection: the same one again tells the server nothing. */
  private sentProgress: OtaProgressPayload | undefined;
  private unsentProgress: OtaProgressPayload | undefined;
  private resultTimer: NodeJS.Timeout | undefined;
  private resultAttempt = 0;
  private flushing: Promise<void> | undefined;
  private flushAgain = false;
  /** Results the server asked for again while one copy was in flight: that copy's ack does not cover the request. */
  private resendRequested: Set<string> | undefined;
  /** An offline bundle is being checked (its image copied and hashed): the device is busy. */
  private checkingBundle = false;

  constructor(private readonly options: OtaHandlerOptions) {}

  async load(): Promise<void> {
    this.state = await this.options.store.load();
  }

  get snapshot(): OtaSnapshot | null {
    const job = this.state.job;
    if (!job) return null;
    return {
      update_id: job.payload.update_id,
      target_version: job.payload.version,
      phase: job.phase,
      progress: overallProgress(job.phase, job.bytes_downloaded, job.payload.size),
      bytes_downloaded: job.bytes_downloaded,
    };
  }

  get results(): readonly RecordedResult[] {
    return this.state.results;
  }

  /** After every (re)boot: remember what the bootloader did, then carry on with whatever job was persisted. */
  start(boot: BootState): void {
    this.stopped = false;
    this.rebootRequested = false;
    this.boot = boot.kind;
    this.kick();
  }

  /** Stops at the next safe point; the persisted job resumes at the next start. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.downloadAbort?.abort(new Error('agent stopping'));
    clearTimeout(this.resultTimer);
    this.resultTimer = undefined;
    await Promise.all([this.driving, this.flushing]);
    await this.sink?.sink.close().catch(() => {});
  }

  /** Drops everything at once, as a power cut would: no waiting for the step under way. */
  halt(): void {
    this.stopped = true;
    this.downloadAbort?.abort(new Error('power cut'));
    // Releases the descriptor only; with the power gone nothing else of the step survives anyway.
    void this.sink?.sink.close().catch(() => {});
    clearTimeout(this.resultTimer);
    this.resultTimer = undefined;
  }

  onConnected(): void {
    const job = this.state.job;
    this.sentProgress = undefined;
    this.resultAttempt = 0;
    // An offline install goes on record before device_info says the version it left behind
    // (else the server would take the new version for a change by hand); while one is under way
    // (a trial boot), device_info waits for its report (finish).
    if (job?.offline) {
      void this.flushResults();
    } else if (this.state.results.some((r) => r.offline && !r.acknowledged)) {
      void this.flushResults().finally(() => {
        if (this.options.tunnel.connected) this.sendDeviceInfo();
      });
    } else {
      this.sendDeviceInfo();
      void this.flushResults();
    }
    const progress = this.unsentProgress;
    this.unsentProgress = undefined;
    if (progress && progress.update_id === job?.payload.update_id) {
      this.options.tunnel.notify(DeviceAction.otaProgress, progress);
    }
  }

  private sendDeviceInfo(): void {
    const job = this.state.job;
    const device = this.options.describeDevice?.() ?? { current_version: this.options.installer.currentVersion() };
    const info: DeviceInfoPayload = {
      ...device,
      agent_version: this.options.agentVersion,
      ...(job && !job.offline ? { update_id: job.payload.update_id } : {}),
    };
    this.options.tunnel
      .request(DeviceAction.deviceInfo, info, { timeoutMs: this.options.requestTimeoutMs })
      .catch((error) => this.options.logger.warn('device_info was not acknowledged', { error: errorMessage(error) }));
  }

  /** The `ota_update` command: validate, deduplicate, persist, acknowledge; the work runs afterwards. */
  async acceptUpdate(payload: unknown): Promise<Record<string, unknown>> {
    if (!validate.otaUpdate.Check(payload)) {
      const first = [...validate.otaUpdate.Errors(payload)][0];
      const why = `${first?.instancePath || '/'} ${first?.message ?? 'invalid payload'}`.trim();
      throw new CommandRefusedError('invalid_command', why);
    }
    const update = payload as OtaUpdatePayload;
    const job = this.state.job;
    if (job?.payload.update_id === update.update_id) {
      return { accepted: true, update_id: update.update_id, duplicate: true };
    }
    const finished = this.state.results.find((r) => r.payload.update_id === update.update_id);
    if (finished) {
      // The server may have missed the result; it asks again by resending the update.
      finished.acknowledged = false;
      this.resendRequested ??= new Set();
      this.resendRequested.add(update.update_id);
      await this.persist();
      setImmediate(() => void this.flushResults());
      return { accepted: true, update_id: update.update_id, duplicate: true };
    }
    if (job) throw new CommandRefusedError('busy', `update ${job.payload.update_id} is ${job.phase}`);
    if (this.stopped) throw new CommandRefusedError('busy', 'the agent is stopping');
    if (this.checkingBundle) throw new CommandRefusedError('busy', 'an offline bundle is being installed');

    this.state.job = {
      payload: update,
      phase: 'queued',
      previous_version: this.options.installer.currentVersion(),
      bytes_downloaded: 0,
      download_attempts: 0,
      cancel_requested: false,
      accepted_at: new Date().toISOString(),
    };
    await this.persist();
    await this.options.stepHook?.('accepted');
    // After the acknowledgement has gone out, so the server sees the ack before any progress.
    setImmediate(() => this.kick());
    return { accepted: true, update_id: update.update_id };
  }

  /**
   * `edgeflow-agent install <bundle>`: checks the bundle (signature against the pinned key,
   * organization, expiry, model, version, kind), copies its image where a download would go and
   * checks its sha256, then runs it as a job through the same path as an online update
   * (install, reboot, trial boot, health check, commit), persisted like one, without the cloud.
   * Refuses (OfflineInstallRefusedError) with nothing changed.
   */
  async installOffline(bundlePath: string, now = new Date()): Promise<OfflineInstallOutcome> {
    const refuse = (code: string, message: string): never => {
      throw new OfflineInstallRefusedError(code, message);
    };
    const busy = this.state.job;
    if (busy) refuse('busy', `the device is busy with update ${busy.payload.update_id} (${busy.phase})`);
    if (this.checkingBundle) refuse('busy', 'another offline bundle is being installed');
    if (this.stopped || this.rebootRequested) refuse('busy', 'the agent is restarting');
    this.checkingBundle = true;
    try {
      const { header, imageOffset, fileSize } = await readBundle(bundlePath).catch((error: Error) =>
        refuse('invalid_bundle', error.message),
      );
      const { installer } = this.options;
      const running = installer.currentVersion();
      const verdict = authorizeOfflineBundle({
        manifest: header.manifest,
        signature: header.signature,
        runningVersion: running,
        policy: this.options.policy,
        model: this.options.model,
        acceptedKinds: installer.artifactKinds,
        now,
      });
      if (verdict.verdict === 'refuse') return refuse(verdict.code, verdict.message);
      const manifest = verdict.manifest;
      const outcome = { bundle_id: manifest.bundle_id, version: manifest.version, from_version: running };
      if (verdict.verdict === 'already_installed') return { status: 'already_installed', ...outcome };
      if (fileSize - imageOffset !== manifest.size) {
        refuse(
          'checksum_mismatch',
          `the bundle holds ${fileSize - imageOffset} image bytes, its manifest says ${manifest.size}`,
        );
      }
      const updateId = `offline-${manifest.bundle_id}`;
      const sink = this.options.createSink(updateId);
      await sink.reset();
      try {
        await copyImage(bundlePath, imageOffset, manifest.size, sink);
      } catch (error) {
        await sink.discard().catch(() => {});
        refuse('invalid_bundle', `could not read the bundle: ${errorMessage(error)}`);
      }
      const sha256 = await sink.sha256();
      if (sha256 !== manifest.sha256) {
        await sink.discard().catch(() => {});
        refuse('checksum_mismatch', `the image's sha256 is ${sha256}, the signed manifest says ${manifest.sha256}`);
      }
      if (this.stopped || this.rebootRequested || this.state.job) {
        await sink.discard().catch(() => {});
        refuse('busy', 'the device took up another update meanwhile');
      }
      this.state.job = {
        payload: {
          update_id: updateId,
          version: manifest.version,
          url: pathToFileURL(bundlePath).href,
          url_expires_at: manifest.expires_at,
          size: manifest.size,
          sha256: manifest.sha256,
          artifact_type: manifest.artifact_type,
        },
        phase: 'queued',
        previous_version: running,
        bytes_downloaded: manifest.size,
        download_attempts: 0,
        cancel_requested: false,
        accepted_at: now.toISOString(),
        offline: {
          bundle_id: manifest.bundle_id,
          bundle_path: bundlePath,
          image_offset: imageOffset,
          manifest: header.manifest,
          signature: header.signature,
        },
      };
      this.sink = { updateId, sink };
      await this.persist();
      this.options.logger.info('offline bundle accepted', { ...outcome });
      setImmediate(() => this.kick());
      return { status: 'installing', ...outcome };
    } finally {
      this.checkingBundle = false;
    }
  }

  async cancelUpdate(payload: unknown): Promise<Record<string, unknown>> {
    if (!validate.otaCancel.Check(payload)) {
      throw new CommandRefusedError('invalid_command', 'ota_cancel needs an update_id');
    }
    const updateId = payload.update_id;
    const job = this.state.job;
    if (job?.payload.update_id === updateId) {
      if (!isCancellable(job.phase)) {
        throw new CommandRefusedError('too_late', `update ${updateId} is already ${job.phase}`);
      }
      job.cancel_requested = true;
      await this.persist();
      this.downloadAbort?.abort(new Error('cancelled'));
      this.kick();
      return { cancelled: true, update_id: updateId };
    }
    const finished = this.state.results.find((r) => r.payload.update_id === updateId)?.payload;
    if (finished?.error?.code === 'cancelled') return { cancelled: true, update_id: updateId, duplicate: true };
    if (finished) throw new CommandRefusedError('too_late', `update ${updateId} already ${finished.status}`);
    throw new CommandRefusedError('not_found', `no update ${updateId} on this device`);
  }

  private kick(): void {
    // A kick that came while the reboot was being asked for would otherwise ask for a second one.
    if (this.stopped || this.rebootRequested) return;
    if (this.driving) {
      this.driveAgain = true;
      return;
    }
    this.driving = this.drive()
      .catch((error) =>
        this.options.logger.error('OTA loop stopped on an unexpected error', { error: errorMessage(error) }),
      )
      .finally(() => {
        this.driving = undefined;
        if (this.driveAgain) {
          this.driveAgain = false;
          this.kick();
        }
      });
  }

  private async drive(): Promise<void> {
    for (;;) {
      const job = this.state.job;
      if (this.stopped) return;
      if (!job) {
        if (this.boot === 'trial') await this.revertUnclaimedTrial();
        return;
      }
      const step = planNextStep({
        phase: job.phase,
        cancelRequested: job.cancel_requested,
        boot: this.boot,
        runningVersion: this.options.installer.currentVersion(),
        targetVersion: job.payload.version,
        failure: job.failure,
      });
      this.options.logger.debug('OTA step', { update_id: job.payload.update_id, phase: job.phase, step: step.kind });
      if ((await this.run(job, step)) === 'pause') return;
    }
  }

  private async run(job: OtaJob, step: OtaStep): Promise<StepOutcome> {
    switch (step.kind) {
      case 'authorize':
        return this.authorize(job);
      case 'download':
        return this.download(job);
      case 'verify':
        return this.verify(job);
      case 'install':
        return this.install(job);
      case 'reboot':
        return this.rebootIntoNewImage(job);
      case 'confirm':
        return this.confirm(job);
      case 'commit':
        return this.commit(job);
      case 'revert':
        return this.revert(job, { code: step.code, message: step.message });
      case 'finish':
        await this.finish(job, step.status === 'completed' ? undefined : { code: step.code, message: step.message });
        return 'continue';
    }
  }

  private async authorize(job: OtaJob): Promise<StepOutcome> {
    // An offline bundle was authorized when it was handed over (installOffline).
    if (job.offline) {
      await this.enterPhase(job, 'downloading');
      return 'continue';
    }
    const { installer, policy } = this.options;
    const verdict = authorizeUpdate(job.payload, installer.currentVersion(), policy, installer.artifactKinds);
    if (verdict.verdict === 'refuse') await this.finish(job, { code: verdict.code, message: verdict.message });
    else if (verdict.verdict === 'already_installed') await this.finish(job, undefined);
    // A download put off (start_within_ms) says `downloading` when it starts, not while it waits.
    else await this.enterPhase(job, 'downloading', spreadOf(job) === 0);
    return 'continue';
  }

  private async download(job: OtaJob): Promise<StepOutcome> {
    if (job.offline) return this.copyFromBundle(job, job.offline);
    const sink = this.sinkFor(job);
    const abort = new AbortController();
    this.downloadAbort = abort;
    // A fleet-wide rollout: the server asks its devices to spread their first request over a
    // window, at random within it (a resumed or retried download goes at once).
    const spreadMs = spreadOf(job);
    job.download_attempts += 1;
    job.bytes_downloaded = await sink.offset();
    if (spreadMs > 0) {
      try {
        await sleep(Math.floor(Math.random() * spreadMs), undefined, { signal: abort.signal });
      } catch {
        return this.stopped ? 'pause' : 'continue';
      }
    }
    this.reportProgress(job, true);
    const { download } = this.options;
    try {
      await downloadToSink({
        link: { url: job.payload.url, url_expires_at: job.payload.url_expires_at },
        size: job.payload.size,
        sink,
        refreshLink: () => this.refreshLink(job),
        onBytes: (bytes) => {
          job.bytes_downloaded = bytes;
          this.reportProgress(job, false);
        },
        signal: abort.signal,
        maxBytesPerSecond: job.payload.max_bytes_per_second,
        ...download,
        logger: this.options.logger,
        stepHook: this.options.stepHook,
      });
    } catch (error) {
      if (abort.signal.aborted) return this.stopped ? 'pause' : 'continue';
      await this.discardDownload();
      const message = error instanceof DownloadFailedError ? error.message : `download failed: ${errorMessage(error)}`;
      await this.finish(job, { code: 'download_failed', message });
      return 'continue';
    } finally {
      if (this.downloadAbort === abort) this.downloadAbort = undefined;
    }
    job.bytes_downloaded = job.payload.size;
    await this.enterPhase(job, 'verifying');
    return 'continue';
  }

  /** An offline job's "download": its image, copied out of the bundle (again, after a power cut cut it short). */
  private async copyFromBundle(job: OtaJob, offline: NonNullable<OtaJob['offline']>): Promise<StepOutcome> {
    const sink = this.sinkFor(job);
    if ((await sink.offset()) !== job.payload.size) {
      await sink.reset();
      try {
        await copyImage(offline.bundle_path, offline.image_offset, job.payload.size, sink);
      } catch (error) {
        await this.discardDownload();
        await this.finish(job, {
          code: 'download_failed',
          message: `could not read the bundle: ${errorMessage(error)}`,
        });
        return 'continue';
      }
    }
    job.bytes_downloaded = job.payload.size;
    await this.enterPhase(job, 'verifying');
    return 'continue';
  }

  private async refreshLink(job: OtaJob): Promise<{ url: string; url_expires_at: string }> {
    // Only the cloud can sign a new link: give a reconnecting tunnel a chance before counting a failure.
    if (!this.options.tunnel.connected) await this.options.tunnel.waitUntilConnected(this.options.requestTimeoutMs);
    const data = await this.options.tunnel.request(
      DeviceAction.otaRefreshUrl,
      { update_id: job.payload.update_id },
      { timeoutMs: this.options.requestTimeoutMs },
    );
    if (!validate.otaRefreshUrlData.Check(data)) throw new Error('ota_refresh_url answered without url/url_expires_at');
    job.payload = { ...job.payload, url: data.url, url_expires_at: data.url_expires_at };
    await this.persist();
    return data;
  }

  private async verify(job: OtaJob): Promise<StepOutcome> {
    const sink = this.sinkFor(job);
    const [bytes, sha256] = [await sink.offset(), await sink.sha256()];
    if (bytes !== job.payload.size || sha256 !== job.payload.sha256) {
      await this.discardDownload();
      await this.finish(job, {
        code: 'checksum_mismatch',
        message: `downloaded ${bytes} bytes with sha256 ${sha256}, expected ${job.payload.size} bytes with ${job.payload.sha256}`,
      });
      return 'continue';
    }
    // A cancel that arrived while hashing wins: nothing has been touched yet.
    if (job.cancel_requested || this.stopped) return this.stopped ? 'pause' : 'continue';
    await this.enterPhase(job, 'installing');
    return 'continue';
  }

  private async install(job: OtaJob): Promise<StepOutcome> {
    const sink = this.sinkFor(job);
    try {
      await this.options.installer.install({
        version: job.payload.version,
        sha256: job.payload.sha256,
        filePath: sink.filePath,
      });
    } catch (error) {
      await this.options.installer.revert().catch(() => {});
      await this.discardDownload();
      const code = error instanceof ArtifactMismatchError ? 'artifact_mismatch' : 'install_failed';
      await this.finish(job, { code, message: `install failed: ${errorMessage(error)}` });
      return 'continue';
    }
    this.boot = 'not_rebooted';
    await this.enterPhase(job, 'rebooting');
    await this.discardDownload();
    return 'continue';
  }

  private async rebootIntoNewImage(job: OtaJob): Promise<StepOutcome> {
    try {
      await this.requestReboot();
      return 'pause';
    } catch (error) {
      return this.revert(job, { code: 'boot_failed', message: `could not reboot: ${errorMessage(error)}` });
    }
  }

  /** The new image runs on trial: it must prove healthy and reach the cloud, else the previous one comes back. */
  private async confirm(job: OtaJob): Promise<StepOutcome> {
    await this.enterPhase(job, 'health_checking');
    return this.commit(job);
  }

  /**
   * Commits the trial boot once it proved itself on this boot: also how a commit cut short by
   * a power cut is resumed (in `committing`, the check runs again and the commit is re-run).
   */
  private async commit(job: OtaJob): Promise<StepOutcome> {
    const version = this.options.installer.currentVersion();
    const [reachedCloud, health] = await Promise.all([
      // An offline install is made without the cloud: its health check alone decides.
      job.offline ? true : this.options.tunnel.waitUntilConnected(this.options.confirmTimeoutMs),
      this.options.checkHealth(version).catch((error) => ({ healthy: false, message: errorMessage(error) })),
    ]);
    if (this.stopped) return 'pause';
    if (!health.healthy) {
      return this.revert(job, {
        code: 'health_check_failed',
        message: `health check failed on ${version}: ${health.message}`,
      });
    }
    if (!reachedCloud) {
      const message = `${version} did not reach the cloud within ${this.options.confirmTimeoutMs} ms`;
      return this.revert(job, { code: 'boot_failed', message });
    }
    await this.enterPhase(job, 'committing');
    try {
      await this.options.installer.commit();
    } catch (error) {
      return this.revert(job, { code: 'boot_failed', message: `commit failed: ${errorMessage(error)}` });
    }
    await this.options.stepHook?.('committed');
    this.boot = 'normal';
    return 'continue';
  }

  /** A trial boot no persisted update accounts for (its state was lost or discarded): nobody may confirm it. */
  private async revertUnclaimedTrial(): Promise<void> {
    const version = this.options.installer.currentVersion();
    this.options.logger.warn('trial boot without an update to confirm it: reverting to the previous version', {
      version,
    });
    const outcome = await this.options.installer.revert();
    if (outcome === 'reboot') {
      // The abandoned image is the one running: only a reboot brings the previous one back.
      try {
        await this.requestReboot();
        return;
      } catch (error) {
        this.options.logger.error('could not reboot into the previous version', { error: errorMessage(error) });
      }
    }
    this.boot = 'normal';
    // A `connected` that came first reported the trial version.
    if (this.options.tunnel.connected) this.sendDeviceInfo();
  }

  private async revert(job: OtaJob, failure: { code: OtaFailureCode; message: string }): Promise<StepOutcome> {
    job.failure = failure;
    await this.enterPhase(job, 'reverting');
    const outcome = await this.options.installer.revert();
    await this.options.stepHook?.('reverted');
    if (outcome === 'reboot') {
      // The result goes out after the reboot, from the version that then runs.
      try {
        await this.requestReboot();
        return 'pause';
      } catch (error) {
        this.options.logger.error('could not reboot into the previous version', { error: errorMessage(error) });
      }
    }
    this.boot = 'normal';
    return 'continue';
  }

  /** Asks for the reboot once: until the next `start`, the loop stays put. */
  private async requestReboot(): Promise<void> {
    this.rebootRequested = true;
    try {
      await this.options.reboot();
    } catch (error) {
      this.rebootRequested = false;
      throw error;
    }
  }

  /** Refuses (IllegalPhaseChangeError) any change the phase table forbids, before it is persisted. */
  private async enterPhase(job: OtaJob, phase: OtaPhase, report = true): Promise<void> {
    assertTransition(job.phase, phase);
    job.phase = phase;
    await this.persist();
    await this.options.stepHook?.(`phase:${phase}`);
    if (report) this.reportProgress(job, true);
  }

  /** Ends the job: the result and the job's removal land in one atomic write, then the result goes out. */
  private async finish(job: OtaJob, failure: { code: OtaFailureCode; message: string } | undefined): Promise<void> {
    assertTransition(job.phase, failure ? 'failed' : 'completed');
    const result: OtaResultPayload = {
      update_id: job.payload.update_id,
      status: failure ? 'failed' : 'completed',
      current_version: this.options.installer.currentVersion(),
      previous_version: job.previous_version,
      ...(failure ? { error: { code: failure.code, message: failure.message.slice(0, 2000) } } : {}),
    };
    const offline: OfflineInstallPayload | undefined = job.offline && {
      bundle_id: job.offline.bundle_id,
      version: job.payload.version,
      from_version: job.previous_version,
      installed_at: new Date().toISOString(),
      result: result.status,
      current_version: result.current_version,
      ...(result.error ? { error: result.error } : {}),
      ...(job.offline.manifest !== undefined && job.offline.signature
        ? { manifest: job.offline.manifest, signature: job.offline.signature }
        : {}),
    };
    this.state.job = null;
    // What the boot loader did concerned this job only: the next one starts from a plain boot. A
    // trial still unresolved stays one, so that it is reverted rather than taken for the norm.
    if (this.boot !== 'trial') this.boot = 'normal';
    this.state.results.push({ payload: result, acknowledged: false, ...(offline ? { offline } : {}) });
    this.trimResults();
    await this.persist();
    await this.options.stepHook?.('result:persisted');
    await this.discardDownload();
    this.options.logger.info('OTA finished', { ...result });
    job.phase = result.status;
    this.reportProgress(job, true);
    this.options.onResult?.(result);
    this.resultAttempt = 0;
    if (offline) {
      void this.flushResults().finally(() => {
        if (this.options.tunnel.connected) this.sendDeviceInfo();
      });
    } else {
      void this.flushResults();
    }
  }

  /** At-least-once: every unacknowledged result goes out until the server answers `success`. */
  private flushResults(): Promise<void> {
    if (this.flushing) {
      this.flushAgain = true;
      return this.flushing;
    }
    clearTimeout(this.resultTimer);
    this.resultTimer = undefined;
    this.flushing = this.sendUnacknowledgedResults()
      .catch((error) =>
        this.options.logger.error('could not record a result acknowledgement', { error: errorMessage(error) }),
      )
      .finally(() => {
        this.flushing = undefined;
        this.scheduleResultRetry();
      });
    return this.flushing;
  }

  private async sendUnacknowledgedResults(): Promise<void> {
    do {
      this.flushAgain = false;
      for (const recorded of this.state.results.filter((r) => !r.acknowledged)) {
        if (this.stopped || !this.options.tunnel.connected) return;
        const updateId = recorded.payload.update_id;
        this.resendRequested?.delete(updateId);
        try {
          const [action, payload] = recorded.offline
            ? [DeviceAction.offlineInstall, recorded.offline]
            : [DeviceAction.otaResult, recorded.payload];
          await this.options.tunnel.request(action, payload, { timeoutMs: this.options.requestTimeoutMs });
        } catch (error) {
          this.options.logger.warn('ota_result not acknowledged yet', {
            update_id: updateId,
            error: errorMessage(error),
          });
          return;
        }
        if (this.resendRequested?.has(updateId)) continue;
        recorded.acknowledged = true;
        this.trimResults();
        if (this.stopped) return;
        await this.persist();
        await this.options.stepHook?.('result:acknowledged');
      }
    } while (this.flushAgain);
  }

  /** While disconnected, the next `connected` flushes; no timer needed. */
  private scheduleResultRetry(): void {
    const waiting = this.state.results.some((r) => !r.acknowledged);
    if (!waiting) {
      this.resultAttempt = 0;
      return;
    }
    if (this.stopped || !this.options.tunnel.connected || this.resultTimer) return;
    const delayMs = backoffDelayMs(this.resultAttempt++, this.options.resultRetryBaseMs, 60_000);
    this.resultTimer = setTimeout(
      () => {
        this.resultTimer = undefined;
        void this.flushResults();
      },
      Math.max(delayMs, 10),
    );
  }

  private trimResults(): void {
    const acknowledged = this.state.results.filter((r) => r.acknowledged);
    const dropping = new Set(acknowledged.slice(0, Math.max(0, acknowledged.length - acknowledgedResultsKept)));
    if (dropping.size > 0) this.state.results = this.state.results.filter((r) => !dropping.has(r));
  }

  /**
   * Best effort and only the latest matters: every phase change, and within a phase at most one
   * per interval. (A report per 5 % step as well made a fast download twenty reports, and a fleet
   * downloading at once spent its time sending them.)
   */
  private reportProgress(job: OtaJob, phaseChanged: boolean): void {
    const percent = overallProgress(job.phase, job.bytes_downloaded, job.payload.size);
    const now = Date.now();
    if (!phaseChanged && now - this.lastProgressAt < this.options.progressIntervalMs) return;
    this.lastProgressAt = now;
    const progress: OtaProgressPayload = {
      update_id: job.payload.update_id,
      phase: job.phase,
      progress: percent,
      bytes_downloaded: job.bytes_downloaded,
    };
    this.options.onSnapshot?.({
      ...progress,
      target_version: job.payload.version,
      bytes_downloaded: job.bytes_downloaded,
    });
    // An offline install names no update of the server's.
    if (job.phase === 'completed' || job.phase === 'failed' || job.offline) return;
    // A first download attempt's report repeats the phase's (a fleet's devices sent both at once).
    const sent = this.sentProgress;
    if (
      sent?.update_id === progress.update_id &&
      sent.phase === progress.phase &&
      sent.progress === progress.progress &&
      sent.bytes_downloaded === progress.bytes_downloaded
    ) {
      return;
    }
    if (this.options.tunnel.notify(DeviceAction.otaProgress, progress)) this.sentProgress = progress;
    else this.unsentProgress = progress;
  }

  private sinkFor(job: OtaJob): DownloadSink {
    if (this.sink?.updateId !== job.payload.update_id) {
      this.sink = { updateId: job.payload.update_id, sink: this.options.createSink(job.payload.update_id) };
    }
    return this.sink.sink;
  }

  private async discardDownload(): Promise<void> {
    const held = this.sink;
    this.sink = undefined;
    await held?.sink.discard().catch(() => {});
  }

  private persist(): Promise<void> {
    return this.options.store.save(this.state);
  }
}

/** A bundle's header and where its image starts; throws saying why the file is no bundle. */
async function readBundle(path: string) {
  const handle = await open(path, 'r').catch((error: NodeJS.ErrnoException) => {
    throw new Error(error.code === 'ENOENT' ? `${path} does not exist` : `cannot read ${path}: ${error.message}`);
  });
  try {
    const fileSize = (await handle.stat()).size;
    const head = Buffer.alloc(Math.min(MAX_BUNDLE_HEADER_BYTES, fileSize));
    await handle.read(head, 0, head.length, 0);
    const parsed = parseBundleHeader(head);
    if (!parsed.ok) throw new Error(`${path}: ${parsed.reason}`);
    return { header: parsed.header, imageOffset: parsed.imageOffset, fileSize };
  } finally {
    await handle.close();
  }
}

/** Streams `size` bytes of the bundle from `offset` into the sink: a GiB image is never held whole. */
async function copyImage(path: string, offset: number, size: number, sink: DownloadSink): Promise<void> {
  if ((await stat(path)).size < offset + size) throw new Error(`${path} is shorter than its manifest says`);
  for await (const chunk of createReadStream(path, { start: offset, end: offset + size - 1 })) {
    await sink.append(chunk as Buffer);
  }
}
