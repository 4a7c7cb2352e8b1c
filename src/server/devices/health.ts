/**
 * A device whose agent cannot work (its installer failed at start) still connects and says why
 * in its `device_info` (`health_error`). That reason is kept on the device record, where the
 * operator looks (GET /api/v1/devices/{id}, the device list), until a `device_info` without one
 * says the agent works again. Older agents never send one, and their record stays null.
 */
import type { Logger } from 'pino';
import type { DeviceInfoPayload } from '../../protocol/tunnel.ts';
import { Batcher } from '../infra/batcher.ts';
import type { Db } from '../infra/db.ts';
import * as repo from './repo.ts';

interface DeviceInfoSource {
  onDeviceInfo(listener: (device: { organizationId: string; deviceId: string }, info: DeviceInfoPayload) => void): void;
}

export class DeviceHealthRecorder {
  readonly #record: Batcher<{ organizationId: string; deviceId: string; healthError: string | null }, void>;

  constructor(deps: { db: Db; tunnel: DeviceInfoSource; log: Logger }) {
    // Every device reconnects at once after a server restart: one statement per burst.
    this.#record = new Batcher(
      async (reports) => {
        await repo.recordHealthErrors(deps.db, reports);
        return reports.map(() => undefined);
      },
      { maxSize: 1000, maxDelayMs: 5 },
    );
    deps.tunnel.onDeviceInfo((device, info) => {
      const healthError = info.health_error ?? null;
      if (healthError !== null) {
        deps.log.warn({ device_id: device.deviceId, health_error: healthError }, 'device agent cannot work');
      }
      this.#record
        .add({ organizationId: device.organizationId, deviceId: device.deviceId, healthError })
        .catch((error: Error) => deps.log.warn({ err: error }, 'could not record a device health error'));
    });
  }
}
