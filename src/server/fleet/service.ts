/**
 * The fleet at a glance (the dashboard's overview), in one call: aggregates each domain's
 * repository computes in SQL, so the answer costs a few grouped scans, never a row per device.
 */

import * as deploymentsRepo from '../deployments/repo.ts';
import * as devicesRepo from '../devices/repo.ts';
import type { Db } from '../infra/db.ts';
import * as updatesRepo from '../updates/repo.ts';
import { FLEET_TOP_TAGS } from './schemas.ts';

export async function fleetOverview(db: Db, organizationId: string) {
  const versions = await devicesRepo.countDevicesByVersion(db, organizationId);
  // Every device runs exactly one version: the versions add up to the fleet.
  const total = versions.reduce((sum, version) => sum + version.devices, 0);
  const online = versions.reduce((sum, version) => sum + version.online, 0);
  return {
    devices: { total, online, offline: total - online },
    versions,
    models: await devicesRepo.countDevicesByModel(db, organizationId),
    tags: await devicesRepo.countDevicesByTag(db, organizationId, FLEET_TOP_TAGS),
    updates: { active: await updatesRepo.countActiveUpdates(db, organizationId) },
    deployments: { active: await deploymentsRepo.countOpenDeployments(db, organizationId) },
  };
}
