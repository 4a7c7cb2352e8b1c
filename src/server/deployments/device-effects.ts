/**
 * What a deployment does to devices through the tunnels this process holds, level-triggered: a
 * pass every `dispatchIntervalMs` (and soon after a `deployment` event) reads the state and acts,
 * so a lost notification (a listener that reconnected, a replica that restarted) delays an
 * effect by at most one pass and never loses it.
 *
 * - Cancels: a running attempt of a cancelled deployment, on a device connected here, gets
 *   `ota_cancel` until it ends. A device that has not started installing stops and reports
 *   `cancelled`; one past that point refuses with `too_late` and finishes (it is not asked again).
 * - Bake probes: a baking device connected here is health-checked every max(1 s, bake/10); an
 *   unhealthy answer fails its bake. (Going offline past the grace, or coming back on another
 *   version, is judged by the scheduler from the device's record.)
 */
import type { Logger } from 'pino';
import { CloudAction } from '../../protocol/tunnel.ts';
import type { EventFeed } from '../events/feed.ts';
import type { Config } from '../infra/config.ts';
import type { Db } from '../infra/db.ts';
import { DeviceCommandError, DeviceUnhealthyError, type TunnelHub } from '../tunnel/hub.ts';
import * as repo from './repo.ts';

export interface DeviceEffectsDeps {
  config: Config;
  db: Db;
  feed: EventFeed;
  tunnel: TunnelHub;
  nodeId: string;
  log: Logger;
  /** A bake failed: the gate has something new to judge. */
  onBakeFailure: () => void;
}

/** Commands in flight at once: a cancel of 10,000 running devices does not open 10,000 waits. */
const CONCURRENCY = 100;
const CANCEL_TIMEOUT_MS = 5000;
/** A cancel that got no answer is sent again after this long. */
const CANCEL_RESEND_MS = 10_000;
const PROBE_MIN_MS = 1000;

export class DeviceEffects {
  readonly #deps: DeviceEffectsDeps;
  readonly #cancelSentMs = new Map<string, number>();
  /** Attempts whose device refused the cancel (too late): not asked again. */
  readonly #refused = new Set<string>();
  readonly #lastProbeMs = new Map<string, number>();
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #again = false;
  #stopped = false;

  constructor(deps: DeviceEffectsDeps) {
    this.#deps = deps;
    deps.feed.on('deployment', (event) => {
      if (event.status === 'cancelled') this.kick();
    });
    deps.feed.onResync(() => this.kick());
  }

  start(): void {
    this.#timer = setInterval(() => this.kick(), Math.min(PROBE_MIN_MS, this.#deps.config.dispatchIntervalMs));
    this.#timer.unref();
  }

  /** Stops before the tunnels close on shutdown: the server's own goodbye is no device failing. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    await this.#running;
  }

  kick(): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = (async () => {
      try {
        do {
          this.#again = false;
          await Promise.all([this.cancelRunning(), this.probeBaking()]);
        } while (this.#again && !this.#stopped);
      } finally {
        this.#running = undefined;
      }
    })();
  }

  /** Sends `ota_cancel` to each running attempt of a cancelled deployment on a device connected here. */
  async cancelRunning(): Promise<void> {
    const { db, tunnel, nodeId, log } = this.#deps;
    try {
      const running = await repo.listCancellableOnNode(db, nodeId);
      const nowMs = Date.now();
      const live = new Set(running.map((update) => update.id));
      for (const id of this.#cancelSentMs.keys()) if (!live.has(id)) this.#cancelSentMs.delete(id);
      for (const id of this.#refused) if (!live.has(id)) this.#refused.delete(id);
      const due = running.filter(
        (update) =>
          !this.#refused.has(update.id) && (this.#cancelSentMs.get(update.id) ?? 0) + CANCEL_RESEND_MS <= nowMs,
      );
      let cancelled = 0;
      for (let start = 0; start < due.length && !this.#stopped; start += CONCURRENCY) {
        await Promise.all(
          due.slice(start, start + CONCURRENCY).map(async (update) => {
            this.#cancelSentMs.set(update.id, Date.now());
            const device = { organizationId: update.organization_id, deviceId: update.device_id };
            try {
              await tunnel.command(device, CloudAction.otaCancel, { update_id: update.id }, CANCEL_TIMEOUT_MS);
              cancelled += 1;
            } catch (error) {
              if (error instanceof DeviceCommandError) this.#refused.add(update.id);
            }
          }),
        );
      }
      if (due.length > 0) log.info({ sent: due.length, cancelled }, 'ota_cancel sent to running updates');
    } catch (error) {
      log.warn({ err: error }, 'cancelling running updates on devices failed');
    }
  }

  /** Health-checks the baking devices connected here whose probe is due. */
  async probeBaking(): Promise<void> {
    const { db, tunnel, config, nodeId, log } = this.#deps;
    try {
      const nowMs = Date.now();
      const baking = await repo.listBakingOnNode(db, nodeId);
      const current = new Set(baking.map((device) => `${device.deployment_id}/${device.device_id}`));
      for (const key of this.#lastProbeMs.keys()) if (!current.has(key)) this.#lastProbeMs.delete(key);
      const due = baking.filter((device) => {
        if (!tunnel.isConnected(device.organization_id, device.device_id)) return false;
        const key = `${device.deployment_id}/${device.device_id}`;
        const everyMs = Math.max(PROBE_MIN_MS, (device.bake_minutes * 60_000) / 10);
        if ((this.#lastProbeMs.get(key) ?? 0) + everyMs > nowMs) return false;
        this.#lastProbeMs.set(key, nowMs);
        return true;
      });
      for (let start = 0; start < due.length && !this.#stopped; start += CONCURRENCY) {
        await Promise.all(
          due.slice(start, start + CONCURRENCY).map(async (device) => {
            try {
              await tunnel.healthCheck(
                { organizationId: device.organization_id, deviceId: device.device_id },
                config.healthCheckTimeoutMs,
              );
            } catch (error) {
              // Offline or silent: the record decides (offline past the grace). Unhealthy: the bake failed.
              if (!(error instanceof DeviceUnhealthyError) || this.#stopped) return;
              const deployments = await repo.failBakeUnhealthy(db, device.organization_id, device.device_id);
              if (deployments.length === 0) return;
              log.warn({ device_id: device.device_id, deployments }, 'device unhealthy during its bake');
              this.#deps.onBakeFailure();
            }
          }),
        );
      }
    } catch (error) {
      log.warn({ err: error }, 'probing baking devices failed');
    }
  }
}
