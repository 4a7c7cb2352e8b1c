/**
 * Bake health, in the process that holds the devices' tunnels: a device that committed a
 * deployment's version fails its bake when, within bake_minutes, it goes offline (feed
 * `device` online:false), comes back reporting another version (`device_info`: the boot
 * loader reverted it), or answers `health_check` unhealthy (probed every max(1 s, bake/10)).
 * The failure is recorded on its deployment_devices row; the gate reads it (status.ts).
 * Not detected: a device that went offline while no server process was running.
 */
import type { Logger } from 'pino';
import type { EventFeed } from '../events/feed.ts';
import type { Config } from '../infra/config.ts';
import type { Db } from '../infra/db.ts';
import { DeviceUnhealthyError, type TunnelHub } from '../tunnel/hub.ts';
import * as repo from './repo.ts';

export interface BakeWatchDeps {
  config: Config;
  db: Db;
  feed: EventFeed;
  tunnel: TunnelHub;
  log: Logger;
  /** A bake failed: the gate has something new to judge. */
  onFailure: () => void;
}

const PROBE_TICK_MS = 1000;

export class BakeWatch {
  readonly #deps: BakeWatchDeps;
  readonly #lastProbeMs = new Map<string, number>();
  #timer: NodeJS.Timeout | undefined;
  #probing = false;
  #stopped = false;

  constructor(deps: BakeWatchDeps) {
    this.#deps = deps;
    deps.feed.on('device', (event) => {
      if (!event.online) this.#fail(event.organization_id, event.device_id, 'offline');
    });
    deps.tunnel.onDeviceInfo((device, info) => {
      this.#fail(device.organizationId, device.deviceId, 'reverted', info.current_version);
    });
  }

  start(): void {
    this.#timer = setInterval(() => void this.probe(), PROBE_TICK_MS);
    this.#timer.unref();
  }

  /** Stops before the tunnels close on shutdown: the server's own goodbye is no device failing. */
  stop(): void {
    this.#stopped = true;
    clearInterval(this.#timer);
  }

  /** Health-checks the baking devices connected here whose probe is due. */
  async probe(): Promise<void> {
    if (this.#probing || this.#stopped) return;
    this.#probing = true;
    const { db, tunnel, config, log } = this.#deps;
    try {
      const nowMs = Date.now();
      const baking = await repo.listBakingDevices(db);
      // Forget devices whose bake is over.
      const current = new Set(baking.map((device) => `${device.deployment_id}/${device.device_id}`));
      for (const key of this.#lastProbeMs.keys()) if (!current.has(key)) this.#lastProbeMs.delete(key);
      const due = baking.filter((device) => {
        if (!tunnel.isConnected(device.organization_id, device.device_id)) return false;
        const key = `${device.deployment_id}/${device.device_id}`;
        const everyMs = Math.max(PROBE_TICK_MS, (device.bake_minutes * 60_000) / 10);
        if ((this.#lastProbeMs.get(key) ?? 0) + everyMs > nowMs) return false;
        this.#lastProbeMs.set(key, nowMs);
        return true;
      });
      await Promise.all(
        due.map(async (device) => {
          try {
            await tunnel.healthCheck(
              { organizationId: device.organization_id, deviceId: device.device_id },
              config.healthCheckTimeoutMs,
            );
          } catch (error) {
            // Offline or silent: the offline event decides. Unhealthy: the bake failed.
            if (error instanceof DeviceUnhealthyError)
              this.#fail(device.organization_id, device.device_id, 'unhealthy');
          }
        }),
      );
    } catch (error) {
      log.warn({ err: error }, 'probing baking devices failed');
    } finally {
      this.#probing = false;
    }
  }

  #fail(organizationId: string, deviceId: string, code: string, reportedVersion: string | null = null): void {
    if (this.#stopped) return;
    repo
      .markBakeFailed(this.#deps.db, organizationId, deviceId, code, reportedVersion)
      .then((deployments) => {
        if (deployments.length === 0) return;
        this.#deps.log.warn({ device_id: deviceId, deployments, code }, 'device failed its bake');
        this.#deps.onFailure();
      })
      .catch((error: Error) =>
        this.#deps.log.warn({ err: error, device_id: deviceId }, 'recording a bake failure failed'),
      );
  }
}
