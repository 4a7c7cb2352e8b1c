/**
 * Every SQL of fleet deployments. The per-device work items are `ota_updates` rows (written
 * only through updates/transitions.ts); these statements read them, and write the deployment's
 * own tables: which devices it took, its batches, and the operator's and gates' decisions.
 */
import type { Queryable } from '../infra/db.ts';
import { ACTIVE_STATUSES, type UpdateStatus } from '../updates/status.ts';
import type { TargetCandidate } from './plan.ts';
import type { BatchKind, DeploymentSettings, DeploymentTarget } from './schemas.ts';

export interface DeploymentRow {
  id: string;
  organization_id: string;
  version: string;
  target: DeploymentTarget;
  dynamic: boolean;
  settings: DeploymentSettings;
  start_at: Date | null;
  paused: boolean;
  cancelled_at: Date | null;
  aborted_at: Date | null;
  abort_reason: string | null;
  rolled_back_at: Date | null;
  finished_at: Date | null;
  announced: unknown;
  created_at: Date;
  started_at: Date | null;
}

const COLUMNS = `id, organization_id, version, target, dynamic, settings, start_at, paused, cancelled_at, aborted_at,
  abort_reason, rolled_back_at, finished_at, announced, created_at, started_at`;
const ACTIVE = [...ACTIVE_STATUSES];
/** Deployment `p` may still take or touch devices: the "busy" of the SPEC. */
const openIn = (p: string) => `${p}.finished_at IS NULL AND ${p}.cancelled_at IS NULL AND ${p}.aborted_at IS NULL`;

export interface BatchRow {
  batch_index: number;
  kind: BatchKind;
  started_at: Date | null;
  promoted: boolean;
}

/** One device of a deployment with what its latest update row of the deployment says. */
export interface DeviceStateRow {
  device_id: string;
  batch_index: number;
  from_version: string;
  bake_failed_at: Date | null;
  bake_failure: string | null;
  /** The status of its latest `update` row of this deployment; null: none yet. */
  status: UpdateStatus | null;
  update_id: string | null;
  /** When that row finished (for a completed row: when the device committed). */
  finished_at: Date | null;
  error_code: string | null;
  error_message: string | null;
  /** Failed or timed-out rows of this deployment. */
  failures: number;
  online: boolean;
  current_version: string;
}

export function insertDeployment(
  tx: Queryable,
  row: {
    id: string;
    organizationId: string;
    version: string;
    target: DeploymentTarget;
    settings: DeploymentSettings;
    startAt: Date | null;
  },
): Promise<DeploymentRow[]> {
  return tx.query<DeploymentRow>(
    `INSERT INTO deployments (id, organization_id, version, target, dynamic, settings, start_at)
     VALUES ($1, $2, $3, $4::jsonb, $5, $6::jsonb, $7) RETURNING ${COLUMNS}`,
    [
      row.id,
      row.organizationId,
      row.version,
      JSON.stringify(row.target),
      row.settings.dynamic,
      JSON.stringify(row.settings),
      row.startAt,
    ],
  );
}

export async function insertBatches(
  tx: Queryable,
  deploymentId: string,
  batches: readonly { index: number; kind: BatchKind }[],
): Promise<void> {
  if (batches.length === 0) return;
  await tx.query(
    `INSERT INTO deployment_batches (deployment_id, batch_index, kind)
     SELECT $1, b.batch_index, b.kind FROM unnest($2::int[], $3::text[]) AS b(batch_index, kind)
     ON CONFLICT DO NOTHING`,
    [deploymentId, batches.map((batch) => batch.index), batches.map((batch) => batch.kind)],
  );
}

export async function insertDeploymentDevices(
  tx: Queryable,
  deploymentId: string,
  organizationId: string,
  devices: readonly { deviceId: string; batchIndex: number; fromVersion: string }[],
): Promise<void> {
  if (devices.length === 0) return;
  await tx.query(
    `INSERT INTO deployment_devices (deployment_id, organization_id, device_id, batch_index, from_version)
     SELECT $1, $2, d.device_id, d.batch_index, d.from_version
     FROM unnest($3::text[], $4::int[], $5::text[]) AS d(device_id, batch_index, from_version)
     ON CONFLICT DO NOTHING`,
    [
      deploymentId,
      organizationId,
      devices.map((device) => device.deviceId),
      devices.map((device) => device.batchIndex),
      devices.map((device) => device.fromVersion),
    ],
  );
}

