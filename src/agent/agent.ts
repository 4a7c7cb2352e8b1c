import { createHash, randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import type { Agent as HttpAgent } from 'node:http';
import { join } from 'node:path';
import {
  backoffDelayMs,
  CloudAction,
  DEVICE_LOCKED,
  DeviceAction,
  type DeviceInfoPayload,
  type DeviceLockPayload,
  TunnelDefaults,
} from '../protocol/tunnel.ts';
import { AbInstaller } from './ab-installer.ts';
import { readJsonIfExists, writeJsonAtomic } from './atomic-file.ts';
import { type BootEnvironmentStore, GrubEnvironment, UBootEnvironment } from './boot-environment.ts';
import { type BootIdentityReader, type BootIdentitySources, kernelBootIdentity } from './boot-identity.ts';
import { BootloaderInstaller, type BootSlot } from './bootloader-installer.ts';
import { defaultLockDir, LockWatcher, sameLock } from './device-lock.ts';
import { type DownloadSink, FileDownloadSink, MemoryDownloadSink } from './download-sink.ts';
import type { BootState, Installer, StepHook } from './installer.ts';
import { createJsonLogger, errorMessage, type Logger } from './logger.ts';
import { MemoryInstaller } from './memory-installer.ts';
import {
  type HealthVerdict,
  type OfflineInstallOutcome,
  OfflineInstallRefusedError,
  OtaHandler,
  type OtaSnapshot,
} from './ota-handler.ts';
import { FileOtaStateStore, MemoryOtaStateStore, type OtaStateStore } from './ota-state-store.ts';
import { RaucInstaller } from './rauc-installer.ts';
import { ScriptInstaller } from './script-installer.ts';
import { runShell } from './shell.ts';
import { swupdateSlotWriter } from './swupdate.ts';
import { CommandRefusedError, TunnelClient } from './tunnel-client.ts';

/** The agent's own version, on the wire (`connect`, `device_info`) and in `--version`. */
export const AGENT_VERSION = '0.1.0';

export const installerKinds = ['ab', 'script', 'uboot', 'grub', 'rauc', 'swupdate'] as const;
export type InstallerKind = (typeof installerKinds)[number];
/** The boot loaders whose environment the agent flips (for `uboot`, `grub`, and SWUpdate's slots). */
export const bootloaderKinds = ['uboot', 'grub'] as const;
export type BootloaderKind = (typeof bootloaderKinds)[number];

export interface AgentOptions {
  /** `wss://host:port` or `https://host:port`. */
  server: string;
  deviceId: string;
  apiKey: string;
  /** Where the agent keeps its state, downloads and (A/B installer) slots. Not needed with `storage: 'memory'`. */
  dataDir?: string;
  /**
   * `memory` keeps OTA state and downloads in the process (the simulator: thousands of devices,
   * no disk); `disk` (default) survives a power cut.
   */
  storage?: 'disk' | 'memory';
  /** Development only: allow `ws://`, `http://` and unencrypted downloads. */
  allowInsecure?: boolean;
  /**
   * The device's IANA time zone, told to the server in device_info (its maintenance windows are
   * in it); default: the system's (Intl, from TZ or /etc/localtime).
   */
  timezone?: string;
  /** PEM of the organization's Ed25519 public key; updates must then be signed by it. */
  publicKeyPem?: string;
  organizationId?: string;
  /** Development only: install unsigned updates when no key is pinned. */
  allowUnsigned?: boolean;
  /**
   * Default: `ab` (slots as directories under dataDir) on disk, an in-memory installer with
   * `storage: 'memory'`. `uboot` and `grub` write real partitions and flip the boot loader's
   * environment, `rauc` hands a RAUC bundle to the RAUC service, `swupdate` has SWUpdate write
   * the inactive slot then flips the environment like `uboot` (or `grub` with grubEnvFile).
   * See docs/devices.md.
   */
  installer?: InstallerKind | Installer;
  /** For `installer: 'script'`. */
  installScript?: string;
  /** For `installer: 'uboot' | 'grub'`: the partition (block device or file) of each slot. */
  slotDevices?: Record<BootSlot, string>;
  /** For `installer: 'uboot'`: libubootenv's config, default `/etc/fw_env.config`. */
  fwEnvConfig?: string;
  /** For `installer: 'grub'`: the environment block, default `/boot/grub/grubenv`. */
  grubEnvFile?: string;
  /** For `installer: 'swupdate'`: arguments before `-i`, e.g. `['-k', '/etc/swupdate/public.pem']`. */
  swupdateArgs?: string[];
  /** For `installer: 'swupdate'`: the boot loader whose A/B variables the agent flips after SWUpdate wrote the slot. */
  bootloader?: BootloaderKind;
  /**
   * Where the kernel's boot id and command line are read (default /proc; tests point them at
   * files). Without it and without a `rebootCommand`, a boot is one of the agent's own soft restarts.
   */
  bootIdentity?: BootIdentitySources;
  /** After the installer failed at start, how long before it is tried again (doubling, up to 5 min). Default 5 s. */
  startupRetryMs?: number;
  /** The factory image's version, until an update is installed. Default `0.0.0`. */
  initialVersion?: string;
  /** Boot attempts of a new image before the bootloader falls back (`bootlimit`). Default 3. */
  maxBootTries?: number;
  /** E.g. `systemctl reboot`. Without one, a "reboot" is an in-process soft restart. */
  rebootCommand?: string;
  /** Run with `/bin/sh -c` on a trial boot, `EDGEFLOW_VERSION` set; must exit 0. */
  healthCommand?: string;
  /**
   * The device's own health verdict instead of `healthCommand` (the simulator injects failures
   * with it): asked on a trial boot with the trial version, and for every `health_check` from the
   * cloud with the running one. Without it, `health_check` answers `healthy` while the agent runs.
   */
  health?: (version: string) => HealthVerdict | Promise<HealthVerdict>;
  healthTimeoutMs?: number;
  /** A trial boot must reach `connected` (and pass the health check) within this. Default 120 s. */
  confirmTimeoutMs?: number;
  heartbeatIntervalMs?: number;
  reconnectBaseMs?: number;
  connectTimeoutMs?: number;
  requestTimeoutMs?: number;
  downloadRetries?: number;
  downloadRetryBaseMs?: number;
  downloadIdleTimeoutMs?: number;
  progressIntervalMs?: number;
  resultRetryBaseMs?: number;
  perMessageDeflate?: boolean;
  httpAgent?: HttpAgent;
  /** PEM of a CA to trust for the tunnel and downloads, for a self-signed server. */
  ca?: string | Buffer;
  logger?: Logger;
  /** Fault injection: called at named steps of the update; a hook that never settles is a power cut. */
  stepHook?: StepHook;
  /** The device's model: an offline bundle naming compatible models is installed only on one of them. */
  model?: string;
  /** How often the data directory's `control/` is looked at for `edgeflow-agent install` requests. Default 1 s. */
  controlPollMs?: number;
  /** Fault injection (the simulator): where downloaded bytes go instead of the default sink, e.g. one that corrupts them. */
  createDownloadSink?: (updateId: string) => DownloadSink;
  /**
   * The update-lock directory (device-lock.ts): one file per holder, present = locked. Default
   * `<dataDir>/locks` on disk; with `storage: 'memory'`, locks only when this is given.
   */
  lockDir?: string;
  /** The lock directory's fallback re-read, besides its watch. Default 10 s. */
  lockRescanMs?: number;
}

/**
 * One device: boots (lets the installer play bootloader), reconciles any update a power cut
 * interrupted, keeps the tunnel up and answers the cloud.
 *
 * Events: `connected`, `disconnected` (code, reason), `booted` (BootState), `ota` (OtaSnapshot on
 * every phase change and throttled download progress), `result` (OtaResultPayload), `rebooting`,
 * `unhealthy` (the reason its installer cannot start).
 */
export class Agent extends EventEmitter {
  readonly deviceId: string;
  private readonly options: AgentOptions;
  private readonly logger: Logger;
  private readonly installer: Installer;
  private readonly tunnel: TunnelClient;
  private readonly ota: OtaHandler;
  private readonly downloadDir: string | undefined;
  private running = false;
  private rebootFallbackTimer: NodeJS.Timeout | undefined;
  /** Why the installer could not start, while it cannot: reported in device_info and health_check. */
  private startupError: string | undefined;
  private startupAttempt = 0;
  private startupTimer: NodeJS.Timeout | undefined;
  private bootId: string | undefined;
  /** Which boot this is: the kernel's, or, for an agent that reboots in process, its own restarts. */
  private readonly bootIdentity: BootIdentityReader;
  private softBootId = randomUUID();
  /** What the device ran when it last worked: reported while the installer cannot say. */
  private lastKnown: { version: string; slot?: string } | undefined;
  private readonly lastKnownFile: string | undefined;
  private controlTimer: NodeJS.Timeout | undefined;
  private controlPolling: Promise<void> | undefined;
  /** The device's update lock, when it has a lock directory. */
  private readonly locks: LockWatcher | undefined;
  /** The lock state the server acknowledged last (device_lock), and the report under way. */
  private lockAcknowledged: DeviceLockPayload | undefined;
  private lockReporting: Promise<void> | undefined;
  private lockRetryTimer: NodeJS.Timeout | undefined;

  constructor(options: AgentOptions) {
    super();
    this.options = options;
    this.deviceId = options.deviceId;
    this.logger = options.logger ?? createJsonLogger({ device_id: options.deviceId });
    const inMemory = options.storage === 'memory';
    const dataDir = options.dataDir;
    this.bootIdentity =
      options.bootIdentity || options.rebootCommand
        ? kernelBootIdentity(options.bootIdentity)
        : { read: async () => ({ bootId: this.softBootId, slot: undefined }) };
    if (!inMemory && !dataDir) throw new Error('dataDir is required unless storage is memory');
    this.installer = this.createInstaller(inMemory);
    this.downloadDir = inMemory || !dataDir ? undefined : join(dataDir, 'download');
    this.lastKnownFile = inMemory || !dataDir ? undefined : join(dataDir, 'last-known.json');
    const lockDir = options.lockDir ?? (inMemory || !dataDir ? undefined : defaultLockDir(dataDir));
    this.locks = lockDir
      ? new LockWatcher({
          dir: lockDir,
          rescanMs: options.lockRescanMs ?? 10_000,
          logger: this.logger,
          onChange: (state) => {
            this.logger.info(state.locked ? 'device update lock held' : 'device update lock released', {
              ...(state.reason ? { reason: state.reason } : {}),
              ...(state.until ? { until: state.until } : {}),
            });
            this.emit('lock', state);
            this.reportLock();
          },
        })
      : undefined;

    this.tunnel = new TunnelClient({
      server: options.server,
      deviceId: options.deviceId,
      apiKey: options.apiKey,
      agentVersion: AGENT_VERSION,
      firmwareVersion: () => this.currentVersion,
      health: () => {
        if (this.startupError) return { healthy: false, message: this.startupError };
        return options.health ? options.health(this.installer.currentVersion()) : { healthy: true, message: 'ok' };
      },
      logger: this.logger,
      allowInsecure: options.allowInsecure,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      connectTimeoutMs: options.connectTimeoutMs,
      reconnectBaseMs: options.reconnectBaseMs,
      perMessageDeflate: options.perMessageDeflate,
      httpAgent: options.httpAgent,
      ca: options.ca,
      onConnected: () => {
        this.ota.onConnected();
        // device_info carried the lock; device_lock makes sure the server acknowledged it.
        this.lockAcknowledged = undefined;
        this.reportLock();
        this.emit('connected');
      },
      onDisconnected: (code, reason) => this.emit('disconnected', code, reason),
    });

    const store: OtaStateStore =
      inMemory || !dataDir
        ? new MemoryOtaStateStore()
        : new FileOtaStateStore(join(dataDir, 'ota-state.json'), this.logger);
    const downloadDir = this.downloadDir;
    this.ota = new OtaHandler({
      model: options.model,
      policy: {
        deviceId: options.deviceId,
        publicKeyPem: options.publicKeyPem,
        organizationId: options.organizationId,
        allowUnsigned: options.allowUnsigned,
      },
      agentVersion: AGENT_VERSION,
      installer: this.installer,
      describeDevice: () => this.describeDevice(),
      store,
      createSink: (updateId): DownloadSink =>
        options.createDownloadSink?.(updateId) ??
        (downloadDir ? new FileDownloadSink(join(downloadDir, downloadFileName(updateId))) : new MemoryDownloadSink()),
      tunnel: this.tunnel,
      reboot: () => this.reboot(),
      checkHealth: (version) => this.runHealthCheck(version),
      confirmTimeoutMs: options.confirmTimeoutMs ?? 120_000,
      download: {
        maxRetries: options.downloadRetries ?? 5,
        retryBaseMs: options.downloadRetryBaseMs ?? 1_000,
        retryCapMs: 30_000,
        idleTimeoutMs: options.downloadIdleTimeoutMs ?? 30_000,
        allowInsecure: options.allowInsecure ?? false,
        ca: options.ca,
      },
      progressIntervalMs: options.progressIntervalMs ?? 500,
      resultRetryBaseMs: options.resultRetryBaseMs ?? 1_000,
      requestTimeoutMs: options.requestTimeoutMs ?? TunnelDefaults.commandTimeoutMs,
      logger: this.logger,
      stepHook: options.stepHook,
      onSnapshot: (snapshot: OtaSnapshot) => this.emit('ota', snapshot),
      onResult: (result) => this.emit('result', result),
    });
    this.tunnel.handle(CloudAction.otaUpdate, async (payload) => {
      if (this.startupError) throw new CommandRefusedError('device_unhealthy', this.startupError);
      await this.refuseIfLocked(payload);
      return this.ota.acceptUpdate(payload);
    });
    this.tunnel.handle(CloudAction.otaCancel, (payload) => this.ota.cancelUpdate(payload));
  }

  /** The device's update lock as last read (unlocked without a lock directory). */
  get lock(): DeviceLockPayload {
    return this.locks?.state ?? { locked: false };
  }

  /**
   * A new update reaching a locked device is refused (`device_locked`, the lock's reason): no
   * download, no install; the server keeps it waiting. The directory is read afresh, so a lock
   * taken a moment ago counts. `override_lock` (the server's force_after, an admin's force_lock)
   * installs anyway, and says so in the log. The update it already took is never refused.
   */
  private async refuseIfLocked(payload: unknown): Promise<void> {
    if (!this.locks) return;
    const command = (typeof payload === 'object' && payload !== null ? payload : {}) as {
      update_id?: unknown;
      override_lock?: unknown;
      version?: unknown;
    };
    if (this.ota.snapshot?.update_id === command.update_id) return;
    if (this.ota.results.some((result) => result.payload.update_id === command.update_id)) return;
    const state = await this.locks.refresh();
    if (!state.locked) return;
    if (command.override_lock === true) {
      this.logger.warn('installing despite the device update lock: the server overrides it', {
        update_id: command.update_id,
        version: command.version,
        reason: state.reason,
      });
      return;
    }
    this.logger.info('update refused: the device is locked', { update_id: command.update_id, reason: state.reason });
    throw new CommandRefusedError(DEVICE_LOCKED, state.reason ?? 'the device is locked');
  }

  /** Reports the lock until the server acknowledged the state it is in now; again on every connect. */
  private reportLock(): void {
    if (!this.locks || this.lockReporting || !this.running) return;
    this.lockReporting = (async () => {
      let attempt = 0;
      for (;;) {
        const state = this.locks!.state;
        if (!this.running || !this.tunnel.connected) return;
        if (this.lockAcknowledged && sameLock(this.lockAcknowledged, state)) return;
        try {
          await this.tunnel.request(DeviceAction.deviceLock, state, {
            timeoutMs: this.options.requestTimeoutMs ?? TunnelDefaults.commandTimeoutMs,
          });
          this.lockAcknowledged = state;
          attempt = 0;
        } catch (error) {
          this.logger.warn('device_lock was not acknowledged; resending', { error: errorMessage(error) });
          const delayMs = Math.max(100, backoffDelayMs(attempt++, this.options.resultRetryBaseMs ?? 1_000, 60_000));
          await new Promise<void>((resolve) => {
            this.lockRetryTimer = setTimeout(resolve, delayMs);
            this.lockRetryTimer.unref();
          });
        }
      }
    })().finally(() => {
      this.lockReporting = undefined;
    });
  }

  /** The version running now; while the installer cannot start, the last one known to run. */
  get currentVersion(): string {
    if (this.startupError) return this.lastKnown?.version ?? this.options.initialVersion ?? '0.0.0';
    return this.installer.currentVersion();
  }

  /** Why the agent cannot work (its installer failed at start), or undefined when it can. */
  get healthError(): string | undefined {
    return this.startupError;
  }

  get connected(): boolean {
    return this.tunnel.connected;
  }

  get otaState(): OtaSnapshot | null {
    return this.ota.snapshot;
  }

  /** Results finished but not yet acknowledged by the server. */
  get unacknowledgedResults(): number {
    return this.ota.results.filter((r) => !r.acknowledged).length;
  }

  /** Resolves `true` once the tunnel is up, `false` after `timeoutMs`. */
  waitUntilConnected(timeoutMs: number): Promise<boolean> {
    return this.tunnel.waitUntilConnected(timeoutMs);
  }

  /** The tunnel URL derived from `server`. */
  get tunnelUrl(): string {
    return this.tunnel.url;
  }

  /** Boots, reconciles the persisted update, connects. Resolves once booted, not once connected. */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    if (this.options.dataDir && this.options.storage !== 'memory') {
      await mkdir(this.options.dataDir, { recursive: true });
    }
    if (this.lastKnownFile) {
      // Only a hint for a device that cannot start: an unreadable one is no reason not to.
      const known = await readJsonIfExists(this.lastKnownFile).catch(() => undefined);
      const valid = typeof (known as { version?: unknown } | undefined)?.version === 'string';
      this.lastKnown = valid ? (known as { version: string; slot?: string }) : undefined;
    }
    await this.ota.load();
    await this.locks?.start();
    await this.bootSequence();
    await this.startControl();
  }

  /**
   * Installs an offline bundle (a file written by `edgeflow-ota firmware export`) through the
   * update path: refused (OfflineInstallRefusedError, one line) when it is unsigned or signed by
   * another key, of another organization, expired, for another model, a downgrade, corrupt, or the
   * device is busy. `edgeflow-agent install` reaches it through the control directory.
   */
  installOffline(bundlePath: string): Promise<OfflineInstallOutcome> {
    if (this.startupError) {
      return Promise.reject(new OfflineInstallRefusedError('device_unhealthy', this.startupError));
    }
    return this.ota.installOffline(bundlePath);
  }

  /**
   * `<dataDir>/agent.pid` says an agent runs here; `<dataDir>/control/<id>.request.json`
   * ({"bundle": path}) is a bundle handed over by `edgeflow-agent install`, answered in
   * `<id>.answer.json`.
   */
  private async startControl(): Promise<void> {
    const dataDir = this.options.storage === 'memory' ? undefined : this.options.dataDir;
    if (!dataDir || !this.running) return;
    await mkdir(join(dataDir, CONTROL_DIR), { recursive: true });
    await writeFile(join(dataDir, PID_FILE), `${process.pid}\n`);
    this.controlTimer = setInterval(() => {
      this.controlPolling ??= this.takeControlRequests(join(dataDir, CONTROL_DIR)).finally(() => {
        this.controlPolling = undefined;
      });
    }, this.options.controlPollMs ?? 1_000);
    this.controlTimer.unref();
  }

  private async stopControl(removePidFile: boolean): Promise<void> {
    clearInterval(this.controlTimer);
    this.controlTimer = undefined;
    await this.controlPolling;
    const dataDir = this.options.dataDir;
    if (removePidFile && dataDir && this.options.storage !== 'memory') {
      await rm(join(dataDir, PID_FILE), { force: true });
    }
  }

  private async takeControlRequests(dir: string): Promise<void> {
    const names = await readdir(dir).catch(() => [] as string[]);
    for (const name of names.filter((n) => n.endsWith(REQUEST_SUFFIX))) {
      const id = name.slice(0, -REQUEST_SUFFIX.length);
      const taken = join(dir, `${id}.taken`);
      // Taken once: a request is never answered twice.
      if (
        !(await rename(join(dir, name), taken).then(
          () => true,
          () => false,
        ))
      )
        continue;
      let answer: Record<string, unknown>;
      try {
        const request = JSON.parse(await readFile(taken, 'utf8')) as { bundle?: unknown };
        if (typeof request.bundle !== 'string')
          throw new OfflineInstallRefusedError('invalid_request', 'no bundle named');
        answer = { ok: true, ...(await this.installOffline(request.bundle)) };
      } catch (error) {
        const code = error instanceof OfflineInstallRefusedError ? error.code : 'internal_error';
        answer = { ok: false, code, message: errorMessage(error) };
        this.logger.warn('offline bundle refused', { code, error: errorMessage(error) });
      }
      await writeJsonAtomic(join(dir, `${id}${ANSWER_SUFFIX}`), answer).catch((error) =>
        this.logger.error('could not answer an install request', { error: errorMessage(error) }),
      );
      await rm(taken, { force: true });
    }
  }

  /** Stops at a safe point; an update in progress resumes at the next start. */
  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.rebootFallbackTimer);
    clearTimeout(this.startupTimer);
    await this.stopControl(true);
    clearTimeout(this.lockRetryTimer);
    this.locks?.stop();
    await Promise.all([this.ota.stop(), this.tunnel.stop()]);
  }

  /** Fault injection: drops the link and every timer at once, like pulling the plug, without waiting for anything. */
  async powerCut(): Promise<void> {
    this.running = false;
    clearTimeout(this.rebootFallbackTimer);
    clearTimeout(this.startupTimer);
    // Like a crash: the pid file stays behind (the process it names is gone).
    clearInterval(this.controlTimer);
    this.controlTimer = undefined;
    clearTimeout(this.lockRetryTimer);
    this.locks?.stop();
    this.ota.halt();
    await this.tunnel.stop();
  }

  private async bootSequence(): Promise<void> {
    this.bootId = (await this.bootIdentity.read()).bootId;
    let boot: BootState;
    try {
      boot = await this.installer.boot();
    } catch (error) {
      if (!this.running) return;
      this.cannotStart(errorMessage(error));
      return;
    }
    if (!this.running) return;
    const recovered = this.startupError !== undefined;
    this.startupError = undefined;
    this.startupAttempt = 0;
    this.logger.info('booted', { ...boot });
    this.emit('booted', boot);
    await this.removeStaleDownloads();
    this.tunnel.start();
    this.ota.start(boot);
    // The server heard the health error over this tunnel: tell it the device works again.
    if (recovered && this.tunnel.connected) this.ota.onConnected();
  }

  /**
   * The installer failed at start (no RAUC service, both U-Boot environment copies corrupt …):
   * nothing can be updated, but the device is not silent. One clear line in the log; the tunnel
   * comes up so the server learns why (device_info with `health_error`, health_check unhealthy,
   * updates refused); and the installer is tried again with capped backoff, since the cause
   * (a service still starting, a fixed environment) may go away.
   */
  private cannotStart(why: string): void {
    const first = this.startupError === undefined;
    const kind = typeof this.options.installer === 'string' ? `${this.options.installer} ` : '';
    this.startupError = `the ${kind}installer cannot start: ${why}`.slice(0, 2048);
    if (first) {
      this.logger.error('agent cannot work: its installer failed at start; retrying', { error: this.startupError });
      this.emit('unhealthy', this.startupError);
    }
    this.tunnel.start();
    const delayMs = Math.max(
      1_000,
      backoffDelayMs(this.startupAttempt++, this.options.startupRetryMs ?? 5_000, 300_000, () => 1),
    );
    this.startupTimer = setTimeout(() => {
      this.startupTimer = undefined;
      void this.bootSequence().catch((error) =>
        this.logger.error('start-up retry failed', { error: errorMessage(error) }),
      );
    }, delayMs);
    this.startupTimer.unref();
  }

  /** What `device_info` says of the device, after every connect. */
  private describeDevice(): Pick<
    DeviceInfoPayload,
    'current_version' | 'slot' | 'boot_id' | 'health_error' | 'lock' | 'timezone'
  > {
    const bootId = {
      ...(this.bootId ? { boot_id: this.bootId } : {}),
      ...(this.locks ? { lock: this.locks.state } : {}),
      ...timeZoneOf(this.options.timezone),
    };
    if (this.startupError) {
      const slot = this.lastKnown?.slot;
      return {
        current_version: this.currentVersion,
        ...(slot ? { slot } : {}),
        ...bootId,
        health_error: this.startupError,
      };
    }
    const known = { version: this.installer.currentVersion(), slot: this.installer.currentSlot?.() };
    if (known.version !== this.lastKnown?.version || known.slot !== this.lastKnown?.slot) {
      this.lastKnown = known;
      if (this.lastKnownFile) {
        const file = this.lastKnownFile;
        void writeJsonAtomic(file, known).catch((error) =>
          this.logger.warn('could not remember the running version', { file, error: errorMessage(error) }),
        );
      }
    }
    return { current_version: known.version, ...(known.slot ? { slot: known.slot } : {}), ...bootId };
  }

  private createInstaller(inMemory: boolean): Installer {
    const { options } = this;
    const choice = options.installer ?? (inMemory ? undefined : 'ab');
    const initialVersion = options.initialVersion ?? '0.0.0';
    if (choice === undefined) return new MemoryInstaller({ initialVersion, maxTries: options.maxBootTries });
    if (typeof choice === 'object') return choice;
    if (inMemory || !options.dataDir) throw new Error(`the ${choice} installer needs storage on disk and a dataDir`);
    if (choice === 'script') {
      if (!options.installScript) throw new Error('the script installer needs installScript');
      return new ScriptInstaller({
        installScript: options.installScript,
        dataDir: options.dataDir,
        maxTries: options.maxBootTries,
        bootIdentity: this.bootIdentity,
      });
    }
    if (choice === 'rauc') {
      return new RaucInstaller({ dataDir: options.dataDir, initialVersion, stepHook: options.stepHook });
    }
    if (choice === 'uboot' || choice === 'grub' || choice === 'swupdate') {
      if (choice !== 'swupdate' && !options.slotDevices) {
        throw new Error(`the ${choice} installer needs slotDevices (one partition per slot)`);
      }
      // SWUpdate writes the slot; which boot loader then tries it is said, never guessed.
      const bootloader = choice === 'swupdate' ? options.bootloader : choice;
      if (bootloader === undefined) throw new Error('the swupdate installer needs bootloader (uboot or grub)');
      const environment: BootEnvironmentStore =
        bootloader === 'grub'
          ? new GrubEnvironment(options.grubEnvFile ?? '/boot/grub/grubenv')
          : new UBootEnvironment(options.fwEnvConfig ?? '/etc/fw_env.config');
      return new BootloaderInstaller({
        environment,
        slots: options.slotDevices,
        writeSlot: choice === 'swupdate' ? swupdateSlotWriter({ args: options.swupdateArgs }) : undefined,
        initialVersion,
        bootLimit: options.maxBootTries,
        bootIdentity: this.bootIdentity,
        stepHook: options.stepHook,
      });
    }
    return new AbInstaller({
      dataDir: options.dataDir,
      initialVersion,
      maxTries: options.maxBootTries,
      stepHook: options.stepHook,
    });
  }

  /**
   * With a reboot command, the machine goes down and the next start boots the pending image.
   * Without one (development, tests, simulator), the same happens in process: tunnel down, boot
   * sequence, tunnel up.
   */
  private async reboot(): Promise<void> {
    this.emit('rebooting');
    const command = this.options.rebootCommand;
    if (command) {
      this.logger.info('rebooting into the new image', { command });
      const result = await runShell(command, { timeoutMs: 60_000 });
      if (result.exitCode !== 0) throw new Error(`${command} exited with ${result.exitCode}: ${result.stderr.trim()}`);
      // A reboot that never comes must not leave the update hanging forever.
      this.rebootFallbackTimer = setTimeout(() => void this.softRestart(), 5 * 60_000);
      this.rebootFallbackTimer.unref();
      return;
    }
    setImmediate(() => void this.softRestart());
  }

  private async softRestart(): Promise<void> {
    if (!this.running) return;
    this.logger.info('soft restart: re-running the boot sequence');
    this.softBootId = randomUUID();
    try {
      await this.tunnel.stop();
      if (!this.running) return;
      await this.bootSequence();
    } catch (error) {
      this.logger.error('soft restart failed', { error: errorMessage(error) });
    }
  }

  /**
   * The operator's health command (`EDGEFLOW_VERSION` set), bounded by `healthTimeoutMs`: run on
   * every trial boot, and callable whenever else the device's health matters (a bake period).
   */
  async runHealthCheck(version = this.currentVersion): Promise<HealthVerdict> {
    if (this.options.health) return this.options.health(version);
    const command = this.options.healthCommand;
    if (!command) return { healthy: true, message: 'no health command configured' };
    const result = await runShell(command, {
      env: { EDGEFLOW_VERSION: version },
      timeoutMs: this.options.healthTimeoutMs ?? 60_000,
    });
    if (result.exitCode === 0) return { healthy: true, message: 'ok' };
    const why = result.timedOut ? 'timed out' : `exited with ${result.exitCode}`;
    return { healthy: false, message: `${command} ${why} ${result.stderr.trim().slice(0, 500)}`.trim() };
  }

  /** A partial download that belongs to no job (the job finished before the file was deleted) only takes space. */
  private async removeStaleDownloads(): Promise<void> {
    if (!this.downloadDir) return;
    const current = this.ota.snapshot;
    const keep = current ? downloadFileName(current.update_id) : undefined;
    const names = await readdir(this.downloadDir).catch(() => [] as string[]);
    await Promise.all(
      names.filter((name) => name !== keep).map((name) => rm(join(this.downloadDir!, name), { force: true })),
    );
  }
}

/** The control directory's names, shared with `edgeflow-agent install` (cli.ts). */
export const CONTROL_DIR = 'control';
export const PID_FILE = 'agent.pid';
export const REQUEST_SUFFIX = '.request.json';
export const ANSWER_SUFFIX = '.answer.json';

/** Update ids come from the network: only a plain one becomes a file name as is. */
function downloadFileName(updateId: string): string {
  if (/^[A-Za-z0-9_-]{1,100}$/.test(updateId)) return `${updateId}.part`;
  return `${createHash('sha256').update(updateId).digest('hex').slice(0, 40)}.part`;
}

/** The zone device_info reports: the configured one, else the system's (none when the platform has no name for it). */
function timeZoneOf(configured: string | undefined): { timezone?: string } {
  const zone = configured ?? Intl.DateTimeFormat().resolvedOptions().timeZone;
  return zone ? { timezone: zone } : {};
}
