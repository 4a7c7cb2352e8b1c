import type { Queryable } from '../infra/db.ts';

export interface DeviceRow {
  device_id: string;
  name: string | null;
  model: string | null;
  tags: string[];
  current_version: string;
  /** The version it ran before its last successful update: its rollback target. */
  previous_version: string | null;
  online: boolean;
  last_seen_at: Date | null;
  agent_version: string | null;
  created_at: Date;
  updated_at: Date;
}

const COLUMNS = `device_id, name, model, tags, current_version, previous_version, online, last_seen_at, agent_version,
  created_at, updated_at`;

export interface NewDevice {
  organizationId: string;
  deviceId: string;
  name: string | null;
  model: string | null;
  tags: string[];
  currentVersion: string;
  keyHash: string;
}

/**
 * Returns undefined when the organization already has a device with that id. Its registration
 * (factory) version is the first version it is known to have run (device_versions, a rollback target).
 */
export async function insertDevice(db: Queryable, device: NewDevice): Promise<DeviceRow | undefined> {
  const [row] = await db.query<DeviceRow>(
    `WITH inserted AS (
       INSERT INTO devices (organization_id, device_id, name, model, tags, current_version, key_hash)
       VALUES ($1, $2, $3, $4, $5, $6, $7)
       ON CONFLICT (organization_id, device_id) DO NOTHING
       RETURNING *
     ), registered AS (
       INSERT INTO device_versions (organization_id, device_id, version)
       SELECT organization_id, device_id, current_version FROM inserted
     )
     SELECT ${COLUMNS} FROM inserted`,
    [
      device.organizationId,
      device.deviceId,
      device.name,
      device.model,
      device.tags,
      device.currentVersion,
      device.keyHash,
    ],
  );
  return row;
}

export async function findDevice(db: Queryable, organizationId: string, deviceId: string) {
  const [row] = await db.query<DeviceRow>(
    `SELECT ${COLUMNS} FROM devices WHERE organization_id = $1 AND device_id = $2`,
    [organizationId, deviceId],
  );
  return row;
}

export interface DeviceFilter {
  tags?: string[] | undefined;
  model?: string | undefined;
  version?: string | undefined;
  online?: boolean | undefined;
  /** Keyset pagination: devices whose id sorts after this one. */
  after?: string | undefined;
  limit: number;
}

export function listDevices(db: Queryable, organizationId: string, filter: DeviceFilter): Promise<DeviceRow[]> {
  return db.query<DeviceRow>(
    `SELECT ${COLUMNS} FROM devices
     WHERE organization_id = $1
       AND ($2::text[] IS NULL OR tags @> $2::text[])
       AND ($3::text IS NULL OR model = $3)
       AND ($4::text IS NULL OR current_version = $4)
       AND ($5::boolean IS NULL OR online = $5)
       AND ($6::text IS NULL OR device_id > $6)
     ORDER BY device_id
     LIMIT $7`,
    [
      organizationId,
      filter.tags?.length ? filter.tags : null,
      filter.model ?? null,
      filter.version ?? null,
      filter.online ?? null,
      filter.after ?? null,
      filter.limit,
    ],
  );
}

export interface DevicePatch {
  name?: string | null | undefined;
  model?: string | null | undefined;
  tags?: string[] | undefined;
}

export async function patchDevice(db: Queryable, organizationId: string, deviceId: string, patch: DevicePatch) {
  const [row] = await db.query<DeviceRow>(
    `UPDATE devices SET
       name = CASE WHEN $3 THEN $4 ELSE name END,
       model = CASE WHEN $5 THEN $6 ELSE model END,
       tags = COALESCE($7::text[], tags),
       updated_at = now()
     WHERE organization_id = $1 AND device_id = $2
     RETURNING ${COLUMNS}`,
    [
      organizationId,
      deviceId,
      patch.name !== undefined,
      patch.name ?? null,
      patch.model !== undefined,
      patch.model ?? null,
      patch.tags ?? null,
    ],
  );
  return row;
}

export async function deleteDevice(db: Queryable, organizationId: string, deviceId: string): Promise<boolean> {
  const rows = await db.query('DELETE FROM devices WHERE organization_id = $1 AND device_id = $2 RETURNING 1', [
    organizationId,
    deviceId,
  ]);
  return rows.length > 0;
}

/** The devices these tunnel keys belong to, with their organization (unknown keys are absent). */
export function findDevicesByKeyHashes(db: Queryable, keyHashes: string[]) {
  return db.query<{ organization_id: string; device_id: string; key_hash: string }>(
    'SELECT organization_id, device_id, key_hash FROM devices WHERE key_hash = ANY($1::text[])',
    [keyHashes],
  );
}
