/**
 * Every SQL of fleet deployments. Update rows are written only through updates/transitions.ts;
 * the database keeps each deployment device's state in step with its update row and the counts
 * in step with the devices (migration 007). What is written here: the deployment and its
 * batches (through guarded state changes), the devices it matched, and what the passes decide.
 */

import { holderOf } from '../holds/repo.ts';
import { arrayParam, type Queryable } from '../infra/db.ts';
import type { KeyActor } from '../model/approval.ts';
import {
  type BatchKind,
  type BatchState,
  batchStatesLeadingTo,
  type DeploymentState,
  type DeviceState,
  deploymentStatesLeadingTo,
  OPEN_STATES,
  type Stop,
  WAIT_REASONS,
} from '../model/deployment.ts';
import { ACTIVE_STATUSES, type UpdateStatus } from '../model/update-status.ts';
import type { MatchedDevice } from './plan.ts';
import type { DeploymentSettings, DeploymentTarget } from './schemas.ts';

export interface DeploymentRow {
  id: string;
  organization_id: string;
  version: string;
  /** The selectors; a list of device ids is in deployment_target_ids (here only its count). */
  target: Omit<DeploymentTarget, 'device_ids'> & { device_ids_count?: number };
  dynamic: boolean;
  settings: DeploymentSettings;
  state: DeploymentState;
  start_at: Date | null;
  stop: Stop | null;
  stop_reason: string | null;
  settled: boolean;
  matched_seq: number;
  announced: unknown;
  created_at: Date;
  started_at: Date | null;
  ended_at: Date | null;
  /** The key that created it (null: created before approvals existed). */
  created_by: KeyActor | null;
  /** Null when it needed no approval. */
  approval: ApprovalRecord | null;
}

/** A deployment's approval as stored (migration 016). */
export interface ApprovalRecord {
  reason: string;
  decision: 'approved' | 'rejected' | null;
  decided_by: KeyActor | null;
  decided_at: string | null;
  comment: string | null;
}

const COLUMNS = `id, organization_id, version, target, dynamic, settings, state, start_at, stop, stop_reason, settled,
  matched_seq, announced, created_at, started_at, ended_at, created_by, approval`;
const ACTIVE = [...ACTIVE_STATUSES];
const OPEN = [...OPEN_STATES];
const WAITS = [...WAIT_REASONS];

/**
 * Device `d`'s tunnel is held by process `node` and it said what it runs on it (or had five
 * seconds to): an attempt for it can be sent at once. The claim's condition (updates/repo.ts).
 */
const hereSql = (d: string, node: string) =>
  `(${d}.connected_node = ${node} AND (${d}.reported_at >= ${d}.connected_at OR ${d}.connected_at < now() - interval '5 seconds'))`;

// --- creating ---------------------------------------------------------------------------------

/** A device the target selected, as the planner sees it. */
export interface CandidateRow {
  device_id: string;
  model: string | null;
  current_version: string;
  online: boolean;
  /** What holds it (a deployment id, or a single update's id); null when free. */
  held_by: string | null;
  /** Its place in the target's order. */
  ordinal: number;
  /** Its last change that can make it match (devices.change_seq). */
  change_seq: number;
  /** Its tunnel is held by the process that asked (TargetQuery.nodeId) and it said what it runs on it. */
  here: boolean;
  /** Its own time zone; null: its organization's. */
  timezone: string | null;
}

export interface TargetQuery {
  organizationId: string;
  target: DeploymentTarget;
  /** Only devices changed after this point (a dynamic deployment's next match). */
  changedAfter?: number;
  /** The deployment whose own devices are neither candidates nor holders (a dynamic one matching again). */
  deploymentId?: string;
  /** The device ids of a stored target list (instead of target.device_ids). */
  storedIdsOf?: string;
  /** At most this many, the earliest changed first (with changedAfter). */
  limit?: number;
  /** This process: each candidate says whether its tunnel is here. */
  nodeId?: string;
}

/**
 * The organization's devices matching every selector of the target, in the target's order
 * (explicit ids as listed, else by id), each with what holds it. Linear in the list: the ids are
 * joined (unnest WITH ORDINALITY, or the stored list), never searched per device.
 */
export function findTargetCandidates(db: Queryable, query: TargetQuery): Promise<CandidateRow[]> {
  const { target } = query;
  const params: unknown[] = [];
  const $ = (value: unknown) => `$${params.push(value)}`;
  const organization = $(query.organizationId);
  const exclude = query.deploymentId === undefined ? 'NULL' : `${$(query.deploymentId)}::text`;
  let ids: string | null = null;
  if (query.storedIdsOf !== undefined) {
    ids = `SELECT device_id, ordinal FROM deployment_target_ids WHERE deployment_id = ${$(query.storedIdsOf)}`;
  } else if (target.device_ids !== undefined) {
    ids = `SELECT device_id, ordinal::int FROM unnest(${$(target.device_ids)}::text[]) WITH ORDINALITY AS t(device_id, ordinal)`;
  }
  const conditions = [`d.organization_id = ${organization}`];
  if (target.tags) conditions.push(`d.tags @> ${$(target.tags)}::text[]`);
  if (target.models) conditions.push(`d.model = ANY(${$(target.models)}::text[])`);
  if (target.current_versions) conditions.push(`d.current_version = ANY(${$(target.current_versions)}::text[])`);
  if (query.changedAfter !== undefined) conditions.push(`d.change_seq > ${$(query.changedAfter)}::bigint`);
  if (query.deploymentId !== undefined) {
    conditions.push(
      `NOT EXISTS (SELECT 1 FROM deployment_devices s WHERE s.deployment_id = ${exclude} AND s.device_id = d.device_id)`,
    );
  }
  const order = [query.changedAfter !== undefined ? 'd.change_seq' : null, ids ? 'l.ordinal' : 'd.device_id']
    .filter(Boolean)
    .join(', ');
  const node = $(query.nodeId ?? null);
  return db.query<CandidateRow>(
    `SELECT d.device_id, d.model, d.current_version, d.online, ${holderOf('d', exclude)} AS held_by,
       ${ids ? 'l.ordinal' : '0'} AS ordinal, d.change_seq, ${hereSql('d', `${node}::text`)} AS here, d.timezone
     FROM devices d ${ids ? `JOIN (${ids}) AS l ON l.device_id = d.device_id` : ''}
     WHERE ${conditions.join(' AND ')}
     ORDER BY ${order}
     ${query.limit !== undefined ? `LIMIT ${$(query.limit)}` : ''}`,
    params,
  );
}

