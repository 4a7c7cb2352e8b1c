import type { Queryable } from '../infra/db.ts';
import { ACTIVE_STATUSES, statusesLeadingTo, type UpdateStatus } from './status.ts';

export interface UpdateRow {
  id: string;
  organization_id: string;
  device_id: string;
  deployment_id: string | null;
  kind: 'update' | 'rollback';
  target_version: string;
  from_version: string;
  force: boolean;
  status: UpdateStatus;
  phase: string | null;
  progress: number;
  error_code: string | null;
  error_message: string | null;
  attempts: number;
  dispatched_at: Date | null;
  last_report_at: Date | null;
  deadline_at: Date | null;
  finished_at: Date | null;
  created_at: Date;
  updated_at: Date;
}

const COLUMNS = `id, organization_id, device_id, deployment_id, kind, target_version, from_version, force, status,
  phase, progress, error_code, error_message, attempts, dispatched_at, last_report_at, deadline_at, finished_at,
  created_at, updated_at`;
const ACTIVE = [...ACTIVE_STATUSES];

export interface NewUpdate {
  id: string;
  organizationId: string;
  deviceId: string;
  deploymentId: string | null;
  kind: 'update' | 'rollback';
  targetVersion: string;
  fromVersion: string;
  force: boolean;
}

/** Undefined when the device already has an active update (the partial unique index). */
export async function insertUpdate(db: Queryable, update: NewUpdate): Promise<UpdateRow | undefined> {
  const [row] = await db.query<UpdateRow>(
    `INSERT INTO ota_updates (id, organization_id, device_id, deployment_id, kind, target_version, from_version, force,
       status)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued')
     ON CONFLICT (organization_id, device_id) WHERE status IN ('queued', 'dispatched', 'in_progress') DO NOTHING
     RETURNING ${COLUMNS}`,
    [
      update.id,
      update.organizationId,
      update.deviceId,
      update.deploymentId,
      update.kind,
      update.targetVersion,
      update.fromVersion,
      update.force,
    ],
  );
  return row;
}

export async function findUpdate(db: Queryable, organizationId: string, id: string) {
  const [row] = await db.query<UpdateRow>(`SELECT ${COLUMNS} FROM ota_updates WHERE organization_id = $1 AND id = $2`, [
    organizationId,
    id,
  ]);
  return row;
}

export async function findActiveUpdate(db: Queryable, organizationId: string, deviceId: string) {
  const [row] = await db.query<UpdateRow>(
    `SELECT ${COLUMNS} FROM ota_updates
     WHERE organization_id = $1 AND device_id = $2 AND status = ANY($3::text[])`,
    [organizationId, deviceId, ACTIVE],
  );
  return row;
}

export async function latestUpdate(db: Queryable, organizationId: string, deviceId: string) {
  const [row] = await db.query<UpdateRow>(
    `SELECT ${COLUMNS} FROM ota_updates WHERE organization_id = $1 AND device_id = $2
     ORDER BY created_at DESC, id DESC LIMIT 1`,
    [organizationId, deviceId],
  );
  return row;
}

export function listDeviceUpdates(db: Queryable, organizationId: string, deviceId: string, limit: number) {
  return db.query<UpdateRow>(
    `SELECT ${COLUMNS} FROM ota_updates WHERE organization_id = $1 AND device_id = $2
     ORDER BY created_at DESC, id DESC LIMIT $3`,
    [organizationId, deviceId, limit],
  );
}

export interface TransitionFields {
  phase?: string | null;
  progress?: number;
  errorCode?: string | null;
  errorMessage?: string | null;
  /** Push the report deadline to now + this many seconds. */
  deadlineInSeconds?: number;
}

export type Transitioned = UpdateRow & { previous_status: UpdateStatus };

/**
 * The one way an update's status changes: a conditional UPDATE that only matches when the
 * row is in a status from which `to` is allowed, returning the row and the status it left.
 * A duplicate, late or out-of-order report matches nothing and changes nothing.
 * Progress only moves forward within a status.
 */
