import type { Queryable } from '../infra/db.ts';
import { ACTIVE_STATUSES } from '../updates/status.ts';

export interface FirmwareRow {
  version: string;
  sha256: string;
  size: number;
  storage_key: string;
  release_notes: string | null;
  compatible_models: string[];
  created_at: Date;
}

const COLUMNS = 'version, sha256, size, storage_key, release_notes, compatible_models, created_at';

export async function findFirmware(db: Queryable, organizationId: string, version: string) {
  const [row] = await db.query<FirmwareRow>(
    `SELECT ${COLUMNS} FROM firmware WHERE organization_id = $1 AND version = $2`,
    [organizationId, version],
  );
  return row;
}

/** Returns undefined when the version exists already (a concurrent upload won). */
export async function insertFirmware(
  db: Queryable,
  organizationId: string,
  firmware: Omit<FirmwareRow, 'created_at'>,
): Promise<FirmwareRow | undefined> {
  const [row] = await db.query<FirmwareRow>(
    `INSERT INTO firmware (organization_id, version, sha256, size, storage_key, release_notes, compatible_models)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (organization_id, version) DO NOTHING
     RETURNING ${COLUMNS}`,
    [
      organizationId,
      firmware.version,
      firmware.sha256,
      firmware.size,
      firmware.storage_key,
      firmware.release_notes,
      firmware.compatible_models,
    ],
  );
  return row;
}

export function listFirmware(db: Queryable, organizationId: string): Promise<FirmwareRow[]> {
  return db.query<FirmwareRow>(
    `SELECT ${COLUMNS} FROM firmware WHERE organization_id = $1 ORDER BY created_at DESC, version`,
    [organizationId],
  );
}

export async function deleteFirmware(db: Queryable, organizationId: string, version: string) {
  const [row] = await db.query<FirmwareRow>(
    `DELETE FROM firmware WHERE organization_id = $1 AND version = $2 RETURNING ${COLUMNS}`,
    [organizationId, version],
  );
  return row;
}

/**
 * Why `version` must stay in the store, or undefined when it may go: devices run it or ran
 * it last (their known good version, what a rollback or a forced re-install needs), or an
 * active update is installing it.
 */
export async function firmwareInUseReason(db: Queryable, organizationId: string, version: string) {
  const [row] = await db.query<{ devices: number; updates: number }>(
    `SELECT
       (SELECT count(*)::int FROM devices
         WHERE organization_id = $1 AND (current_version = $2 OR previous_version = $2)) AS devices,
       (SELECT count(*)::int FROM ota_updates
         WHERE organization_id = $1 AND target_version = $2
           AND status = ANY($3::text[])) AS updates`,
    [organizationId, version, [...ACTIVE_STATUSES]],
  );
  if (row && row.updates > 0) return `${row.updates} active update(s) install it`;
  if (row && row.devices > 0) return `${row.devices} device(s) run it or may need it to roll back`;
  return undefined;
}