/** The listed ids that name no device of the organization (a dry run says so). */
export async function findUnknownDeviceIds(
  db: Queryable,
  organizationId: string,
  deviceIds: readonly string[],
  limit: number,
): Promise<{ count: number; sample: string[] }> {
  const rows = await db.query<{ device_id: string; total: number }>(
    `SELECT t.device_id, count(*) OVER ()::int AS total
     FROM unnest($2::text[]) WITH ORDINALITY AS t(device_id, ordinal)
     WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.organization_id = $1 AND d.device_id = t.device_id)
     ORDER BY t.ordinal LIMIT $3`,
    [organizationId, deviceIds, limit],
  );
  return { count: rows[0]?.total ?? 0, sample: rows.map((row) => row.device_id) };
}

export async function insertDeployment(
  tx: Queryable,
  row: {
    id: string;
    organizationId: string;
    version: string;
    target: DeploymentRow['target'];
    settings: DeploymentSettings;
    startAt: Date | null;
    state: DeploymentState;
    retryBaseMs: number;
    matchedSeq: number;
    createdBy: KeyActor | null;
    approval: ApprovalRecord | null;
  },
): Promise<DeploymentRow> {
  const [inserted] = await tx.query<DeploymentRow>(
    `INSERT INTO deployments (id, organization_id, version, target, dynamic, settings, start_at, state, retry_base_ms,
       matched_seq, started_at, created_by, approval)
     VALUES ($1, $2, $3, $4::jsonb, $5, $6::jsonb, $7, $8, $9, $10, CASE WHEN $8 = 'running' THEN now() END,
       $11::jsonb, $12::jsonb)
     RETURNING ${COLUMNS}`,
    [
      row.id,
      row.organizationId,
      row.version,
      JSON.stringify(row.target),
      row.settings.dynamic,
      JSON.stringify(row.settings),
      row.startAt,
      row.state,
      row.retryBaseMs,
      row.matchedSeq,
      row.createdBy && JSON.stringify(row.createdBy),
      row.approval && JSON.stringify(row.approval),
    ],
  );
  return inserted!;
}

export async function insertTargetIds(tx: Queryable, deploymentId: string, deviceIds: readonly string[]) {
  if (deviceIds.length === 0) return;
  await tx.query(
    `INSERT INTO deployment_target_ids (deployment_id, device_id, ordinal)
     SELECT $1, t.device_id, t.ordinal FROM unnest($2::text[]) WITH ORDINALITY AS t(device_id, ordinal)`,
    [deploymentId, arrayParam(deviceIds)],
  );
}

/** The highest device change number now: a dynamic deployment created now has matched up to it. */
export async function currentChangeSeq(db: Queryable, organizationId: string): Promise<number> {
  const [row] = await db.query<{ seq: number | null }>(
    'SELECT max(change_seq) AS seq FROM devices WHERE organization_id = $1',
    [organizationId],
  );
  return row?.seq ?? 0;
}

/** The deployment's batches; `started`: those that start with its creation (the first, starting now). */
export async function insertBatches(
  tx: Queryable,
  deploymentId: string,
  batches: { index: number; kind: BatchKind }[],
  started: readonly number[] = [],
) {
  if (batches.length === 0) return;
  await tx.query(
    `INSERT INTO deployment_batches (deployment_id, batch_index, kind, state, started_at)
     SELECT $1, b.batch_index, b.kind, CASE WHEN b.batch_index = ANY($4::int[]) THEN 'running' ELSE 'pending' END,
       CASE WHEN b.batch_index = ANY($4::int[]) THEN now() END
     FROM unnest($2::int[], $3::text[]) AS b(batch_index, kind)
     ON CONFLICT DO NOTHING`,
    [deploymentId, batches.map((batch) => batch.index), batches.map((batch) => batch.kind), started],
  );
}

/** A device the deployment takes (batch set, pending) or leaves out (no batch, skipped with a reason). */
export type NewDeploymentDevice = MatchedDevice;

export async function insertDeploymentDevices(
  tx: Queryable,
  deploymentId: string,
  organizationId: string,
  devices: readonly NewDeploymentDevice[],
  /**
   * The deployment is being created and has no device yet: nothing to skip. (ON CONFLICT is a
   * speculative insertion per row: 30 ms of 10,000 rows' 210 ms, measured with EXPLAIN ANALYZE.)
   */
  options: { created?: boolean } = {},
) {
  if (devices.length === 0) return;
  await tx.query(
    `INSERT INTO deployment_devices (deployment_id, organization_id, device_id, batch_index, from_version, ordinal,
       state, reason, detail, update_id)
     SELECT $1, $2, d.device_id, d.batch_index, d.from_version, d.ordinal, d.state, d.reason, d.detail, d.update_id
     FROM unnest($3::text[], $4::int[], $5::text[], $6::int[], $7::text[], $8::text[], $9::text[], $10::text[])
       AS d(device_id, batch_index, from_version, ordinal, state, reason, detail, update_id)
     ${options.created ? '' : 'ON CONFLICT (deployment_id, device_id) DO NOTHING'}`,
    [
      deploymentId,
      organizationId,
      arrayParam(devices.map((device) => device.deviceId)),
      arrayParam(devices.map((device) => device.batchIndex)),
      arrayParam(devices.map((device) => device.fromVersion)),
      arrayParam(devices.map((device) => device.ordinal)),
      arrayParam(devices.map((device) => device.state)),
      arrayParam(devices.map((device) => device.reason)),
      arrayParam(devices.map((device) => device.detail)),
      arrayParam(devices.map((device) => device.updateId)),
    ],
  );
}

