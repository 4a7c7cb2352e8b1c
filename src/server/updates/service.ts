/** Single-device updates and rollbacks, and the device's OTA record. */
import { compareVersions } from '../../protocol/version.ts';
import * as devicesRepo from '../devices/repo.ts';
import { assertSemver, getDevice } from '../devices/service.ts';
import * as firmwareRepo from '../firmware/repo.ts';
import { getFirmware } from '../firmware/service.ts';
import { enterDoor, findHolder } from '../holds/repo.ts';
import { BadRequestError, ConflictError, ForbiddenError, UnprocessableError } from '../infra/errors.ts';
import { parseTimeOrDuration } from '../infra/schemas.ts';
import { newId } from '../infra/secrets.ts';
import { otaStatusOf } from '../model/update-status.ts';
import type { Services } from '../services.ts';
import * as repo from './repo.ts';
import { chooseRollbackTarget, rollbackVersions } from './rollback.ts';
import type { NewUpdate } from './transitions.ts';

export type UpdateRequestResult =
  | { status: 'skipped'; reason: 'already_on_version'; device_id: string; current_version: string }
  | { status: 'queued'; update: repo.UpdateRow };

/**
 * Online and reachable means: a tunnel is open on some replica (else device_offline) and the
 * device answers a health check through it in time (else device_unresponsive) saying it is
 * healthy (else device_unhealthy).
 */
async function assertReachable(services: Services, organizationId: string, deviceId: string): Promise<void> {
  await services.relay.healthCheck({ organizationId, deviceId }, services.config.healthCheckTimeoutMs);
}

/**
 * A device is in at most one deployment or update at a time, asked the same way at every door
 * (holds/repo.ts): a deployment holds it (`device_busy`, naming the deployment), or an update of
 * its own is active (`update_in_progress`).
 */
function busy(deviceId: string, holder: string): ConflictError {
  if (holder.startsWith('dep_')) {
    return new ConflictError(
      'device_busy',
      `device ${deviceId} is held by deployment ${holder}: it updates the device, or may still; wait for it to end, ` +
        'or cancel it, before updating the device on its own',
      { deployment_id: holder },
    );
  }
  return new ConflictError('update_in_progress', `device ${deviceId} is already being updated (${holder})`, {
    update_id: holder,
  });
}

async function refuseIfHeld(services: Services, organizationId: string, deviceId: string): Promise<void> {
  const holder = await findHolder(services.db, organizationId, deviceId);
  if (holder) throw busy(deviceId, holder);
}

/** What a single update or rollback says of the device's update lock. */
export interface LockOverride {
  /** Install despite the lock, now (admin role). */
  force_lock?: boolean | undefined;
  /** Wait for the release, but no longer than this: a date-time or a duration from now (2h). */
  force_after?: string | undefined;
}

/**
 * When the update overrides the device's lock (null: it waits for the release), or a refusal: a
 * device the server knows locked gets an update only with force_lock (admin) or force_after;
 * without them, 409 device_locked naming the lock's reason and end.
 */
export function lockOverrideAt(
  device: Pick<devicesRepo.DeviceRow, 'device_id' | 'lock'>,
  request: LockOverride,
  role: string,
): Date | null {
  if (request.force_lock && request.force_after !== undefined) {
    throw new BadRequestError('invalid_force_lock', 'force_lock and force_after exclude each other');
  }
  if (request.force_lock && role !== 'admin') {
    throw new ForbiddenError('insufficient_role', 'force_lock overrides a device lock and needs the admin role');
  }
  const now = new Date();
  if (request.force_lock) return now;
  const after = request.force_after === undefined ? null : parseTimeOrDuration(request.force_after, now);
  if (after === undefined) {
    throw new BadRequestError(
      'invalid_force_after',
      `force_after must be a date-time or a duration such as 30m, 2h or 1d, not ${JSON.stringify(request.force_after)}`,
    );
  }
  const { lock } = device;
  if (lock && after === null) {
    throw new ConflictError(
      'device_locked',
      `device ${device.device_id} is locked: ${lock.reason}` +
        `${lock.until ? ` (until ${lock.until.toISOString()})` : ' (until it is released)'}; ` +
        'force_after waits for it no longer than that, force_lock (admin) installs now',
      { reason: lock.reason, until: lock.until?.toISOString() ?? null, since: lock.since.toISOString() },
    );
  }
  return after;
}

/**
 * Queues the update through the organization's doors (holds/repo.ts), asking again who holds the
 * device (a deployment planned meanwhile, another request). The engine of whichever process holds
 * the device's tunnel hears of it through the event feed.
 */
async function queue(services: Services, update: NewUpdate): Promise<repo.UpdateRow> {
  return services.db.transaction(async (tx) => {
    await enterDoor(tx, update.organizationId);
    const holder = await findHolder(tx, update.organizationId, update.deviceId);
    if (holder) throw busy(update.deviceId, holder);
    const [row] = await services.transitions.create([update], tx);
    if (!row) throw busy(update.deviceId, 'another update');
    return row;
  });
}