/**
 * The organization's devices matching a target, in the planner's stable order (explicit ids as
 * listed, else by device id), each with whether it is busy: in an active update, or in another
 * open deployment. `notIn`: leave out the devices already in that deployment (dynamic targets).
 */
export function findTargetCandidates(
  db: Queryable,
  organizationId: string,
  target: DeploymentTarget,
  notIn: string | null = null,
): Promise<(TargetCandidate & { current_version: string })[]> {
  return db.query(
    `SELECT d.device_id, d.model, d.current_version, d.online,
       (EXISTS (SELECT 1 FROM ota_updates u WHERE u.organization_id = d.organization_id AND u.device_id = d.device_id
                  AND u.status = ANY($6::text[]))
        OR EXISTS (SELECT 1 FROM deployment_devices m JOIN deployments p ON p.id = m.deployment_id
                   WHERE m.organization_id = d.organization_id AND m.device_id = d.device_id
                     AND ${openIn('p')}
                     AND p.id IS DISTINCT FROM $7)) AS busy
     FROM devices d
     WHERE d.organization_id = $1
       AND ($2::text[] IS NULL OR d.device_id = ANY($2::text[]))
       AND ($3::text[] IS NULL OR d.tags @> $3::text[])
       AND ($4::text[] IS NULL OR d.model = ANY($4::text[]))
       AND ($5::text[] IS NULL OR d.current_version = ANY($5::text[]))
       AND ($7::text IS NULL OR NOT EXISTS (
         SELECT 1 FROM deployment_devices s WHERE s.deployment_id = $7 AND s.device_id = d.device_id))
     ORDER BY CASE WHEN $2::text[] IS NULL THEN 0 ELSE array_position($2::text[], d.device_id) END, d.device_id`,
    [
      organizationId,
      target.device_ids ?? null,
      target.tags ?? null,
      target.models ?? null,
      target.current_versions ?? null,
      ACTIVE,
      notIn,
    ],
  );
}

export async function findDeployment(db: Queryable, organizationId: string, id: string) {
  const [row] = await db.query<DeploymentRow>(
    `SELECT ${COLUMNS} FROM deployments WHERE organization_id = $1 AND id = $2`,
    [organizationId, id],
  );
  return row;
}

/** Locks the deployment for an operator's control (waits for a scheduler pass on it). */
export async function lockDeployment(tx: Queryable, organizationId: string, id: string) {
  const [row] = await tx.query<DeploymentRow>(
    `SELECT ${COLUMNS} FROM deployments WHERE organization_id = $1 AND id = $2 FOR UPDATE`,
    [organizationId, id],
  );
  return row;
}

/** Locks the deployment for a scheduler pass, unless another process is working it. */
export async function claimDeployment(tx: Queryable, id: string) {
  const [row] = await tx.query<DeploymentRow>(
    `SELECT ${COLUMNS} FROM deployments WHERE id = $1 AND finished_at IS NULL FOR UPDATE SKIP LOCKED`,
    [id],
  );
  return row;
}

/** Newest first; keyset pagination on (created_at, id). */
export function listDeployments(
  db: Queryable,
  organizationId: string,
  page: { limit: number; before?: { createdAt: Date; id: string } | undefined },
): Promise<DeploymentRow[]> {
  return db.query<DeploymentRow>(
    `SELECT ${COLUMNS} FROM deployments
     WHERE organization_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2::timestamptz, $3::text))
     ORDER BY created_at DESC, id DESC LIMIT $4`,
    [organizationId, page.before?.createdAt ?? null, page.before?.id ?? null, page.limit],
  );
}

/** The organization's deployments the scheduler still works on (paused ones included). */
export async function countUnfinishedDeployments(db: Queryable, organizationId: string): Promise<number> {
  const [row] = await db.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM deployments WHERE organization_id = $1 AND finished_at IS NULL',
    [organizationId],
  );
  return row?.n ?? 0;
}

