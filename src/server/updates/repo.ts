import { EVENT_AT_SQL, MAX_EVENT_TEXT, notifySql } from '../events/feed.ts';
import { arrayParam, type Queryable } from '../infra/db.ts';
import { ACTIVE_STATUSES, REPORTED_STATUSES, TERMINAL_STATUSES, type UpdateStatus } from '../model/update-status.ts';

/** An update the server ordered, a rollback, or a version change it observed (history only). */
export type UpdateKind = 'update' | 'rollback' | 'observed';

export interface UpdateRow {
  id: string;
  organization_id: string;
  device_id: string;
  deployment_id: string | null;
  kind: UpdateKind;
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
  /** From when it is sent despite the device's update lock (force_after, force_lock); null: it waits for the release. */
  override_lock_at: Date | null;
  dispatched_at: Date | null;
  last_report_at: Date | null;
  deadline_at: Date | null;
  finished_at: Date | null;
  created_at: Date;
  updated_at: Date;
  /** An observed install from an offline bundle: the bundle's id (else null). */
  offline_bundle_id: string | null;
  /** The download rate the device is given (its share of a byte budget); null: unlimited. */
  max_bytes_per_second: number | null;
}

const COLUMNS = `id, organization_id, device_id, deployment_id, kind, target_version, from_version, force, status,
  phase, progress, error_code, error_message, attempts, timeout_seconds, override_lock_at, dispatched_at, last_report_at,
  deadline_at, finished_at, created_at, updated_at, offline_bundle_id, max_bytes_per_second`;
const ACTIVE = [...ACTIVE_STATUSES];
/** `column` is an active status, as literal SQL: what lets the planner use the partial indexes on them. */
const activeIn = (column: string) => `${column} IN (${ACTIVE.map((status) => `'${status}'`).join(', ')})`;

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
  /** From when it overrides the device's update lock; absent: it waits for the release. */
  overrideLockAt?: Date | null;
  /**
   * Created already claimed (`dispatched`, its deadline running) by the process that holds the
   * device's tunnel and sends the command at once: a deployment's chunk skips the queue.
   */
  dispatched?: boolean;
  /** The download rate the device is given (a deployment's byte budget shared out); absent: unlimited. */
  maxBytesPerSecond?: number | null;
  /** When its device's maintenance window closes: not claimed after (deployments/windows-held.ts); absent: no window. */
  windowEndsAt?: Date | null;
}

export async function findUpdate(db: Queryable, organizationId: string, id: string) {
  const [row] = await db.query<UpdateRow>(`SELECT ${COLUMNS} FROM ota_updates WHERE organization_id = $1 AND id = $2`, [
    organizationId,
    id,
  ]);
  return row;
}

/** Many updates by id (ids are unique across organizations), in one statement: a burst of results asks for thousands. */
export function findUpdates(db: Queryable, ids: readonly string[]): Promise<UpdateRow[]> {
  return db.query<UpdateRow>(`SELECT ${COLUMNS} FROM ota_updates WHERE id = ANY($1::text[])`, [ids]);
}

/**
 * Each device's current update: its active one (at most one, by ota_updates_one_active_idx), else
 * the latest the server ordered (observed changes aside), which may have ended a moment ago; a
 * device with none is absent from the answer. One statement for many devices: a fleet
 * reconnecting asks for thousands at once.
 */
export function findCurrentUpdates(
  db: Queryable,
  devices: readonly { organizationId: string; deviceId: string }[],
): Promise<UpdateRow[]> {
  return db.query<UpdateRow>(
    `SELECT u.* FROM unnest($1::text[], $2::text[]) AS d(org, dev)
     CROSS JOIN LATERAL (
       SELECT ${COLUMNS} FROM ota_updates
       WHERE organization_id = d.org AND device_id = d.dev AND kind <> 'observed'
       ORDER BY ${activeIn('status')} DESC, created_at DESC, id DESC LIMIT 1
     ) u`,
    [devices.map((device) => device.organizationId), devices.map((device) => device.deviceId)],
  );
}

/** A device's updates (as `u`) newest first, along ota_updates_device_idx: its latest update is the first. */
const NEWEST_FIRST = 'ORDER BY u.created_at DESC, u.id DESC';