export async function transitionUpdate(
  db: Queryable,
  where: { organizationId: string; id: string; deviceId?: string },
  to: UpdateStatus,
  fields: TransitionFields = {},
): Promise<Transitioned | undefined> {
  const from = statusesLeadingTo(to);
  const [row] = await db.query<Transitioned>(
    `UPDATE ota_updates AS u SET
       status = $4,
       phase = CASE WHEN $5::boolean THEN $6 ELSE u.phase END,
       progress = CASE
         WHEN $4 = 'completed' THEN 100
         WHEN $7::int IS NULL THEN u.progress
         WHEN u.status = $4 THEN GREATEST(u.progress, $7::int)
         ELSE $7::int END,
       error_code = CASE WHEN $8::boolean THEN $9 ELSE u.error_code END,
       error_message = CASE WHEN $8::boolean THEN $10 ELSE u.error_message END,
       deadline_at = CASE WHEN $11::int IS NULL THEN u.deadline_at ELSE now() + make_interval(secs => $11::int) END,
       dispatched_at = CASE WHEN $4 = 'dispatched' THEN now() ELSE u.dispatched_at END,
       attempts = CASE WHEN $4 = 'dispatched' THEN u.attempts + 1 ELSE u.attempts END,
       last_report_at = CASE WHEN $4 IN ('in_progress', 'completed', 'failed') THEN now() ELSE u.last_report_at END,
       finished_at = CASE WHEN $4 IN ('completed', 'failed', 'timed_out', 'cancelled', 'skipped') THEN now() ELSE NULL END,
       updated_at = now()
     FROM (SELECT id, status FROM ota_updates WHERE id = $2 FOR UPDATE) AS old
     WHERE u.id = old.id AND u.organization_id = $1 AND ($3::text IS NULL OR u.device_id = $3)
       AND u.status = ANY($12::text[])
     RETURNING ${COLUMNS.split(',')
       .map((column) => `u.${column.trim()}`)
       .join(', ')}, old.status AS previous_status`,
    [
      where.organizationId,
      where.id,
      where.deviceId ?? null,
      to,
      fields.phase !== undefined,
      fields.phase ?? null,
      fields.progress ?? null,
      fields.errorCode !== undefined,
      fields.errorCode ?? null,
      fields.errorMessage ?? null,
      fields.deadlineInSeconds ?? null,
      from,
    ],
  );
  return row;
}

/**
 * Claims up to `limit` queued updates of devices whose tunnel this replica holds, moving
 * them to dispatched in the same statement. SKIP LOCKED: replicas never claim the same row.
 */
export function claimQueuedUpdates(
  db: Queryable,
  nodeId: string,
  limit: number,
  deadlineInSeconds: number,
  device?: { organizationId: string; deviceId: string },
): Promise<UpdateRow[]> {
  return db.query<UpdateRow>(
    `UPDATE ota_updates AS u SET status = 'dispatched', dispatched_at = now(), attempts = u.attempts + 1,
       deadline_at = now() + make_interval(secs => $3::int), updated_at = now()
     FROM (
       SELECT q.id FROM ota_updates q
       JOIN devices d ON d.organization_id = q.organization_id AND d.device_id = q.device_id
       WHERE q.status = 'queued' AND d.connected_node = $1
         AND ($4::text IS NULL OR (q.organization_id = $4 AND q.device_id = $5))
       ORDER BY q.created_at
       LIMIT $2
       FOR UPDATE OF q SKIP LOCKED
     ) AS claimed
     WHERE u.id = claimed.id
     RETURNING ${COLUMNS.split(',')
       .map((column) => `u.${column.trim()}`)
       .join(', ')}`,
    [nodeId, limit, deadlineInSeconds, device?.organizationId ?? null, device?.deviceId ?? null],
  );
}

/** Updates whose device has not reported in time. */
export function expireOverdueUpdates(db: Queryable): Promise<Transitioned[]> {
  return db.query<Transitioned>(
    `UPDATE ota_updates SET status = 'timed_out', error_code = 'timed_out',
       error_message = 'the device did not report within the update timeout', finished_at = now(), updated_at = now()
     WHERE status IN ('dispatched', 'in_progress') AND deadline_at < now()
     RETURNING ${COLUMNS}, 'in_progress' AS previous_status`,
  );
}

/**
 * Records the version a device reports, and its rollback target: a version, none (null), or
 * 'unchanged' (a failed or late report does not move it).
 */
export async function recordDeviceVersion(
  db: Queryable,
  organizationId: string,
  deviceId: string,
  currentVersion: string,
  rollbackTarget: string | null | 'unchanged',
): Promise<void> {
  await db.query(
    `UPDATE devices SET current_version = $3,
       previous_version = CASE WHEN $4::boolean THEN previous_version ELSE $5 END,
       updated_at = now()
     WHERE organization_id = $1 AND device_id = $2`,
    [
      organizationId,
      deviceId,
      currentVersion,
      rollbackTarget === 'unchanged',
      rollbackTarget === 'unchanged' ? null : rollbackTarget,
    ],
  );
}

/** Notes that the device has run and committed these versions, now (see migration 004). */
export async function recordRunVersions(
  db: Queryable,
  organizationId: string,
  deviceId: string,
  versions: readonly string[],
): Promise<void> {
  if (versions.length === 0) return;
  await db.query(
    `INSERT INTO device_versions (organization_id, device_id, version)
     SELECT d.organization_id, d.device_id, v.version
     FROM devices d, unnest($3::text[]) AS v(version)
     WHERE d.organization_id = $1 AND d.device_id = $2
     ON CONFLICT (organization_id, device_id, version) DO UPDATE SET last_run_at = now()`,
    [organizationId, deviceId, [...new Set(versions)]],
  );
}

/** Every version the device has run and committed, with when it last ran it. */
export function listRunVersions(db: Queryable, organizationId: string, deviceId: string) {
  return db.query<{ version: string; last_run_at: Date }>(
    `SELECT version, last_run_at FROM device_versions WHERE organization_id = $1 AND device_id = $2
     ORDER BY last_run_at DESC`,
    [organizationId, deviceId],
  );
}