/** The deployments the scheduler still works on. */
export async function listUnfinishedDeploymentIds(db: Queryable): Promise<string[]> {
  const rows = await db.query<{ id: string }>(
    'SELECT id FROM deployments WHERE finished_at IS NULL ORDER BY created_at',
  );
  return rows.map((row) => row.id);
}

export function listBatches(db: Queryable, deploymentId: string): Promise<BatchRow[]> {
  return db.query<BatchRow>(
    `SELECT batch_index, kind, started_at, promoted FROM deployment_batches WHERE deployment_id = $1
     ORDER BY batch_index`,
    [deploymentId],
  );
}

const LATEST_UPDATE = `LEFT JOIN LATERAL (
         SELECT u.id, u.status, u.finished_at, u.error_code, u.error_message FROM ota_updates u
         WHERE u.deployment_id = m.deployment_id AND u.device_id = m.device_id AND u.kind = 'update'
         ORDER BY u.created_at DESC, u.id DESC LIMIT 1
       ) AS latest ON true`;

/** Every device of the deployment with its latest update row's status, in batch order. */
export function listDeviceStates(db: Queryable, deploymentId: string): Promise<DeviceStateRow[]> {
  return db.query<DeviceStateRow>(
    `SELECT m.device_id, m.batch_index, m.from_version, m.bake_failed_at, m.bake_failure,
       latest.status, latest.id AS update_id, latest.finished_at, latest.error_code, latest.error_message,
       (SELECT count(*)::int FROM ota_updates f WHERE f.deployment_id = m.deployment_id AND f.device_id = m.device_id
          AND f.kind = 'update' AND f.status IN ('failed', 'timed_out')) AS failures,
       d.online, d.current_version
     FROM deployment_devices m
     JOIN devices d ON d.organization_id = m.organization_id AND d.device_id = m.device_id
     ${LATEST_UPDATE}
     WHERE m.deployment_id = $1
     ORDER BY m.batch_index, m.device_id`,
    [deploymentId],
  );
}

/** One page of the deployment's devices (keyset on device_id), optionally of one status ('pending': no row yet). */
export function listDevicePage(
  db: Queryable,
  deploymentId: string,
  page: { status?: string | undefined; failing?: boolean | undefined; after?: string | undefined; limit: number },
): Promise<DeviceStateRow[]> {
  return db.query<DeviceStateRow>(
    `SELECT m.device_id, m.batch_index, m.from_version, m.bake_failed_at, m.bake_failure,
       latest.status, latest.id AS update_id, latest.finished_at, latest.error_code, latest.error_message,
       0 AS failures, d.online, d.current_version
     FROM deployment_devices m
     JOIN devices d ON d.organization_id = m.organization_id AND d.device_id = m.device_id
     ${LATEST_UPDATE}
     WHERE m.deployment_id = $1 AND ($2::text IS NULL OR m.device_id > $2)
       AND ($3::text IS NULL OR coalesce(latest.status, 'pending') = $3)
       AND (NOT $5::boolean OR latest.status IN ('failed', 'timed_out') OR m.bake_failed_at IS NOT NULL)
     ORDER BY m.device_id LIMIT $4`,
    [deploymentId, page.after ?? null, page.status ?? null, page.limit, page.failing === true],
  );
}

/**
 * What ended when in the deployment, by device: its update rows that completed (true) or
 * failed or timed out (false) at their finished_at, and its devices that failed their bake
 * (false) at bake_failed_at. Rollback rows are not the rollout's outcomes.
 */
const OUTCOMES = `SELECT finished_at AS at, status = 'completed' AS completed FROM ota_updates
       WHERE deployment_id = $1 AND kind = 'update' AND status IN ('completed', 'failed', 'timed_out')
       UNION ALL
       SELECT bake_failed_at, false FROM deployment_devices WHERE deployment_id = $1 AND bake_failed_at IS NOT NULL`;

/** When the deployment's timeline starts (it started, or else was created) and its last outcome, if any. */
export async function findTimelineSpan(
  db: Queryable,
  deploymentId: string,
): Promise<{ origin: Date; last_at: Date | null } | undefined> {
  const [row] = await db.query<{ origin: Date; last_at: Date | null }>(
    `SELECT coalesce(p.started_at, p.created_at) AS origin, (SELECT max(at) FROM (${OUTCOMES}) AS e) AS last_at
     FROM deployments p WHERE p.id = $1`,
    [deploymentId],
  );
  return row;
}

