/**
 * Replica presence: this process's entry among the replicas (`server_nodes`, beating), which
 * devices it holds (`devices.online` / `connected_node`, written in batches), when they were
 * last seen, and the clean-up of replicas that died holding devices. Every presence change is
 * announced on the event feed by the statement that writes it (devices/repo.ts).
 *
 * The tunnel hub (hub.ts) tells it what happens on the sockets; it never sees a socket.
 */
import type { Logger } from 'pino';
import * as devicesRepo from '../devices/repo.ts';
import { Batcher } from '../infra/batcher.ts';
import type { Config } from '../infra/config.ts';
import type { Db } from '../infra/db.ts';
import { newId } from '../infra/secrets.ts';
import * as repo from './repo.ts';

const FLUSH_INTERVAL_MS = 10_000;
/** Connects and reports within this window share one statement. */
const BATCH = { maxSize: 1000, maxDelayMs: 5 };

export interface VersionReport {
  organizationId: string;
  deviceId: string;
  currentVersion: string;
  agentVersion: string | null;
  /** The slot an A/B device booted, when it says. */
  slot: string | null;
  /** The agent's time zone (a known IANA name), when it says: taken when the device has none. */
  timezone?: string | null;
}

export interface SeenDevice {
  organizationId: string;
  deviceId: string;
  at: Date;
}

/** A device whose tunnel this process holds. */
export interface DeviceHeld {
  organizationId: string;
  deviceId: string;
  agentVersion: string | null;
}

/** A device whose tunnel here closed; `back()` says whether it has reconnected here since. */
export interface GoneDevice {
  organizationId: string;
  deviceId: string;
  back: () => boolean;
}

export interface PresenceDeps {
  config: Config;
  db: Db;
  log: Logger;
}

export class Presence {
  /** This process among the replicas: devices it holds carry it in `connected_node`. */
  readonly nodeId = newId('node');
  readonly #deps: PresenceDeps;
  readonly #markOnline: Batcher<DeviceHeld, void>;
  readonly #reportVersion: Batcher<VersionReport, string | null>;
  readonly #markOffline: Batcher<GoneDevice, void>;
  #timers: NodeJS.Timeout[] = [];
  #beating: Promise<void> | undefined;

  constructor(deps: PresenceDeps) {
    this.#deps = deps;
    this.#markOnline = new Batcher(async (devices) => {
      await devicesRepo.markOnline(deps.db, this.nodeId, devices);
      return devices.map(() => undefined);
    }, BATCH);
    // A fleet rebooting into new firmware closes thousands of tunnels at once: one statement per
    // burst (it was one per device: 20,000 statements in a 10,000-device rollout, 23 s of the
    // embedded database). A device back here before its burst is written stays online.
    this.#markOffline = new Batcher(async (gone) => {
      const still = gone.filter((device) => !device.back());
      if (still.length > 0) await devicesRepo.markOffline(deps.db, this.nodeId, still);
      return gone.map(() => undefined);
    }, BATCH);
    this.#reportVersion = new Batcher(async (reports) => {
      const changed = new Map(
        (await devicesRepo.reportCurrentVersions(deps.db, reports)).map((row) => [
          devicesRepo.deviceKey(row.organization_id, row.device_id),
          row.previous_version === row.current_version ? null : row.previous_version,
        ]),
      );
      return reports.map(
        (report) => changed.get(devicesRepo.deviceKey(report.organizationId, report.deviceId)) ?? null,
      );
    }, BATCH);
  }

  /** A replica is dead after three missed beats. */
  get #staleSeconds(): number {
    return Math.max(0.15, (3 * this.#deps.config.replicaBeatMs) / 1000);
  }

  /**
   * Registers this replica, releases the devices of dead ones, and from then on beats (and
   * releases the devices of replicas that stopped beating) every `replicaBeatMs`, and writes
   * `collectSeen()` (the devices heard from since the last call) every flush interval.
   * `heldHere()` names the devices whose tunnel this process holds: if this replica was taken
   * for dead (a beat late past the bound: a stalled process, a lost database), it registers
   * again and says they are online here.
   */
  async start(collectSeen: () => SeenDevice[], heldHere: () => DeviceHeld[]): Promise<void> {
    const { db, config, log } = this.#deps;
    await repo.registerNode(db, this.nodeId);
    const released = await this.#releaseDeadNodes(true);
    if (released > 0) log.info({ released }, 'devices of stopped replicas marked offline');
    const beat = setInterval(() => {
      this.#beat(heldHere).catch((error: Error) => log.warn({ err: error }, 'replica beat failed'));
    }, config.replicaBeatMs);
    const flush = setInterval(
      () => {
        devicesRepo
          .touchLastSeen(db, collectSeen())
          .catch((error: Error) => log.warn({ err: error }, 'presence flush failed'));
      },
      Math.min(FLUSH_INTERVAL_MS, config.heartbeatIntervalMs),
    );
    this.#timers = [beat, flush];
    for (const timer of this.#timers) timer.unref();
  }

  /** Leaves the replicas: the devices it held are offline, and it is forgotten. */
  async stop(): Promise<void> {
    for (const timer of this.#timers) clearInterval(timer);
    // A beat in flight ends first: one that found this replica gone after it left would register it again.
    await this.#beating?.catch(() => {});
    const { db } = this.#deps;
    // The tunnels just closed: their offline burst is written now, not by a timer once the database is closed.
    await this.#markOffline.drain();
    await devicesRepo.markOfflineOfMissingNodes(db, this.nodeId).catch(() => {});
    await repo.deleteNode(db, this.nodeId).catch(() => {});
  }

  /** The device's tunnel is now held here (batched with others arriving at once). */
  online(device: DeviceHeld): Promise<void> {
    return this.#markOnline.add(device);
  }

  /**
   * Its tunnel here closed (batched); nothing changes if it is held by another replica, or is
   * back here by the time its batch is written.
   */
  offline(device: GoneDevice): Promise<void> {
    return this.#markOffline.add(device);
  }

  /**
   * What the device says it runs (batched): the record follows it. Resolves to the version on
   * record before when it changed, else null.
   */
  reportVersion(report: VersionReport): Promise<string | null> {
    return this.#reportVersion.add(report);
  }

  /** One beat at a time: a beat slower than the interval is not joined by the next. */
  async #beat(heldHere: () => DeviceHeld[]): Promise<void> {
    if (this.#beating) return;
    this.#beating = (async () => {
      const { db, log } = this.#deps;
      if (!(await repo.beatNode(db, this.nodeId))) {
        const held = heldHere();
        log.warn({ devices: held.length }, 'this replica was taken for dead (a late beat): registering again');
        await repo.registerNode(db, this.nodeId);
        await Promise.all(held.map((device) => this.online(device)));
      }
      const released = await this.#releaseDeadNodes(false);
      if (released > 0) log.warn({ released }, 'a replica stopped beating: its devices are marked offline');
    })();
    try {
      await this.#beating;
    } finally {
      this.#beating = undefined;
    }
  }

  /**
   * Forgets the replicas silent for three beats and marks the devices they held offline, in one
   * transaction; `always`: also devices of replicas already gone (at start). Returns how many.
   */
  #releaseDeadNodes(always: boolean): Promise<number> {
    return this.#deps.db.transaction(async (tx) => {
      const dead = await repo.deleteDeadNodes(tx, this.#staleSeconds);
      return dead > 0 || always ? devicesRepo.markOfflineOfMissingNodes(tx) : 0;
    });
  }
}
