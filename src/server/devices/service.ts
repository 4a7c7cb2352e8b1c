import { isStrictSemver } from '../../protocol/version.ts';
import type { Db } from '../infra/db.ts';
import { BadRequestError, ConflictError, NotFoundError } from '../infra/errors.ts';
import { hashSecret, newId, newSecret } from '../infra/secrets.ts';
import { checkTimeZone } from '../windows/schemas.ts';
import * as repo from './repo.ts';

export function assertSemver(version: string, field = 'version'): void {
  if (!isStrictSemver(version)) {
    throw new BadRequestError('invalid_version', `${field} must be a strict semantic version such as 1.4.2`);
  }
}

export async function createDevice(
  db: Db,
  organizationId: string,
  input: {
    device_id?: string;
    name?: string;
    model?: string;
    tags?: string[];
    current_version: string;
    timezone?: string;
  },
) {
  assertSemver(input.current_version, 'current_version');
  checkTimeZone(input.timezone);
  const apiKey = newSecret('efd');
  const device = await repo.insertDevice(db, {
    organizationId,
    deviceId: input.device_id ?? newId('dev'),
    name: input.name ?? null,
    model: input.model ?? null,
    tags: input.tags ?? [],
    currentVersion: input.current_version,
    keyHash: hashSecret(apiKey),
    timezone: input.timezone ?? null,
  });
  if (!device) throw new ConflictError('device_exists', `a device with id ${input.device_id} already exists`);
  return { ...device, api_key: apiKey };
}

export async function getDevice(db: Db, organizationId: string, deviceId: string) {
  const device = await repo.findDevice(db, organizationId, deviceId);
  if (!device) throw new NotFoundError('device_not_found', `no device ${deviceId}`);
  return device;
}

export async function updateDevice(db: Db, organizationId: string, deviceId: string, patch: repo.DevicePatch) {
  checkTimeZone(patch.timezone);
  const device = await repo.patchDevice(db, organizationId, deviceId, patch);
  if (!device) throw new NotFoundError('device_not_found', `no device ${deviceId}`);
  return device;
}

export async function removeDevice(db: Db, organizationId: string, deviceId: string) {
  if (!(await repo.deleteDevice(db, organizationId, deviceId))) {
    throw new NotFoundError('device_not_found', `no device ${deviceId}`);
  }
}

export function listDevices(db: Db, organizationId: string, filter: repo.DeviceFilter, page: repo.DevicePage) {
  return repo.listDevices(db, organizationId, filter, page);
}

export function countDevices(db: Db, organizationId: string, filter: repo.DeviceFilter) {
  return repo.countDevices(db, organizationId, filter);
}
