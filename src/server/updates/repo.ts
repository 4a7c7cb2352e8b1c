import { EVENT_AT_SQL, MAX_EVENT_TEXT, notifySql } from '../events/feed.ts';
import type { Queryable } from '../infra/db.ts';
import { ACTIVE_STATUSES, REPORTED_STATUSES, TERMINAL_STATUSES, type UpdateStatus } from './status.ts';

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
  /** The report deadline for this row (a deployment's device_timeout_minutes); null: the server's. */
  timeout_seconds: number | null;
  dispatched_at: Date | null;
  last_report_at: Date | null;
  deadline_at: Date | null;
  finished_at: Date | null;
  created_at: Date;
  updated_at: Date;
}

const COLUMNS = `id, organization_id, device_id, deployment_id, kind, target_version, from_version, force, status,
  phase, progress, error_code, error_message, attempts, timeout_seconds, dispatched_at, last_report_at, deadline_at, finished_at,
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
  /** The report deadline of this row; absent: the server's update timeout. */
  timeoutSeconds?: number | null;
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

/**
 * The partial unique index of migration 001 (one active update per device). Its predicate is
 * literal SQL, which `ON CONFLICT` must repeat to infer the index; a test checks that it lists
 * ACTIVE_STATUSES and that the database's index says the same.
 */
export const ONE_ACTIVE_PER_DEVICE = `(organization_id, device_id) WHERE status IN (${ACTIVE.map((status) => `'${status}'`).join(', ')})`;

/** The `ota` event of a changed row `c` (with `c.previous_status`), built in SQL: see events/feed.ts. */
const OTA_EVENT = notifySql(
  'ota',
  `json_build_object(
     'organization_id', c.organization_id, 'device_id', c.device_id, 'update_id', c.id,
     'deployment_id', c.deployment_id, 'status', c.status, 'previous_status', c.previous_status, 'phase', c.phase,
     'progress', c.progress, 'target_version', c.target_version,
     'error', CASE WHEN c.error_code IS NULL THEN NULL
       ELSE json_build_object('code', c.error_code, 'message', left(coalesce(c.error_message, ''), ${MAX_EVENT_TEXT})) END,
     'at', ${EVENT_AT_SQL})`,
);

/**
 * Inserts updates as `queued`, skipping devices that already have an active one, and announces
 * each (previous status null) in the same statement. Only updates/transitions.ts calls this.
 */
export function insertQueued(db: Queryable, updates: readonly NewUpdate[]): Promise<Transitioned[]> {
  return db.query<Transitioned>(
    `WITH c AS (
       INSERT INTO ota_updates (id, organization_id, device_id, deployment_id, kind, target_version, from_version,
         force, timeout_seconds, status)
       SELECT n.id, n.organization_id, n.device_id, n.deployment_id, n.kind, n.target_version, n.from_version, n.force,
         n.timeout_seconds, 'queued'
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::boolean[],
         $9::int[])
         AS n(id, organization_id, device_id, deployment_id, kind, target_version, from_version, force, timeout_seconds)
       ON CONFLICT ${ONE_ACTIVE_PER_DEVICE} DO NOTHING
       RETURNING ${COLUMNS}, NULL::text AS previous_status
     )
     SELECT c.* FROM c, LATERAL (SELECT ${OTA_EVENT}) AS announced`,
    [
      updates.map((u) => u.id),
      updates.map((u) => u.organizationId),
      updates.map((u) => u.deviceId),
      updates.map((u) => u.deploymentId),
      updates.map((u) => u.kind),
      updates.map((u) => u.targetVersion),
      updates.map((u) => u.fromVersion),
      updates.map((u) => u.force),
      updates.map((u) => u.timeoutSeconds ?? null),
    ],
  );
}

export interface TransitionFields {
  phase?: string | null;
  progress?: number;
  errorCode?: string | null;
  errorMessage?: string | null;
  /** Push the report deadline to now + this many seconds (or the row's own timeout_seconds). */
  deadlineInSeconds?: number;
}

export type Transitioned = UpdateRow & { previous_status: UpdateStatus | null };

/** Which rows a transition applies to (each only if its status may lead to the target). */
export type Selection =
  | { kind: 'one'; organizationId: string; id: string; deviceId?: string | undefined }
  /** Queued updates of devices whose tunnel `nodeId` holds, oldest first; SKIP LOCKED. */
  | { kind: 'claim'; nodeId: string; limit: number }
  /** Active updates whose report deadline has passed. */
  | { kind: 'overdue' }
  /** Every update of a deployment (its devices', and its rollbacks'). */
  | { kind: 'deployment'; organizationId: string; deploymentId: string };

/**
 * Every status change of existing rows: one statement that locks the selected rows still in a
 * status from which `to` is allowed (`from`, from status.ts), changes them, returns each with
 * the status it really left, and announces each change on the event feed. A duplicate, late or
 * out-of-order report matches nothing and changes nothing. Progress only moves forward within a
 * status. Only updates/transitions.ts calls this.
 */
export function applyTransition(
  db: Queryable,
  selection: Selection,
  from: readonly UpdateStatus[],
  to: UpdateStatus,
  fields: TransitionFields = {},
): Promise<Transitioned[]> {
  const params: unknown[] = [];
  const $ = (value: unknown) => `$${params.push(value)}`;
  const status = $(to);
  const hasPhase = $(fields.phase !== undefined);
  const phase = $(fields.phase ?? null);
  const progress = $(fields.progress ?? null);
  const hasError = $(fields.errorCode !== undefined);
  const errorCode = $(fields.errorCode ?? null);
  const errorMessage = $(fields.errorMessage ?? null);
  const deadline = $(fields.deadlineInSeconds ?? null);
  const set = `
       status = ${status},
       phase = CASE WHEN ${hasPhase}::boolean THEN ${phase} ELSE u.phase END,
       progress = CASE
         WHEN ${status} = 'completed' THEN 100
         WHEN ${progress}::int IS NULL THEN u.progress
         WHEN u.status = ${status} THEN GREATEST(u.progress, ${progress}::int)
         ELSE ${progress}::int END,
       error_code = CASE WHEN ${hasError}::boolean THEN ${errorCode} ELSE u.error_code END,
       error_message = CASE WHEN ${hasError}::boolean THEN ${errorMessage} ELSE u.error_message END,
       deadline_at = CASE WHEN ${deadline}::int IS NULL THEN u.deadline_at ELSE now() + make_interval(secs => COALESCE(u.timeout_seconds, ${deadline}::int)) END,
       dispatched_at = CASE WHEN ${status} = 'dispatched' THEN now() ELSE u.dispatched_at END,
       attempts = CASE WHEN ${status} = 'dispatched' THEN u.attempts + 1 ELSE u.attempts END,
       last_report_at = CASE WHEN ${status} = ANY(${$([...REPORTED_STATUSES])}::text[]) THEN now() ELSE u.last_report_at END,
       finished_at = CASE WHEN ${status} = ANY(${$([...TERMINAL_STATUSES])}::text[]) THEN now() ELSE NULL END,
       updated_at = now()`;
  const allowed = `q.status = ANY(${$([...from])}::text[])`;
  let select: string;
  switch (selection.kind) {
    case 'one':
      {
        const deviceId = $(selection.deviceId ?? null);
        select = `SELECT q.id, q.status FROM ota_updates q
          WHERE q.id = ${$(selection.id)} AND q.organization_id = ${$(selection.organizationId)}
            AND (${deviceId}::text IS NULL OR q.device_id = ${deviceId}) AND ${allowed}
          FOR UPDATE OF q`;
      }
      break;
    case 'claim':
      select = `SELECT q.id, q.status FROM ota_updates q
        JOIN devices d ON d.organization_id = q.organization_id AND d.device_id = q.device_id
        WHERE ${allowed} AND d.connected_node = ${$(selection.nodeId)}
        ORDER BY q.created_at
        LIMIT ${$(selection.limit)}
        FOR UPDATE OF q SKIP LOCKED`;
      break;
    case 'overdue':
      select = `SELECT q.id, q.status FROM ota_updates q WHERE ${allowed} AND q.deadline_at < now()
        FOR UPDATE OF q SKIP LOCKED`;
      break;
    case 'deployment':
      select = `SELECT q.id, q.status FROM ota_updates q
        WHERE q.deployment_id = ${$(selection.deploymentId)} AND q.organization_id = ${$(selection.organizationId)}
          AND ${allowed}
        FOR UPDATE OF q`;
      break;
  }
  return db.query<Transitioned>(
    `WITH old AS (${select}),
     c AS (
       UPDATE ota_updates AS u SET ${set}
       FROM old WHERE u.id = old.id
       RETURNING ${COLUMNS.split(',')
         .map((column) => `u.${column.trim()}`)
         .join(', ')}, old.status AS previous_status
     )
     SELECT c.* FROM c, LATERAL (SELECT ${OTA_EVENT}) AS announced`,
    params,
  );
}