/**
 * The deployment's outcomes counted per bucket of `bucketSeconds`, the buckets aligned to the
 * timeline's start; only buckets with an outcome, in time order.
 */
export function countOutcomesByBucket(
  db: Queryable,
  deploymentId: string,
  bucketSeconds: number,
): Promise<{ at: Date; completed: number; failed: number }[]> {
  return db.query(
    `WITH p AS (SELECT coalesce(started_at, created_at) AS origin FROM deployments WHERE id = $1),
     b AS (
       SELECT floor(extract(epoch FROM e.at - p.origin) / $2)::bigint AS bucket, e.completed
       FROM (${OUTCOMES}) AS e, p
     )
     SELECT p.origin + make_interval(secs => (b.bucket * $2)::float8) AS at,
       (count(*) FILTER (WHERE b.completed))::int AS completed, (count(*) FILTER (WHERE NOT b.completed))::int AS failed
     FROM b, p GROUP BY b.bucket, p.origin ORDER BY b.bucket`,
    [deploymentId, bucketSeconds],
  );
}

/** Update rows the deployment created in the last minute: what max_per_minute counts. */
export async function countCreatedInLastMinute(db: Queryable, deploymentId: string): Promise<number> {
  const [row] = await db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM ota_updates
     WHERE deployment_id = $1 AND kind = 'update' AND created_at > now() - interval '1 minute'`,
    [deploymentId],
  );
  return row?.n ?? 0;
}

/** The rollback rows of the deployment still waiting for or being taken by a device. */
export async function countActiveRollbacks(db: Queryable, deploymentId: string): Promise<number> {
  const [row] = await db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM ota_updates
     WHERE deployment_id = $1 AND kind = 'rollback' AND status = ANY($2::text[])`,
    [deploymentId, ACTIVE],
  );
  return row?.n ?? 0;
}

/** Devices that already have a rollback row of this deployment. */
export async function listRolledBackDevices(db: Queryable, deploymentId: string): Promise<Set<string>> {
  const rows = await db.query<{ device_id: string }>(
    `SELECT DISTINCT device_id FROM ota_updates WHERE deployment_id = $1 AND kind = 'rollback'`,
    [deploymentId],
  );
  return new Set(rows.map((row) => row.device_id));
}

export async function markBatchesStarted(tx: Queryable, deploymentId: string, indexes: readonly number[]) {
  await tx.query(
    `WITH b AS (
       UPDATE deployment_batches SET started_at = now()
       WHERE deployment_id = $1 AND batch_index = ANY($2::int[]) AND started_at IS NULL RETURNING 1
     )
     UPDATE deployments SET started_at = coalesce(started_at, now()) WHERE id = $1 AND EXISTS (SELECT 1 FROM b)`,
    [deploymentId, indexes],
  );
}

export async function promoteBatches(tx: Queryable, deploymentId: string, indexes: readonly number[]) {
  await tx.query(
    'UPDATE deployment_batches SET promoted = true WHERE deployment_id = $1 AND batch_index = ANY($2::int[])',
    [deploymentId, indexes],
  );
}

export type DeploymentMark =
  | { paused: boolean }
  | { cancelled: true }
  | { aborted: string }
  | { rolledBack: string }
  | { finished: true };

/** Records an operator's or a gate's decision. Ending marks never move once set. */
export async function markDeployment(tx: Queryable, id: string, mark: DeploymentMark): Promise<void> {
  if ('paused' in mark) {
    await tx.query('UPDATE deployments SET paused = $2 WHERE id = $1', [id, mark.paused]);
  } else if ('cancelled' in mark) {
    await tx.query(
      'UPDATE deployments SET cancelled_at = coalesce(cancelled_at, now()), finished_at = coalesce(finished_at, now()) WHERE id = $1',
      [id],
    );
  } else if ('aborted' in mark) {
    await tx.query(
      `UPDATE deployments SET aborted_at = coalesce(aborted_at, now()), abort_reason = coalesce(abort_reason, $2),
         finished_at = coalesce(finished_at, now()) WHERE id = $1`,
      [id, mark.aborted],
    );
  } else if ('rolledBack' in mark) {
    // Not finished: the scheduler keeps it until every device it updated has its rollback queued.
    await tx.query(
      `UPDATE deployments SET aborted_at = coalesce(aborted_at, now()), abort_reason = coalesce(abort_reason, $2),
         rolled_back_at = coalesce(rolled_back_at, now()), finished_at = NULL WHERE id = $1`,
      [id, mark.rolledBack],
    );
  } else {
    await tx.query('UPDATE deployments SET finished_at = coalesce(finished_at, now()) WHERE id = $1', [id]);
  }
}