export async function requestUpdate(
  services: Services,
  organizationId: string,
  deviceId: string,
  request: { version: string; force?: boolean | undefined } & LockOverride,
  role = 'admin',
): Promise<UpdateRequestResult> {
  const device = await getDevice(services.db, organizationId, deviceId);
  const firmware = await getFirmware(services, organizationId, request.version);
  if (firmware.compatible_models.length > 0 && !firmware.compatible_models.includes(device.model ?? '')) {
    throw new UnprocessableError(
      'incompatible_firmware',
      `firmware ${firmware.version} is for ${firmware.compatible_models.join(', ')}, not ${device.model ?? 'an unknown model'}`,
    );
  }
  if (device.current_version === request.version && !request.force) {
    return { status: 'skipped', reason: 'already_on_version', device_id: deviceId, current_version: request.version };
  }
  if (compareVersions(request.version, device.current_version) < 0) {
    throw new ConflictError(
      'downgrade_refused',
      `${request.version} is older than ${device.current_version}; devices refuse silent downgrades, use rollback`,
    );
  }
  await refuseIfHeld(services, organizationId, deviceId);
  const overrideLockAt = lockOverrideAt(device, request, role);
  await assertReachable(services, organizationId, deviceId);
  const update = await queue(services, {
    id: newId('upd'),
    organizationId,
    deviceId,
    deploymentId: null,
    kind: 'update',
    targetVersion: request.version,
    fromVersion: device.current_version,
    force: Boolean(request.force),
    overrideLockAt,
  });
  return { status: 'queued', update };
}

/**
 * An explicit, signed update back to a version the device has run and committed before: the
 * one asked for, or else its last known good version.
 */
export async function requestRollback(
  services: Services,
  organizationId: string,
  deviceId: string,
  request: { version?: string | undefined } & LockOverride = {},
  role = 'admin',
) {
  if (request.version !== undefined) assertSemver(request.version);
  const device = await getDevice(services.db, organizationId, deviceId);
  const run = await devicesRepo.listRunVersions(services.db, organizationId, deviceId);
  const target = chooseRollbackTarget(device, run, request.version);
  if (!(await firmwareRepo.findFirmware(services.db, organizationId, target))) {
    throw new ConflictError('rollback_firmware_missing', `firmware ${target} is no longer in the store`);
  }
  await refuseIfHeld(services, organizationId, deviceId);
  const overrideLockAt = lockOverrideAt(device, request, role);
  await assertReachable(services, organizationId, deviceId);
  return queue(services, {
    id: newId('upd'),
    organizationId,
    deviceId,
    deploymentId: null,
    kind: 'rollback',
    targetVersion: target,
    fromVersion: device.current_version,
    force: true,
    overrideLockAt,
  });
}

/** The seed's OTA device record, with more detail beside its fields. */
export async function otaRecord(services: Services, organizationId: string, deviceId: string) {
  // The update first: a result commits the update and the device row together, so a record
  // that shows an update completed also shows the versions it left behind (read the other
  // way round, a result committing in between showed completed beside stale versions).
  const latest = await repo.latestUpdate(services.db, organizationId, deviceId);
  const device = await getDevice(services.db, organizationId, deviceId);
  return {
    device_id: device.device_id,
    current_version: device.current_version,
    target_version: latest?.target_version ?? null,
    ota_status: otaStatusOf(latest),
    progress: latest ? (latest.status === 'completed' ? 100 : latest.progress) : 0,
    last_update_at: latest?.updated_at ?? null,
    phase: latest?.phase ?? null,
    error: latest?.error_code ? { code: latest.error_code, message: latest.error_message ?? '' } : null,
    previous_version: device.previous_version,
    rollback_versions: rollbackVersions(
      await devicesRepo.listRunVersions(services.db, organizationId, deviceId),
      device.current_version,
    ),
    update_id: latest?.id ?? null,
    update_status: latest?.status ?? null,
    update_kind: latest?.kind ?? null,
    deployment_id: latest?.deployment_id ?? null,
    source: latest ? updateSource(latest) : null,
    offline_bundle_id: latest?.offline_bundle_id ?? null,
    held_by: await findHolder(services.db, organizationId, deviceId),
    slot: device.slot,
    online: device.online,
  };
}

/** Who made an update: the server ordered it, the device reported it, or it came from an offline bundle. */
function updateSource(row: repo.UpdateRow): 'server' | 'device' | 'offline' {
  if (row.kind !== 'observed') return 'server';
  return row.offline_bundle_id ? 'offline' : 'device';
}

export async function otaHistory(services: Services, organizationId: string, deviceId: string, limit: number) {
  await getDevice(services.db, organizationId, deviceId);
  return repo.listDeviceUpdates(services.db, organizationId, deviceId, limit);
}

/** How far back recent failures go when the caller does not say. */
export const RECENT_FAILURES_MS = 24 * 60 * 60_000;

/** The organization's recent failures grouped by error code, the largest groups first. */
export async function recentFailures(
  services: Services,
  organizationId: string,
  query: { since?: string | undefined; limit: number },
) {
  // The boundary checked the date (infra/schemas.ts DateTimeString: 400 invalid_date).
  const since = query.since === undefined ? new Date(Date.now() - RECENT_FAILURES_MS) : new Date(query.since);
  return {
    since: since.toISOString(),
    groups: await repo.listFailureGroups(services.db, organizationId, since, query.limit),
  };
}
