/**
 * Device update locks, as the server learns them: the agent reports its lock when it changes
 * (`device_lock`, resent until acknowledged) and on every connect (`device_info.lock`). What it
 * last said is kept on the device (lock_reason, lock_until, lock_since): the dispatch leaves a
 * locked device's updates waiting, the device record and the deployments show why. A change wakes
 * whoever waits on it (`onChange`: the dispatch of this process, where the device's tunnel is;
 * the scheduler is woken by the statement itself).
 */
import type { Logger } from 'pino';
import {
  DeviceAction,
  type DeviceInfoPayload,
  type DeviceLockPayload,
  payloadProblem,
  validate,
} from '../../protocol/tunnel.ts';
import { Batcher } from '../infra/batcher.ts';
import type { Db } from '../infra/db.ts';
import { BadRequestError } from '../infra/errors.ts';
import * as repo from './repo.ts';

type DeviceRef = { organizationId: string; deviceId: string };

interface LockReportSource {
  onDeviceInfo(listener: (device: DeviceRef, info: DeviceInfoPayload) => void): void;
  onDeviceRequest(action: string, handler: (device: DeviceRef, payload: unknown) => Promise<unknown>): void;
}

/** An ISO date-time the device sent, or null when it sent none or nonsense. */
function dateOf(text: string | undefined): Date | null {
  if (text === undefined) return null;
  const at = new Date(text);
  return Number.isNaN(at.getTime()) ? null : at;
}

export function lockReportOf(device: DeviceRef, lock: DeviceLockPayload): repo.LockReport {
  return {
    ...device,
    locked: lock.locked,
    reason: lock.locked ? (lock.reason ?? 'locked') : null,
    until: lock.locked ? dateOf(lock.until) : null,
    since: lock.locked ? dateOf(lock.since) : null,
  };
}

export class DeviceLockRecorder {
  readonly #record: Batcher<repo.LockReport, void>;

  constructor(deps: { db: Db; tunnel: LockReportSource; log: Logger; onChange: (device: DeviceRef) => void }) {
    const { db, tunnel, log, onChange } = deps;
    // A fleet reconnecting at once reports thousands of locks (nearly all unlocked): one statement per burst.
    this.#record = new Batcher(
      async (reports) => {
        // A device's last report in the burst is its lock (one statement cannot apply two to one row).
        const latest = new Map(
          reports.map((report) => [repo.deviceKey(report.organizationId, report.deviceId), report]),
        );
        for (const changed of await repo.recordLocks(db, [...latest.values()])) {
          log.info(
            { device_id: changed.device_id, organization_id: changed.organization_id },
            changed.locked ? 'device update lock held' : 'device update lock released',
          );
          onChange({ organizationId: changed.organization_id, deviceId: changed.device_id });
        }
        return reports.map(() => undefined);
      },
      { maxSize: 1000, maxDelayMs: 5 },
    );
    tunnel.onDeviceInfo((device, info) => {
      // An agent without locks says nothing: its record is left as it is.
      if (!info.lock) return;
      this.#record
        .add(lockReportOf(device, info.lock))
        .catch((error: Error) => log.warn({ err: error }, 'could not record a device lock'));
    });
    tunnel.onDeviceRequest(DeviceAction.deviceLock, async (device, payload) => {
      if (!validate.deviceLock.Check(payload)) {
        throw new BadRequestError('invalid_payload', `device_lock: ${payloadProblem(validate.deviceLock, payload)}`);
      }
      await this.#record.add(lockReportOf(device, payload));
      return { ok: true };
    });
  }
}