export async function latestUpdate(db: Queryable, organizationId: string, deviceId: string) {
  const [row] = await db.query<UpdateRow>(
    `SELECT ${COLUMNS} FROM ota_updates u WHERE u.organization_id = $1 AND u.device_id = $2 ${NEWEST_FIRST} LIMIT 1`,
    [organizationId, deviceId],
  );
  return row;
}

/**
 * The device's latest update or rollback that ended (not an observed change): what the server
 * last put it on, or failed to. Updates still queued or under way are not what it runs.
 */
export async function latestFinishedUpdate(db: Queryable, organizationId: string, deviceId: string) {
  const [row] = await db.query<UpdateRow>(
    `SELECT ${COLUMNS} FROM ota_updates u WHERE u.organization_id = $1 AND u.device_id = $2
       AND u.kind <> 'observed' AND u.status IN ('completed', 'failed', 'timed_out', 'cancelled')
     ${NEWEST_FIRST} LIMIT 1`,
    [organizationId, deviceId],
  );
  return row;
}

/** What a list of devices shows of each one's latest update (any kind). */
export interface LatestUpdateSummary {
  status: UpdateStatus;
  kind: 'update' | 'rollback';
  target_version: string;
  progress: number;
  phase: string | null;
  deployment_id: string | null;
  error_code: string | null;
  updated_at: Date;
  /** An install from an offline bundle: the bundle. */
  offline_bundle_id: string | null;
}

/**
 * `LEFT JOIN LATERAL` of the latest update (any kind) of each row of `device` (an alias of
 * `devices`), as `latest` with the LatestUpdateSummary columns (`latest.status` null: it never
 * had one): the row the OTA record shows, one index probe per device.
 */
export function latestUpdateJoin(device: string): string {
  return `LEFT JOIN LATERAL (
       SELECT u.status, u.kind, u.target_version, u.progress, u.phase, u.deployment_id, u.error_code, u.updated_at,
         u.offline_bundle_id
       FROM ota_updates u WHERE ${sameDevice('u', device)} ${NEWEST_FIRST} LIMIT 1
     ) AS latest ON true`;
}

/** `u` is a row of device `device` (an alias of `devices` or of `ota_updates`). */
const sameDevice = (u: string, device: string) =>
  `${u}.organization_id = ${device}.organization_id AND ${u}.device_id = ${device}.device_id`;

/**
 * The latest update (by NEWEST_FIRST) of each row of `device` has the status `status` (an SQL
 * expression). Written as EXISTS of a row with no newer one, not on latestUpdateJoin, so that
 * a count over a whole fleet is a hash join over the updates in that status instead of one
 * probe per device (about five times faster on 100,000 devices), while a page still walks the
 * devices by id.
 */
export function latestUpdateStatusIs(device: string, status: string): string {
  return `EXISTS (
       SELECT 1 FROM ota_updates u WHERE ${sameDevice('u', device)} AND u.status = ${status}
         AND NOT EXISTS (
           SELECT 1 FROM ota_updates n WHERE ${sameDevice('n', 'u')} AND (n.created_at, n.id) > (u.created_at, u.id)))`;
}

/** Each row of `device` never had an update. */
export function neverUpdated(device: string): string {
  return `NOT EXISTS (SELECT 1 FROM ota_updates u WHERE ${sameDevice('u', device)})`;
}

export function listDeviceUpdates(db: Queryable, organizationId: string, deviceId: string, limit: number) {
  return db.query<UpdateRow>(
    `SELECT ${COLUMNS} FROM ota_updates u WHERE u.organization_id = $1 AND u.device_id = $2 ${NEWEST_FIRST} LIMIT $3`,
    [organizationId, deviceId, limit],
  );
}

/** Failures of one kind: updates that ended failed or timed out with that error code. */
export interface FailureGroupRow {
  error_code: string;
  count: number;
  last_at: Date;
  last_message: string | null;
  /** The devices that failed so most recently, at most five, the most recent first. */
  device_ids: string[];
}

/**
 * The organization's updates that ended `failed` or `timed_out` since `since`, grouped by error
 * code (without one: `timed_out` for a timeout, `unknown` for a failure), the largest groups first.
 */
