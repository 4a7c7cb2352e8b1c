/**
 * A cancelled deployment stops its running updates on the devices where that is still safe. The
 * cancel itself (deployments/service.ts) cancels the queued updates, which no device has taken;
 * the devices already working get `ota_cancel` from the process that holds their tunnel, which
 * hears of the cancel through the feed's `deployment` event, whichever process took it. A device
 * that has not started installing stops and reports `cancelled` (the engine records the update
 * as cancelled); one past that point refuses with `too_late` and finishes its update, which then
 * ends as it ends.
 */
import type { Logger } from 'pino';
import { CloudAction } from '../../protocol/tunnel.ts';
import type { EventFeed } from '../events/feed.ts';
import type { Db } from '../infra/db.ts';
import { DeviceCommandError, type TunnelHub } from '../tunnel/hub.ts';
import { TAKEN_STATUSES } from '../updates/status.ts';
import * as repo from './repo.ts';

export interface DeviceCancelsDeps {
  db: Db;
  feed: EventFeed;
  tunnel: TunnelHub;
  nodeId: string;
  log: Logger;
}

/** Commands in flight at once: a cancel of 10,000 running devices does not open 10,000 waits. */
const CONCURRENCY = 100;
const COMMAND_TIMEOUT_MS = 5000;

export interface CancelOutcome {
  cancelled: number;
  tooLate: number;
  unreachable: number;
}

export class DeviceCancels {
  readonly #deps: DeviceCancelsDeps;

  constructor(deps: DeviceCancelsDeps) {
    this.#deps = deps;
    deps.feed.on('deployment', (event) => {
      if (event.status === 'cancelled' && event.previous_status !== 'cancelled') {
        void this.cancelRunning(event.deployment_id);
      }
    });
  }

  /** Sends `ota_cancel` for each running update of the deployment on a device connected here. */
  async cancelRunning(deploymentId: string): Promise<CancelOutcome> {
    const { db, tunnel, nodeId, log } = this.#deps;
    const outcome: CancelOutcome = { cancelled: 0, tooLate: 0, unreachable: 0 };
    try {
      const running = await repo.listRunningUpdatesOnNode(db, deploymentId, nodeId, TAKEN_STATUSES);
      for (let start = 0; start < running.length; start += CONCURRENCY) {
        await Promise.all(
          running.slice(start, start + CONCURRENCY).map(async (update) => {
            const device = { organizationId: update.organization_id, deviceId: update.device_id };
            try {
              await tunnel.command(device, CloudAction.otaCancel, { update_id: update.id }, COMMAND_TIMEOUT_MS);
              outcome.cancelled += 1;
            } catch (error) {
              if (error instanceof DeviceCommandError) outcome.tooLate += 1;
              else outcome.unreachable += 1;
            }
          }),
        );
      }
      if (running.length > 0)
        log.info({ deployment_id: deploymentId, ...outcome }, 'running updates cancelled on devices');
    } catch (error) {
      log.warn({ err: error, deployment_id: deploymentId }, 'cancelling running updates on devices failed');
    }
    return outcome;
  }
}