// --- reading ----------------------------------------------------------------------------------

export async function findDeployment(db: Queryable, organizationId: string, id: string) {
  const [row] = await db.query<DeploymentRow>(
    `SELECT ${COLUMNS} FROM deployments WHERE organization_id = $1 AND id = $2`,
    [organizationId, id],
  );
  return row;
}

export async function findDeploymentById(db: Queryable, id: string) {
  const [row] = await db.query<DeploymentRow>(`SELECT ${COLUMNS} FROM deployments WHERE id = $1`, [id]);
  return row;
}

/** Newest first, optionally of some states; keyset pagination on (created_at, id). */
export function listDeployments(
  db: Queryable,
  organizationId: string,
  page: { limit: number; states?: readonly DeploymentState[] | undefined },
): Promise<DeploymentRow[]> {
  return db.query<DeploymentRow>(
    `SELECT ${COLUMNS} FROM deployments
     WHERE organization_id = $1 AND ($2::text[] IS NULL OR state = ANY($2::text[]))
     ORDER BY created_at DESC, id DESC LIMIT $3`,
    [organizationId, page.states ?? null, page.limit],
  );
}

/** The organization's open deployments (awaiting approval, scheduled, running, paused): what the cap counts. */
export async function countOpenDeployments(db: Queryable, organizationId: string): Promise<number> {
  const [row] = await db.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM deployments WHERE organization_id = $1 AND state = ANY($2::text[])',
    [organizationId, OPEN],
  );
  return row?.n ?? 0;
}

export interface BatchRow {
  batch_index: number;
  kind: BatchKind;
  state: BatchState;
  promoted: boolean;
  started_at: Date | null;
}

export function listBatches(
  db: Queryable,
  deploymentIds: readonly string[],
): Promise<(BatchRow & { deployment_id: string })[]> {
  return db.query(
    `SELECT deployment_id, batch_index, kind, state, promoted, started_at FROM deployment_batches
     WHERE deployment_id = ANY($1::text[]) ORDER BY deployment_id, batch_index`,
    [deploymentIds],
  );
}

/** The counters of some deployments: per batch (-1: left out) and bucket, the non-zero ones. */
export function listCounts(
  db: Queryable,
  deploymentIds: readonly string[],
): Promise<{ deployment_id: string; batch_index: number; bucket: string; n: number }[]> {
  return db.query(
    `SELECT deployment_id, batch_index, bucket, n FROM deployment_counts
     WHERE deployment_id = ANY($1::text[]) AND n <> 0`,
    [deploymentIds],
  );
}

/** When the bake of each batch's last baking device ends. */
export function listBakeEnds(db: Queryable, deploymentId: string): Promise<{ batch_index: number; ends_at: Date }[]> {
  return db.query(
    `SELECT batch_index, max(bake_until) AS ends_at FROM deployment_devices
     WHERE deployment_id = $1 AND state = 'baking' GROUP BY batch_index`,
    [deploymentId],
  );
}

/** One device of a deployment, as its page lists it. */
export interface DeviceRow {
  device_id: string;
  batch_index: number | null;
  state: DeviceState;
  reason: string | null;
  detail: string | null;
  update_id: string | null;
  failures: number;
  retry_at: Date | null;
  bake_until: Date | null;
  rollback_status: UpdateStatus | null;
  rollback_reason: string | null;
  from_version: string;
  current_version: string;
  online: boolean;
  error_message: string | null;
}

export interface DeviceFilter {
  states?: readonly DeviceState[] | undefined;
  reason?: string | undefined;
  batch?: number | undefined;
  /** Failed, timed out or failed in the bake. */
  failing?: boolean | undefined;
  after?: string | undefined;
  limit: number;
}

/** One page of the deployment's devices (keyset on device_id). */
export function listDevicePage(db: Queryable, deploymentId: string, filter: DeviceFilter): Promise<DeviceRow[]> {
  return db.query<DeviceRow>(
    `SELECT m.device_id, m.batch_index, m.state, m.reason, m.detail, m.update_id, m.failures, m.retry_at, m.bake_until,
       m.rollback_status, m.rollback_reason, m.from_version, d.current_version, d.online,
       (SELECT u.error_message FROM ota_updates u WHERE u.id = m.update_id) AS error_message
     FROM deployment_devices m
     JOIN devices d ON d.organization_id = m.organization_id AND d.device_id = m.device_id
     WHERE m.deployment_id = $1 AND ($2::text IS NULL OR m.device_id > $2)
       AND ($3::text[] IS NULL OR m.state = ANY($3::text[]))
       AND ($4::text IS NULL OR m.reason = $4 OR m.rollback_reason = $4
            OR ($4 = 'bake_failed' AND m.reason LIKE 'bake\\_%'))
       AND ($5::int IS NULL OR m.batch_index = $5)
       AND (NOT $6::boolean OR m.state IN ('failed', 'timed_out'))
     ORDER BY m.device_id LIMIT $7`,
    [
      deploymentId,
      filter.after ?? null,
      filter.states ?? null,
      filter.reason ?? null,
      filter.batch ?? null,
      filter.failing === true,
      filter.limit,
    ],
  );
}