export function listFailureGroups(
  db: Queryable,
  organizationId: string,
  since: Date,
  limit: number,
): Promise<FailureGroupRow[]> {
  return db.query<FailureGroupRow>(
    `WITH f AS (
       SELECT id, device_id, finished_at, error_message,
         coalesce(error_code, CASE WHEN status = 'timed_out' THEN 'timed_out' ELSE 'unknown' END) AS code
       FROM ota_updates
       WHERE organization_id = $1 AND status IN ('failed', 'timed_out') AND finished_at >= $2
     ), groups AS (
       SELECT code, count(*)::int AS count, max(finished_at) AS last_at,
         (array_agg(error_message ORDER BY finished_at DESC, id DESC))[1] AS last_message
       FROM f GROUP BY code
       ORDER BY count DESC, last_at DESC, code LIMIT $3
     ), devices AS (
       SELECT code, device_id, row_number() OVER (PARTITION BY code ORDER BY max(finished_at) DESC, device_id) AS rank
       FROM f WHERE code IN (SELECT code FROM groups) GROUP BY code, device_id
     )
     SELECT g.code AS error_code, g.count, g.last_at, g.last_message,
       coalesce((SELECT array_agg(d.device_id ORDER BY d.rank) FROM devices d WHERE d.code = g.code AND d.rank <= 5),
         '{}') AS device_ids
     FROM groups g ORDER BY g.count DESC, g.last_at DESC, g.code`,
    [organizationId, since, limit],
  );
}

/**
 * The partial unique index of migration 001 (one active update per device). Its predicate is
 * literal SQL, which `ON CONFLICT` must repeat to infer the index; a test checks that it lists
 * ACTIVE_STATUSES and that the database's index says the same.
 */
export const ONE_ACTIVE_PER_DEVICE = `(organization_id, device_id) WHERE ${activeIn('status')}`;