export async function setAnnounced(tx: Queryable, id: string, announced: unknown): Promise<void> {
  await tx.query('UPDATE deployments SET announced = $2::jsonb WHERE id = $1', [id, JSON.stringify(announced)]);
}

/**
 * Records that a device failed its bake (`code`: offline, reverted, unhealthy), in every open
 * deployment where it is baking now: its latest update row completed less than bake_minutes
 * ago and no failure is recorded yet. `unlessVersion`: only if the device does not run that
 * (a device_info naming the deployment's own version is no revert). Returns the deployments.
 */
export async function markBakeFailed(
  db: Queryable,
  organizationId: string,
  deviceId: string,
  code: string,
  reportedVersion: string | null = null,
): Promise<string[]> {
  const rows = await db.query<{ deployment_id: string }>(
    `UPDATE deployment_devices m SET bake_failed_at = now(), bake_failure = $3
     FROM deployments p
     WHERE m.organization_id = $1 AND m.device_id = $2 AND m.bake_failed_at IS NULL
       AND p.id = m.deployment_id AND ${openIn('p')}
       AND ($4::text IS NULL OR p.version <> $4)
       AND EXISTS (
         SELECT 1 FROM ota_updates u
         WHERE u.deployment_id = m.deployment_id AND u.device_id = m.device_id AND u.kind = 'update'
           AND u.status = 'completed'
           AND u.finished_at + make_interval(secs => (p.settings->>'bake_minutes')::float8 * 60) > now()
           AND NOT EXISTS (SELECT 1 FROM ota_updates l WHERE l.deployment_id = u.deployment_id
             AND l.device_id = u.device_id AND l.created_at > u.created_at))
     RETURNING m.deployment_id`,
    [organizationId, deviceId, code, reportedVersion],
  );
  return rows.map((row) => row.deployment_id);
}

/** Devices baking now in open deployments (their latest update completed within bake_minutes, no failure yet). */
export function listBakingDevices(
  db: Queryable,
): Promise<{ organization_id: string; device_id: string; deployment_id: string; bake_minutes: number }[]> {
  return db.query(
    `SELECT m.organization_id, m.device_id, m.deployment_id, (p.settings->>'bake_minutes')::float8 AS bake_minutes
     FROM deployment_devices m JOIN deployments p ON p.id = m.deployment_id
     WHERE ${openIn('p')} AND m.bake_failed_at IS NULL
       AND (p.settings->>'bake_minutes')::float8 > 0
       AND EXISTS (
         SELECT 1 FROM ota_updates u
         WHERE u.deployment_id = m.deployment_id AND u.device_id = m.device_id AND u.kind = 'update'
           AND u.status = 'completed'
           AND u.finished_at + make_interval(secs => (p.settings->>'bake_minutes')::float8 * 60) > now())`,
  );
}

/** The deployment's updates a device connected to `nodeId` is working on (in one of `statuses`). */
export function listRunningUpdatesOnNode(
  db: Queryable,
  deploymentId: string,
  nodeId: string,
  statuses: readonly string[],
): Promise<{ id: string; organization_id: string; device_id: string }[]> {
  return db.query(
    `SELECT u.id, u.organization_id, u.device_id FROM ota_updates u
     JOIN devices d ON d.organization_id = u.organization_id AND d.device_id = u.device_id
     WHERE u.deployment_id = $1 AND u.status = ANY($3::text[]) AND d.connected_node = $2`,
    [deploymentId, nodeId, statuses],
  );
}
