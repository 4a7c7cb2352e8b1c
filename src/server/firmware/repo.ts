import type { ArtifactKind } from '../../protocol/artifact.ts';
import type { Queryable } from '../infra/db.ts';
import { OPEN_STATES } from '../model/deployment.ts';
import { ACTIVE_STATUSES } from '../model/update-status.ts';

export interface FirmwareRow {
  version: string;
  sha256: string;
  size: number;
  storage_key: string;
  artifact_type: ArtifactKind;
  release_notes: string | null;
  compatible_models: string[];
  created_at: Date;
}

const COLUMNS = 'version, sha256, size, storage_key, artifact_type, release_notes, compatible_models, created_at';

/**
 * One firmware version. `lock`: `share` while creating what will need it (a deployment: a delete
 * waits for it to commit, then sees it), `update` while deciding to delete it.
 */
export async function findFirmware(
  db: Queryable,
  organizationId: string,
  version: string,
  lock: 'share' | 'update' | null = null,
) {
  const locking = lock === 'share' ? 'FOR KEY SHARE' : lock === 'update' ? 'FOR UPDATE' : '';
  const [row] = await db.query<FirmwareRow>(
    `SELECT ${COLUMNS} FROM firmware WHERE organization_id = $1 AND version = $2 ${locking}`,
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
    `INSERT INTO firmware (organization_id, version, sha256, size, storage_key, release_notes, compatible_models,
       artifact_type)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
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
      firmware.artifact_type,
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
 * Why `version` must stay in the store, or undefined when it may go: an open deployment
 * (scheduled, running, paused) installs it, or a rolled-back one still has to take devices back
 * to it; an active update installs it; devices run it or ran it last (their known good version,
 * what a rollback or a forced re-install needs). Read after the row is locked (`findFirmware(…,
 * 'update')`), so a deployment created meanwhile is seen.
 */
export async function firmwareInUseReason(db: Queryable, organizationId: string, version: string) {
  const [row] = await db.query<{
    deployment: string | null;
    rollback: string | null;
    devices: number;
    updates: number;
  }>(
    `SELECT
       (SELECT id || ' (' || state || ')' FROM deployments
         WHERE organization_id = $1 AND version = $2 AND state = ANY($4::text[]) ORDER BY created_at LIMIT 1)
         AS deployment,
       (SELECT p.id FROM deployment_devices m JOIN deployments p ON p.id = m.deployment_id
         WHERE m.organization_id = $1 AND m.from_version = $2 AND p.state = 'rolled_back' AND NOT p.settled
           AND m.committed_at IS NOT NULL AND m.rollback_status IS NULL LIMIT 1) AS rollback,
       (SELECT count(*)::int FROM devices
         WHERE organization_id = $1 AND (current_version = $2 OR previous_version = $2)) AS devices,
       (SELECT count(*)::int FROM ota_updates
         WHERE organization_id = $1 AND target_version = $2
           AND status = ANY($3::text[])) AS updates`,
    [organizationId, version, [...ACTIVE_STATUSES], [...OPEN_STATES]],
  );
  if (row?.deployment) return `deployment ${row.deployment} installs it`;
  if (row?.rollback) return `deployment ${row.rollback} is rolling devices back to it`;
  if (row && row.updates > 0) return `${row.updates} active update(s) install it`;
  if (row && row.devices > 0) return `${row.devices} device(s) run it or may need it to roll back`;
  return undefined;
}