/** The organization's updates waiting for or being worked on by a device (along the index above). */
export async function countActiveUpdates(db: Queryable, organizationId: string): Promise<number> {
  const [row] = await db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM ota_updates WHERE organization_id = $1 AND ${activeIn('status')}`,
    [organizationId],
  );
  return row?.n ?? 0;
}

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
 * A statement that changes more rows than this announces them as `ota_bulk` events (one per
 * organization, deployment and status change) instead of one `ota` event each: ten thousand
 * notifications would cost every listening process more than the change itself.
 */
export const BULK_EVENT_ROWS = 100;

const OTA_BULK_EVENT = notifySql(
  'ota_bulk',
  `json_build_object(
     'organization_id', c.organization_id, 'deployment_id', c.deployment_id, 'status', c.status,
     'previous_status', c.previous_status, 'count', count(*), 'at', ${EVENT_AT_SQL})`,
);

/**
 * The end of every writing statement: the changed rows `c` (with `previous_status`, and
 * `phase_before`/`progress_before` for an update) returned, and announced — one `ota` event per
 * row that really changed, or `ota_bulk` events when the statement changed many.
 */
function announceChanged(columns: string, changed: string): string {
  return `, changed_rows AS MATERIALIZED (SELECT count(*) AS total FROM c)
     SELECT ${columns} FROM c
     CROSS JOIN changed_rows
     LEFT JOIN LATERAL (
       SELECT ${OTA_EVENT} WHERE ${changed} AND changed_rows.total <= ${BULK_EVENT_ROWS}
     ) AS announced ON true
     LEFT JOIN (
       SELECT count(*) FROM (
         SELECT ${OTA_BULK_EVENT} FROM c, changed_rows
         WHERE changed_rows.total > ${BULK_EVENT_ROWS} AND c.status IS DISTINCT FROM c.previous_status
         GROUP BY c.organization_id, c.deployment_id, c.status, c.previous_status
       ) AS bulk
     ) AS announced_in_bulk ON true`;
}

/**
 * Inserts updates as `queued` (or `dispatched`, claimed by their creator), skipping devices that
 * already have an active one, and announces them (previous status null) in the same statement.
 * Only updates/transitions.ts calls this.
 */
export function insertQueued(db: Queryable, updates: readonly NewUpdate[], deadlineInSeconds: number) {
  return insertReturning<Transitioned>(db, updates, deadlineInSeconds, 'c.*');
}

/**
 * insertQueued for a deployment's attempts: the statement answers only the ids it inserted (a
 * device with an active update gets none), and each attempt is made from what was asked, sharing
 * its strings (10,000 rows read back were 80 ms of parsing and garbage in P1's window).
 */
export async function insertAttempts(
  db: Queryable,
  updates: readonly NewUpdate[],
  deadlineInSeconds: number,
): Promise<Attempt[]> {
  const inserted = new Set(
    (await insertReturning<{ id: string }>(db, updates, deadlineInSeconds, 'c.id')).map((row) => row.id),
  );
  const attempts: Attempt[] = [];
  for (const update of updates) {
    if (!inserted.has(update.id)) continue;
    attempts.push({
      id: update.id,
      organization_id: update.organizationId,
      device_id: update.deviceId,
      deployment_id: update.deploymentId,
      kind: update.kind,
      target_version: update.targetVersion,
      from_version: update.fromVersion,
      force: update.force,
      override_lock_at: update.overrideLockAt ?? null,
      max_bytes_per_second: update.maxBytesPerSecond ?? null,
      status: update.dispatched ? 'dispatched' : 'queued',
      previous_status: null,
      error_code: null,
      error_message: null,
    });
  }
  return attempts;
}

/** The insert both answer through; `columns`, what the statement answers of each row (`c`). */
function insertReturning<T>(
  db: Queryable,
  updates: readonly NewUpdate[],
  deadlineInSeconds: number,
  columns: string,
): Promise<T[]> {
  return db.query<T>(
    `WITH c AS (
       INSERT INTO ota_updates (id, organization_id, device_id, deployment_id, kind, target_version, from_version,
         force, timeout_seconds, override_lock_at, status, attempts, dispatched_at, deadline_at, max_bytes_per_second,
         window_ends_at)
       SELECT n.id, n.organization_id, n.device_id, n.deployment_id, n.kind, n.target_version, n.from_version, n.force,
         n.timeout_seconds, n.override_lock_at, CASE WHEN n.dispatched THEN 'dispatched' ELSE 'queued' END,
         CASE WHEN n.dispatched THEN 1 ELSE 0 END, CASE WHEN n.dispatched THEN now() END,
         CASE WHEN n.dispatched THEN now() + make_interval(secs => coalesce(n.timeout_seconds, $11::int)) END,
         n.max_bytes_per_second, n.window_ends_at
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::boolean[],
         $9::int[], $10::boolean[], $12::timestamptz[], $13::int[], $14::timestamptz[])
         AS n(id, organization_id, device_id, deployment_id, kind, target_version, from_version, force, timeout_seconds,
           dispatched, override_lock_at, max_bytes_per_second, window_ends_at)
       ON CONFLICT ${ONE_ACTIVE_PER_DEVICE} DO NOTHING
       RETURNING ${COLUMNS}, NULL::text AS previous_status
     )
     ${announceChanged(columns, 'true')}`,
    [
      arrayParam(updates.map((u) => u.id)),
      arrayParam(updates.map((u) => u.organizationId)),
      arrayParam(updates.map((u) => u.deviceId)),
      arrayParam(updates.map((u) => u.deploymentId)),
      arrayParam(updates.map((u) => u.kind)),
      arrayParam(updates.map((u) => u.targetVersion)),
      arrayParam(updates.map((u) => u.fromVersion)),
      arrayParam(updates.map((u) => u.force)),
      arrayParam(updates.map((u) => u.timeoutSeconds ?? null)),
      arrayParam(updates.map((u) => u.dispatched === true)),
      deadlineInSeconds,
      arrayParam(updates.map((u) => u.overrideLockAt?.toISOString() ?? null)),
      arrayParam(updates.map((u) => u.maxBytesPerSecond ?? null)),
      arrayParam(updates.map((u) => u.windowEndsAt?.toISOString() ?? null)),
    ],
  );
}

/**
 * Queued attempts of a deployment whose device's window opened again: they go out until it closes
 * (`ends_at`; null: the deployment has no windows any more). A claimed one is left as it is.
 */
export async function renewWindows(
  db: Queryable,
  deploymentId: string,
  renewed: readonly { update_id: string; ends_at: Date | null }[],
): Promise<void> {
  if (renewed.length === 0) return;
  await db.query(
    `UPDATE ota_updates u SET window_ends_at = w.ends_at
     FROM unnest($2::text[], $3::timestamptz[]) AS w(id, ends_at)
     WHERE u.id = w.id AND u.deployment_id = $1 AND u.status = 'queued'`,
    [
      deploymentId,
      arrayParam(renewed.map((held) => held.update_id)),
      arrayParam(renewed.map((held) => held.ends_at?.toISOString() ?? null)),
    ],
  );
}

/** An install the device made from an offline bundle, as it reported it (see insertObserved). */
export interface OfflineInstall {
  bundleId: string;
  installedAt: Date;
  status: 'completed' | 'failed';
  /** A failed install's code (the device's); null when it completed. */
  errorCode: string | null;
}

/**
 * A version change the server did not order (a fall-back after a crash, a re-flash by hand),
 * as a finished row of the device's history: `observed`, from the version on record to the one
 * it reports, with why (`reverted`, `reflashed`). Announced like any row. Only
 * updates/transitions.ts calls this.
 *
 * With `offline`, an install from an offline bundle the device reported: phase `offline`, its
 * own status and error, finished when the device installed it, the bundle named; at most one row
 * per device and bundle (a resent report inserts nothing). `alongside`: statements of the same
 * statement, for the inserted row only (`moved` = `c`), as for applyTransition.
 */
export function insertObserved(
  db: Queryable,
  observed: {
    id: string;
    organizationId: string;
    deviceId: string;
    fromVersion: string;
    toVersion: string;
    why: string;
    message: string;
    offline?: OfflineInstall;
  },
  alongside?: Alongside,
): Promise<Transitioned[]> {
  const params: unknown[] = [];
  const $ = (value: unknown) => `$${params.push(value)}`;
  const offline = observed.offline;
  const values = [
    $(observed.id),
    $(observed.organizationId),
    $(observed.deviceId),
    `'observed'`,
    $(observed.toVersion),
    $(observed.fromVersion),
    $(offline?.status ?? 'completed'),
    $(observed.why),
    '100',
    $(offline ? offline.errorCode : observed.why),
    $(observed.message),
    offline ? `${$(offline.installedAt)}::timestamptz` : 'now()',
    $(offline?.bundleId ?? null),
  ];
  return db.query<Transitioned>(
    `WITH c AS (
       INSERT INTO ota_updates (id, organization_id, device_id, kind, target_version, from_version, status, phase,
         progress, error_code, error_message, finished_at, offline_bundle_id)
       VALUES (${values.join(', ')})
       ON CONFLICT (organization_id, device_id, offline_bundle_id) WHERE offline_bundle_id IS NOT NULL DO NOTHING
       RETURNING ${COLUMNS}, NULL::text AS previous_status
     )${alongside ? `, ${alongside('c', $)}` : ''}
     ${announceChanged('c.*', 'true')}`,
    params,
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

/**
 * What sending an attempt and announcing its creation read of its row: a deployment's attempts
 * are created by the thousand and sent at once, and reading back their timestamps and counters
 * (every column) was a third of the creating statement's time in P1.
 */
export type Attempt = Pick<
  Transitioned,
  | 'id'
  | 'organization_id'
  | 'device_id'
  | 'deployment_id'
  | 'kind'
  | 'target_version'
  | 'from_version'
  | 'force'
  | 'override_lock_at'
  | 'max_bytes_per_second'
  | 'status'
  | 'previous_status'
  | 'error_code'
  | 'error_message'
>;

/** Which rows a transition applies to (each only if its status may lead to the target). */
/**
 * Statements that run inside a transition's own statement, as CTEs over the rows it moved (the
 * CTE named `moved`), their parameters added with `$`: what a result records beside its status
 * commits with it, and no transaction stays open between two statements.
 */
export type Alongside = (moved: string, $: (value: unknown) => string) => string;

export type Selection =
  | { kind: 'one'; organizationId: string; id: string; deviceId?: string | undefined }
  /**
   * Queued updates of devices whose tunnel `nodeId` holds and that said what they run on it (or
   * had five seconds to), not held by a lock or a closed maintenance window (at `now`, the
   * windows' clock), oldest first; SKIP LOCKED.
   */
  | { kind: 'claim'; nodeId: string; limit: number; now: Date }
  /** Active updates whose report deadline has passed. */
  | { kind: 'overdue' }
  /** The updates of a deployment of one kind (its devices' attempts, or its rollbacks). */
  | { kind: 'deployment'; organizationId: string; deploymentId: string; updateKind: 'update' | 'rollback' }
  /** A deployment's queued updates whose device has been offline since before `olderThanSeconds` ago. */
  | { kind: 'stale_queued'; deploymentId: string; olderThanSeconds: number }
  /** Progress reports of many devices, each with its own phase and progress (one statement per burst). */
  | { kind: 'reports'; reports: readonly ProgressReport[] }
  /** Named updates of many devices (results of a burst), each only if its device is the one named. */
  | { kind: 'rows'; rows: readonly { organizationId: string; id: string; deviceId: string }[] };

export interface ProgressReport {
  organizationId: string;
  id: string;
  deviceId: string;
  phase: string;
  progress: number;
}

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
  alongside?: Alongside,
): Promise<Transitioned[]> {
  const params: unknown[] = [];
  const $ = (value: unknown) => `$${params.push(value)}`;
  const status = $(to);
  const hasPhase = $(fields.phase !== undefined);
  const hasError = $(fields.errorCode !== undefined);
  const errorCode = $(fields.errorCode ?? null);
  const errorMessage = $(fields.errorMessage ?? null);
  const deadline = $(fields.deadlineInSeconds ?? null);
  const set = `
       status = ${status},
       phase = CASE WHEN ${hasPhase}::boolean THEN old.phase_in ELSE u.phase END,
       progress = CASE
         WHEN ${status} = 'completed' THEN 100
         WHEN old.progress_in IS NULL THEN u.progress
         WHEN u.status = ${status} THEN GREATEST(u.progress, old.progress_in)
         ELSE old.progress_in END,
       error_code = CASE WHEN ${hasError}::boolean THEN ${errorCode} ELSE u.error_code END,
       error_message = CASE WHEN ${hasError}::boolean THEN ${errorMessage} ELSE u.error_message END,
       deadline_at = CASE WHEN ${deadline}::int IS NULL THEN u.deadline_at ELSE now() + make_interval(secs => COALESCE(u.timeout_seconds, ${deadline}::int)) END,
       dispatched_at = CASE WHEN ${status} = 'dispatched' THEN now() ELSE u.dispatched_at END,
       attempts = CASE WHEN ${status} = 'dispatched' THEN u.attempts + 1 ELSE u.attempts END,
       last_report_at = CASE WHEN ${status} = ANY(${$([...REPORTED_STATUSES])}::text[]) THEN now() ELSE u.last_report_at END,
       finished_at = CASE WHEN ${status} = ANY(${$([...TERMINAL_STATUSES])}::text[]) THEN now() ELSE NULL END,
       updated_at = now()`;
  // Literal, not a parameter: the statuses come from status.ts, and a literal list lets the
  // planner use the partial indexes on them (one active update per device, the queue).
  const allowed = from.length > 0 ? `q.status IN (${from.map((status) => `'${status}'`).join(', ')})` : 'false';
  // What each selected row is before the change, and the phase and progress it is given.
  const before = `q.id, q.status, q.phase AS phase_before, q.progress AS progress_before`;
  const given = () => `${$(fields.phase ?? null)}::text AS phase_in, ${$(fields.progress ?? null)}::int AS progress_in`;
  let select: string;
  switch (selection.kind) {
    case 'one':
      {
        const deviceId = $(selection.deviceId ?? null);
        select = `SELECT ${before}, ${given()} FROM ota_updates q
          WHERE q.id = ${$(selection.id)} AND q.organization_id = ${$(selection.organizationId)}
            AND (${deviceId}::text IS NULL OR q.device_id = ${deviceId}) AND ${allowed}
          FOR UPDATE OF q`;
      }
      break;
    case 'claim':
      // Walks the queue in order (ota_updates_queued_idx), one device lookup per row: a join the
      // planner is free to turn around probes every device against every queued row.
      select = `SELECT ${before}, ${given()} FROM ota_updates q
        WHERE ${allowed} AND EXISTS (
          SELECT 1 FROM devices d
          WHERE d.organization_id = q.organization_id AND d.device_id = q.device_id
            AND d.connected_node = ${$(selection.nodeId)}
            AND (d.reported_at >= d.connected_at OR d.connected_at < now() - interval '5 seconds')
            -- A locked device's updates wait for the release, or for their lock override.
            AND (d.lock_since IS NULL OR d.lock_until <= now() OR q.override_lock_at <= now()))
          -- An attempt of a deployment under windows goes out only while its device's window is open.
          AND (q.window_ends_at IS NULL OR q.window_ends_at > ${$(selection.now.toISOString())}::timestamptz)
        ORDER BY q.created_at
        LIMIT ${$(selection.limit)}
        FOR UPDATE OF q SKIP LOCKED`;
      break;
    case 'overdue':
      select = `SELECT ${before}, ${given()} FROM ota_updates q WHERE ${allowed} AND q.deadline_at < now()
        ORDER BY q.id FOR UPDATE OF q SKIP LOCKED`;
      break;
    case 'reports': {
      const { reports } = selection;
      // Rows locked in id order: two bursts touching the same rows never deadlock.
      select = `SELECT ${before}, r.phase AS phase_in, r.progress AS progress_in
        FROM unnest(${$(reports.map((r) => r.organizationId))}::text[], ${$(reports.map((r) => r.id))}::text[],
                    ${$(reports.map((r) => r.deviceId))}::text[], ${$(reports.map((r) => r.phase))}::text[],
                    ${$(reports.map((r) => r.progress))}::int[]) AS r(organization_id, id, device_id, phase, progress)
        JOIN ota_updates q ON q.id = r.id AND q.organization_id = r.organization_id AND q.device_id = r.device_id
        WHERE ${allowed}
        ORDER BY q.id
        FOR UPDATE OF q`;
      break;
    }
    case 'rows': {
      const { rows } = selection;
      select = `SELECT ${before}, ${given()}
        FROM unnest(${$(rows.map((r) => r.organizationId))}::text[], ${$(rows.map((r) => r.id))}::text[],
                    ${$(rows.map((r) => r.deviceId))}::text[]) AS r(organization_id, id, device_id)
        JOIN ota_updates q ON q.id = r.id AND q.organization_id = r.organization_id AND q.device_id = r.device_id
        WHERE ${allowed}
        ORDER BY q.id
        FOR UPDATE OF q`;
      break;
    }
    case 'deployment':
      select = `SELECT ${before}, ${given()} FROM ota_updates q
        WHERE q.deployment_id = ${$(selection.deploymentId)} AND q.organization_id = ${$(selection.organizationId)}
          AND q.kind = ${$(selection.updateKind)} AND ${allowed}
        ORDER BY q.id
        FOR UPDATE OF q`;
      break;
    case 'stale_queued': {
      const since = `now() - make_interval(secs => ${$(selection.olderThanSeconds)}::float8)`;
      select = `SELECT ${before}, ${given()} FROM ota_updates q
        JOIN devices d ON d.organization_id = q.organization_id AND d.device_id = q.device_id
        WHERE q.deployment_id = ${$(selection.deploymentId)} AND ${allowed} AND q.created_at < ${since}
          AND NOT d.online AND coalesce(d.last_seen_at, q.created_at) < ${since}
          -- A device that went away locked is waiting for its lock, not lost.
          AND NOT (d.lock_since IS NOT NULL AND (d.lock_until IS NULL OR d.lock_until > now()))
        ORDER BY q.id
        FOR UPDATE OF q SKIP LOCKED`;
      break;
    }
  }
  return db.query<Transitioned>(
    `WITH old AS (${select}),
     c AS (
       UPDATE ota_updates AS u SET ${set}
       FROM old WHERE u.id = old.id
       RETURNING ${COLUMNS.split(',')
         .map((column) => `u.${column.trim()}`)
         .join(', ')}, old.status AS previous_status, old.phase_before, old.progress_before
     )
     ${alongside ? `, ${alongside('c', $)}` : ''}
     ${announceChanged(
       `${COLUMNS.split(',')
         .map((column) => `c.${column.trim()}`)
         .join(', ')}, c.previous_status`,
       // A repeated report that changed nothing is not announced again.
       `(c.status IS DISTINCT FROM c.previous_status OR c.phase IS DISTINCT FROM c.phase_before
         OR c.progress IS DISTINCT FROM c.progress_before)`,
     )}`,
    params,
  );
}