/** One page of the device ids a target lists, in its order, each with whether it names a device. */
export function listTargetIds(
  db: Queryable,
  deployment: { id: string; organization_id: string },
  page: { afterOrdinal: number; limit: number },
): Promise<{ device_id: string; ordinal: number; found: boolean }[]> {
  return db.query(
    `SELECT t.device_id, t.ordinal, EXISTS (
       SELECT 1 FROM devices d WHERE d.organization_id = $2 AND d.device_id = t.device_id) AS found
     FROM deployment_target_ids t WHERE t.deployment_id = $1 AND t.ordinal > $3
     ORDER BY t.ordinal LIMIT $4`,
    [deployment.id, deployment.organization_id, page.afterOrdinal, page.limit],
  );
}

/**
 * What ended when in the deployment: its update rows that completed (true) or failed or timed
 * out (false) at their finished_at, and its devices that failed their bake (false) then, counted
 * once: a device that committed and then failed its bake is a failure, not also a completion.
 * Rollback rows are not the rollout's outcomes.
 */
const OUTCOMES = `SELECT u.finished_at AS at, u.status = 'completed' AS completed FROM ota_updates u
       WHERE u.deployment_id = $1 AND u.kind = 'update' AND u.status IN ('completed', 'failed', 'timed_out')
         AND NOT EXISTS (SELECT 1 FROM deployment_devices b WHERE b.deployment_id = u.deployment_id
           AND b.device_id = u.device_id AND b.update_id = u.id AND b.bake_failed_at IS NOT NULL)
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

// --- the lifecycle: guarded writes ------------------------------------------------------------

/**
 * Moves the deployment to `to` if its state allows it (model/deployment.ts), recording when it
 * started or ended and, for a gate's decision, the stop; returns the row with the state it left,
 * or undefined when the state did not allow it (someone moved it first).
 */
export async function moveDeployment(
  tx: Queryable,
  id: string,
  to: DeploymentState,
  stop: { stop: Stop; reason: string } | null = null,
): Promise<(DeploymentRow & { previous_state: DeploymentState }) | undefined> {
  const [row] = await tx.query<DeploymentRow & { previous_state: DeploymentState }>(
    `WITH old AS (SELECT id, state FROM deployments WHERE id = $1 AND state = ANY($3::text[]) FOR UPDATE)
     UPDATE deployments p SET state = $2,
       started_at = CASE WHEN $2 = 'running' THEN coalesce(p.started_at, now()) ELSE p.started_at END,
       ended_at = CASE WHEN $2 = ANY($4::text[]) THEN p.ended_at ELSE coalesce(p.ended_at, now()) END,
       settled = false,
       stop = coalesce($5::jsonb, p.stop), stop_reason = coalesce($6, p.stop_reason)
     FROM old WHERE p.id = old.id
     RETURNING ${COLUMNS.split(',')
       .map((column) => `p.${column.trim()}`)
       .join(', ')}, old.state AS previous_state`,
    [id, to, deploymentStatesLeadingTo(to), OPEN, stop ? JSON.stringify(stop.stop) : null, stop?.reason ?? null],
  );
  return row;
}

/** Records the decision on a deployment awaiting approval (its state moves through the lifecycle writer). */
export async function decideApproval(tx: Queryable, id: string, approval: ApprovalRecord): Promise<void> {
  await tx.query('UPDATE deployments SET approval = $2::jsonb WHERE id = $1', [id, JSON.stringify(approval)]);
}

/** Moves batches to new states, each only if its state allows it; returns the changes made. */
export async function moveBatches(
  tx: Queryable,
  deploymentId: string,
  changes: readonly { index: number; to: BatchState }[],
): Promise<{ batch_index: number; state: BatchState; previous_state: BatchState }[]> {
  if (changes.length === 0) return [];
  return tx.query(
    `WITH wanted AS (
       SELECT c.batch_index, c.state, c.allowed::text[] AS allowed
       FROM unnest($2::int[], $3::text[], $4::text[]) AS c(batch_index, state, allowed)
     ), old AS (
       SELECT b.batch_index, b.state FROM deployment_batches b JOIN wanted w USING (batch_index)
       WHERE b.deployment_id = $1 AND b.state = ANY(w.allowed)
       ORDER BY b.batch_index FOR UPDATE OF b
     )
     UPDATE deployment_batches b SET state = w.state,
       started_at = CASE WHEN w.state = 'running' THEN coalesce(b.started_at, now()) ELSE b.started_at END,
       ended_at = CASE WHEN w.state IN ('passed', 'failed') THEN now() ELSE NULL END
     FROM wanted w, old WHERE b.deployment_id = $1 AND b.batch_index = w.batch_index AND old.batch_index = w.batch_index
     RETURNING b.batch_index, b.state, old.state AS previous_state`,
    [
      deploymentId,
      changes.map((change) => change.index),
      changes.map((change) => change.to),
      // A text[] per change, as the text of a Postgres array.
      changes.map((change) => `{${batchStatesLeadingTo(change.to).join(',')}}`),
    ],
  );
}

export async function promoteBatches(tx: Queryable, deploymentId: string, indexes: readonly number[]) {
  if (indexes.length === 0) return;
  await tx.query(
    'UPDATE deployment_batches SET promoted = true WHERE deployment_id = $1 AND batch_index = ANY($2::int[])',
    [deploymentId, indexes],
  );
}

/** Remembers what the last `deployment` event said. */
export async function setAnnounced(tx: Queryable, id: string, announced: unknown): Promise<void> {
  await tx.query('UPDATE deployments SET announced = $2::jsonb WHERE id = $1', [id, JSON.stringify(announced)]);
}

// --- the passes -------------------------------------------------------------------------------

/** Deployments a pass may work now, by organization: not settled, and started or due to start (approved). */
export function listWork(db: Queryable): Promise<{ id: string; organization_id: string }[]> {
  return db.query(
    `SELECT id, organization_id FROM deployments
     WHERE NOT settled AND (state <> 'scheduled' OR start_at IS NULL OR start_at <= now())
       AND state <> 'awaiting_approval'
     ORDER BY organization_id, created_at, id`,
  );
}

/**
 * Holds the deployment for one pass of `nodeId` (until `leaseMs` from now): another replica's
 * pass skips it meanwhile. A lease, not a lock: nothing waits on it; one that a dead replica
 * left is free as soon as the replica is no longer registered (three missed beats), or when
 * it runs out.
 */
export async function leaseDeployment(db: Queryable, id: string, nodeId: string, leaseMs: number) {
  const [row] = await db.query<DeploymentRow>(
    `UPDATE deployments SET lease_node = $2, lease_until = now() + make_interval(secs => $3::float8 / 1000)
     WHERE id = $1 AND NOT settled
       AND (lease_until IS NULL OR lease_until < now() OR lease_node = $2
            OR NOT EXISTS (SELECT 1 FROM server_nodes n WHERE n.id = lease_node))
     RETURNING ${COLUMNS}`,
    [id, nodeId, leaseMs],
  );
  return row;
}

export async function releaseLease(db: Queryable, id: string, nodeId: string) {
  await db.query('UPDATE deployments SET lease_until = NULL WHERE id = $1 AND lease_node = $2', [id, nodeId]);
}

/** Locks the deployment row for a statement that must not race a control (creating rows while it runs). */
export async function lockIfState(tx: Queryable, id: string, states: readonly DeploymentState[]) {
  const [row] = await tx.query<{ id: string }>(
    'SELECT id FROM deployments WHERE id = $1 AND state = ANY($2::text[]) FOR SHARE',
    [id, states],
  );
  return row !== undefined;
}

/**
 * Takes up to `limit` devices of started batches that need an attempt now (not started yet, or
 * their retry is due), in batch and target order, and points each at the attempt about to be
 * created for it (state queued, a new update id): the caller creates those rows in the same
 * transaction. SKIP LOCKED: a concurrent pass takes others. With each, what it runs now, and
 * whether its tunnel is held by `nodeId` and it said what it runs on it (send at once).
 */
export function claimDueDevices(
  tx: Queryable,
  deploymentId: string,
  nodeId: string,
  limit: number,
  /** Only these (the devices a pass found inside their window and budget). */
  deviceIds: readonly string[] | null = null,
): Promise<{ device_id: string; update_id: string; current_version: string; here: boolean }[]> {
  return tx.query(
    `WITH due AS (
       SELECT m.device_id FROM deployment_devices m
       JOIN deployment_batches b ON b.deployment_id = m.deployment_id AND b.batch_index = m.batch_index
       WHERE m.deployment_id = $1 AND b.state <> 'pending'
         AND (m.state = 'pending' OR (m.state = 'retrying' AND m.retry_at <= now()))
         AND ($4::text[] IS NULL OR m.device_id = ANY($4::text[]))
       ORDER BY m.batch_index, m.ordinal, m.device_id
       LIMIT $3
       FOR UPDATE OF m SKIP LOCKED
     )
     UPDATE deployment_devices m SET state = 'queued', reason = NULL, retry_at = NULL,
       detail = CASE WHEN m.reason = ANY($5::text[]) THEN NULL ELSE m.detail END,
       update_id = 'upd_' || substr(replace(gen_random_uuid()::text, '-', ''), 1, 20)
     FROM due, devices d
     WHERE m.deployment_id = $1 AND m.device_id = due.device_id
       AND d.organization_id = m.organization_id AND d.device_id = m.device_id
     RETURNING m.device_id, m.update_id, d.current_version, ${hereSql('d', '$2::text')} AS here`,
    [deploymentId, nodeId, limit, deviceIds === null ? null : arrayParam(deviceIds), WAITS],
  );
}

/** A device due for an attempt (not started, or its retry due) in a started batch, with its time zone. */
export interface DueRow {
  device_id: string;
  state: 'pending' | 'retrying';
  reason: string | null;
  detail: string | null;
  /** Its own zone; null: its organization's. */
  timezone: string | null;
}

/** The devices due for an attempt in the deployment's started batches, in the planned order. */
export function listDueDevices(db: Queryable, deploymentId: string, limit: number): Promise<DueRow[]> {
  return db.query<DueRow>(
    `SELECT m.device_id, m.state, m.reason, m.detail, d.timezone FROM deployment_devices m
     JOIN deployment_batches b ON b.deployment_id = m.deployment_id AND b.batch_index = m.batch_index
     JOIN devices d ON d.organization_id = m.organization_id AND d.device_id = m.device_id
     WHERE m.deployment_id = $1 AND b.state <> 'pending'
       AND (m.state = 'pending' OR (m.state = 'retrying' AND m.retry_at <= now()))
     ORDER BY m.batch_index, m.ordinal, m.device_id
     LIMIT $2`,
    [deploymentId, limit],
  );
}

/**
 * Writes why devices not started wait (model/deployment.ts WAIT_REASONS; null: they wait for
 * nothing now), each only where it changes: a pending row keeps its state. A row that is no
 * longer pending (a concurrent pass took it) is left alone.
 */
export async function setWaits(
  db: Queryable,
  deploymentId: string,
  waits: readonly { device_id: string; reason: string | null; detail: string | null }[],
): Promise<void> {
  if (waits.length === 0) return;
  await db.query(
    `UPDATE deployment_devices m SET reason = w.reason, detail = w.detail
     FROM unnest($2::text[], $3::text[], $4::text[]) AS w(device_id, reason, detail)
     WHERE m.deployment_id = $1 AND m.device_id = w.device_id AND m.state = 'pending'
       AND (m.reason IS NULL OR m.reason = ANY($5::text[]))
       AND (m.reason IS DISTINCT FROM w.reason OR m.detail IS DISTINCT FROM w.detail)`,
    [
      deploymentId,
      arrayParam(waits.map((wait) => wait.device_id)),
      arrayParam(waits.map((wait) => wait.reason)),
      arrayParam(waits.map((wait) => wait.detail)),
      WAITS,
    ],
  );
}

/**
 * A deployment's devices downloading now (or of all the organization's deployments): from the
 * attempt's creation until the device reports a phase past the download, or it ends.
 */
export async function countDownloading(
  db: Queryable,
  scope: { deploymentId: string } | { organizationId: string },
  /** The windows' clock: an attempt held by its closed window (window_ends_at) downloads nothing. */
  now: Date,
): Promise<{ count: number; ratedBytesPerSecond: number; unrated: number }> {
  const where =
    'deploymentId' in scope ? 'u.deployment_id = $1' : 'u.organization_id = $1 AND u.deployment_id IS NOT NULL';
  const [row] = await db.query<{ count: number; rated: number; unrated: number }>(
    `SELECT count(*)::int AS count, coalesce(sum(u.max_bytes_per_second), 0)::float8 AS rated,
       (count(*) FILTER (WHERE u.max_bytes_per_second IS NULL))::int AS unrated
     FROM ota_updates u
     WHERE ${where} AND u.kind = 'update' AND u.status IN ('queued', 'dispatched', 'in_progress')
       AND (u.status <> 'in_progress' OR coalesce(u.phase, 'downloading') IN ('queued', 'downloading'))
       AND NOT (u.status = 'queued' AND u.window_ends_at IS NOT NULL AND u.window_ends_at <= $2::timestamptz)`,
    ['deploymentId' in scope ? scope.deploymentId : scope.organizationId, now.toISOString()],
  );
  return { count: row?.count ?? 0, ratedBytesPerSecond: row?.rated ?? 0, unrated: row?.unrated ?? 0 };
}

/** A queued attempt whose device's maintenance window closed before it went out. */
export interface WindowHeld {
  update_id: string;
  device_id: string;
  /** Its own zone; null: its organization's. */
  timezone: string | null;
}

/** The deployment's queued attempts whose window closed by `now` (the windows' clock), at most `limit`. */
export function listWindowHeld(db: Queryable, deploymentId: string, now: Date, limit: number): Promise<WindowHeld[]> {
  return db.query<WindowHeld>(
    `SELECT u.id AS update_id, u.device_id, d.timezone FROM ota_updates u
     JOIN devices d ON d.organization_id = u.organization_id AND d.device_id = u.device_id
     WHERE u.deployment_id = $1 AND u.status = 'queued' AND u.window_ends_at IS NOT NULL AND u.window_ends_at <= $2
     ORDER BY u.window_ends_at, u.id
     LIMIT $3`,
    [deploymentId, now.toISOString(), limit],
  );
}

/**
 * The rows of held attempts as a pass decided them: those whose window is open again stop
 * waiting (the attempt's new closing time is written by updates/repo.ts renewWindows); the
 * others wait for their window (reason `window`, detail when they may start). A row waiting for
 * its lock keeps that reason (markLockedWaiting).
 */
export async function markWindowHeld(
  db: Queryable,
  deploymentId: string,
  decided: readonly { update_id: string; device_id: string; open: boolean; detail: string | null }[],
): Promise<void> {
  if (decided.length === 0) return;
  await db.query(
    `UPDATE deployment_devices m
     SET reason = CASE WHEN w.open THEN NULL ELSE 'window' END, detail = CASE WHEN w.open THEN NULL ELSE w.detail END
     FROM unnest($2::text[], $3::text[], $4::boolean[], $5::text[]) AS w(update_id, device_id, open, detail)
     WHERE m.deployment_id = $1 AND m.device_id = w.device_id AND m.update_id = w.update_id AND m.state = 'queued'
       AND (m.reason IS NULL OR m.reason = 'window')
       AND (m.reason IS DISTINCT FROM CASE WHEN w.open THEN NULL ELSE 'window' END
            OR m.detail IS DISTINCT FROM CASE WHEN w.open THEN NULL ELSE w.detail END)`,
    [
      deploymentId,
      arrayParam(decided.map((held) => held.update_id)),
      arrayParam(decided.map((held) => held.device_id)),
      arrayParam(decided.map((held) => held.open)),
      arrayParam(decided.map((held) => held.detail)),
    ],
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

/** Baking devices whose bake is over: completed. */
export async function completeBakes(db: Queryable, deploymentId: string): Promise<number> {
  const rows = await db.query(
    `UPDATE deployment_devices SET state = 'completed'
     WHERE deployment_id = $1 AND state = 'baking' AND bake_until <= now() RETURNING 1`,
    [deploymentId],
  );
  return rows.length;
}

/**
 * Why a baking device (`m`, its device `d`, its deployment `p`) failed its bake: reverted when it
 * no longer runs the deployment's version, whatever else was seen (`otherwise`), one rule for
 * every writer of a bake failure (the database's fall-back trigger, migration 011, says the same).
 */
const bakeFailureReason = (otherwise: 'bake_offline' | 'bake_unhealthy') =>
  `CASE WHEN d.current_version <> p.version THEN 'bake_reverted' ELSE '${otherwise}' END`;

/**
 * Baking devices that no longer run the deployment's version (the boot loader or an operator
 * took them back) or that have been offline longer than `offlineGraceSeconds` (a restart of the
 * server or a replica is not a failure; a device gone for longer is): failed within the bake.
 */
export async function failBakesFromRecord(db: Queryable, deploymentId: string, offlineGraceSeconds: number) {
  const rows = await db.query<{ device_id: string; reason: string }>(
    `UPDATE deployment_devices m SET state = 'failed', bake_failed_at = now(),
       reason = ${bakeFailureReason('bake_offline')}
     FROM devices d, deployments p
     WHERE m.deployment_id = $1 AND m.state = 'baking' AND p.id = m.deployment_id
       AND d.organization_id = m.organization_id AND d.device_id = m.device_id
       AND (d.current_version <> p.version
            OR (NOT d.online AND coalesce(d.last_seen_at, m.committed_at) < now() - make_interval(secs => $2::float8)))
     RETURNING m.device_id, m.reason`,
    [deploymentId, offlineGraceSeconds],
  );
  return rows;
}

/**
 * A baking device answered its health check unhealthy: failed within the bake, in every
 * deployment it bakes in; as reverted where it no longer runs the deployment's version (it fell
 * back and said so before the probe's answer was written), like failBakesFromRecord.
 */
export async function failBakeUnhealthy(db: Queryable, organizationId: string, deviceId: string): Promise<string[]> {
  const rows = await db.query<{ deployment_id: string }>(
    `UPDATE deployment_devices m SET state = 'failed', bake_failed_at = now(),
       reason = ${bakeFailureReason('bake_unhealthy')}
     FROM devices d, deployments p
     WHERE m.organization_id = $1 AND m.device_id = $2 AND m.state = 'baking' AND p.id = m.deployment_id
       AND d.organization_id = m.organization_id AND d.device_id = m.device_id
     RETURNING m.deployment_id`,
    [organizationId, deviceId],
  );
  return rows.map((row) => row.deployment_id);
}

/**
 * An ended deployment lets go of its devices: those that never started (or waited for a retry)
 * are cancelled (`reason`: why it stopped), and those baking are no longer watched: completed.
 */
export async function releaseDevices(db: Queryable, deploymentId: string, reason: string): Promise<number> {
  const rows = await db.query(
    `UPDATE deployment_devices
     SET state = CASE WHEN state = 'baking' THEN 'completed' ELSE 'cancelled' END,
       reason = CASE WHEN state = 'baking' THEN reason ELSE $2 END, retry_at = NULL
     WHERE deployment_id = $1 AND state IN ('pending', 'retrying', 'baking') RETURNING 1`,
    [deploymentId, reason],
  );
  return rows.length;
}

/**
 * Keeps the waiting for device locks visible: a device row `queued` whose attempt waits for its
 * locked device (not yet overridden by force_after) carries reason `locked` and the lock's reason
 * as detail; once the device is released (or its attempt overrides the lock, or goes out) the
 * reason goes. Driven by the locked devices and the rows marked (both partial indexes), so a pass
 * reads nothing of the deployments no lock concerns. Its state is left alone: waiting is not a
 * state, and the counts' buckets see the reason.
 */
export async function markLockedWaiting(db: Queryable): Promise<void> {
  await db.query(
    `WITH waiting AS (
       SELECT u.deployment_id, u.device_id, u.id AS update_id, d.lock_reason
       FROM devices d
       JOIN ota_updates u ON u.organization_id = d.organization_id AND u.device_id = d.device_id
         AND u.status IN ('queued', 'dispatched', 'in_progress') AND u.deployment_id IS NOT NULL
       WHERE d.lock_since IS NOT NULL AND (d.lock_until IS NULL OR d.lock_until > now())
         AND u.status = 'queued' AND (u.override_lock_at IS NULL OR u.override_lock_at > now())
     ), marked AS (
       UPDATE deployment_devices m SET reason = 'locked', detail = w.lock_reason
       FROM waiting w
       WHERE m.deployment_id = w.deployment_id AND m.device_id = w.device_id AND m.update_id = w.update_id
         AND m.state = 'queued' AND (m.reason IS DISTINCT FROM 'locked' OR m.detail IS DISTINCT FROM w.lock_reason)
       RETURNING m.deployment_id
     )
     UPDATE deployment_devices m SET reason = NULL, detail = NULL
     WHERE m.reason = 'locked'
       AND NOT EXISTS (SELECT 1 FROM waiting w WHERE w.deployment_id = m.deployment_id AND w.device_id = m.device_id
                         AND w.update_id = m.update_id AND m.state = 'queued')`,
  );
}

/** A device the rolled-back deployment had updated, with what it runs now and what holds it elsewhere. */
export interface RollbackCandidate {
  device_id: string;
  from_version: string;
  current_version: string;
  held_by: string | null;
}

/**
 * Devices the deployment put on its version (they committed it) whose rollback is not decided
 * yet, with what holds them elsewhere (the caller has entered the organization's doors).
 */
export function claimRollbackCandidates(tx: Queryable, deploymentId: string, limit: number) {
  return tx.query<RollbackCandidate>(
    `SELECT m.device_id, m.from_version, d.current_version, ${holderOf('d', '$1::text')} AS held_by
     FROM deployment_devices m
     JOIN devices d ON d.organization_id = m.organization_id AND d.device_id = m.device_id
     WHERE m.deployment_id = $1 AND m.committed_at IS NOT NULL AND m.rollback_status IS NULL
       AND m.state NOT IN ('queued', 'in_progress')
     ORDER BY m.batch_index, m.ordinal, m.device_id LIMIT $2
     FOR UPDATE OF m SKIP LOCKED`,
    [deploymentId, limit],
  );
}

/**
 * Devices that could not get an attempt (another update holds them): skipped, with why. Their
 * rows were pointed at an attempt that was never created (its insert met the other update).
 */
export async function skipDevices(
  tx: Queryable,
  deploymentId: string,
  skipped: readonly { deviceId: string; reason: string; detail: string | null }[],
) {
  if (skipped.length === 0) return;
  await tx.query(
    `UPDATE deployment_devices m SET state = 'skipped', reason = s.reason, detail = s.detail, retry_at = NULL
     FROM unnest($2::text[], $3::text[], $4::text[]) AS s(device_id, reason, detail)
     WHERE m.deployment_id = $1 AND m.device_id = s.device_id
       AND (m.state IN ('pending', 'retrying')
            OR (m.state = 'queued' AND NOT EXISTS (SELECT 1 FROM ota_updates u WHERE u.id = m.update_id)))`,
    [deploymentId, skipped.map((s) => s.deviceId), skipped.map((s) => s.reason), skipped.map((s) => s.detail)],
  );
}

/** A dynamic deployment's devices left out as busy that nothing holds any more: into its last batch. */
export async function takeFreedBusyDevices(db: Queryable, deploymentId: string): Promise<number> {
  const rows = await db.query(
    `UPDATE deployment_devices m SET state = 'pending', reason = NULL, detail = NULL,
       batch_index = (SELECT max(batch_index) FROM deployment_batches WHERE deployment_id = $1)
     FROM devices d
     WHERE m.deployment_id = $1 AND m.state = 'skipped' AND m.reason = 'busy'
       AND d.organization_id = m.organization_id AND d.device_id = m.device_id
       AND ${holderOf('d', '$1::text')} IS NULL
     RETURNING 1`,
    [deploymentId],
  );
  return rows.length;
}

export async function lastBatchIndex(db: Queryable, deploymentId: string): Promise<number> {
  const [row] = await db.query<{ last: number | null }>(
    'SELECT max(batch_index) AS last FROM deployment_batches WHERE deployment_id = $1',
    [deploymentId],
  );
  return row?.last ?? 0;
}

/** A dynamic deployment has matched the devices changed up to `seq`. */
export async function setMatchedSeq(db: Queryable, deploymentId: string, seq: number) {
  await db.query('UPDATE deployments SET matched_seq = greatest(matched_seq, $2) WHERE id = $1', [deploymentId, seq]);
}

/** Rollbacks the pass decided not to queue: the device no longer runs the version, or another holds it. */
export async function skipRollbacks(
  tx: Queryable,
  deploymentId: string,
  skipped: readonly { deviceId: string; reason: string; detail: string | null }[],
) {
  if (skipped.length === 0) return;
  await tx.query(
    `UPDATE deployment_devices m SET rollback_status = 'skipped', rollback_reason = s.reason,
       detail = coalesce(s.detail, m.detail)
     FROM unnest($2::text[], $3::text[], $4::text[]) AS s(device_id, reason, detail)
     WHERE m.deployment_id = $1 AND m.device_id = s.device_id AND m.rollback_status IS NULL`,
    [deploymentId, skipped.map((s) => s.deviceId), skipped.map((s) => s.reason), skipped.map((s) => s.detail)],
  );
}

/**
 * Settles an ended deployment with nothing left to do: no attempt of it still waits for or runs
 * on a device, and (rolled back) every device it updated has its rollback decided and ended.
 */
export async function settleIfDone(db: Queryable, id: string): Promise<boolean> {
  const rows = await db.query(
    `UPDATE deployments p SET settled = true
     WHERE p.id = $1 AND NOT p.settled AND NOT (p.state = ANY($2::text[]))
       AND NOT EXISTS (SELECT 1 FROM ota_updates u WHERE u.deployment_id = p.id AND u.status = ANY($3::text[]))
       AND (p.state <> 'rolled_back' OR NOT EXISTS (
         SELECT 1 FROM deployment_devices m WHERE m.deployment_id = p.id AND m.committed_at IS NOT NULL
           AND (m.rollback_status IS NULL OR m.rollback_status = ANY($3::text[]))))
     RETURNING 1`,
    [id, OPEN, ACTIVE],
  );
  return rows.length > 0;
}

/** Running attempts of cancelled, unsettled deployments on devices whose tunnel `nodeId` holds: what gets ota_cancel. */
export function listCancellableOnNode(
  db: Queryable,
  nodeId: string,
): Promise<{ id: string; organization_id: string; device_id: string; deployment_id: string }[]> {
  return db.query(
    `SELECT u.id, u.organization_id, u.device_id, u.deployment_id FROM deployments p
     JOIN ota_updates u ON u.deployment_id = p.id AND u.kind = 'update' AND u.status IN ('dispatched', 'in_progress')
     JOIN devices d ON d.organization_id = u.organization_id AND d.device_id = u.device_id
     WHERE NOT p.settled AND p.state = 'cancelled' AND d.connected_node = $1`,
    [nodeId],
  );
}

/** Devices baking in some deployment whose tunnel `nodeId` holds, with their deployment's bake. */
export function listBakingOnNode(
  db: Queryable,
  nodeId: string,
): Promise<{ organization_id: string; device_id: string; deployment_id: string; bake_minutes: number }[]> {
  return db.query(
    `SELECT m.organization_id, m.device_id, m.deployment_id, (p.settings->>'bake_minutes')::float8 AS bake_minutes
     FROM deployments p
     JOIN deployment_devices m ON m.deployment_id = p.id AND m.state = 'baking'
     JOIN devices d ON d.organization_id = m.organization_id AND d.device_id = m.device_id
     WHERE NOT p.settled AND d.connected_node = $1`,
    [nodeId],
  );
}
