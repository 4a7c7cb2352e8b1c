import { EVENT_AT_SQL, notifySql } from '../events/feed.ts';
import type { Queryable } from '../infra/db.ts';
import type { UpdateStatus } from '../model/update-status.ts';
import { type LatestUpdateSummary, latestUpdateJoin, latestUpdateStatusIs, neverUpdated } from '../updates/repo.ts';

export interface DeviceRow {
  device_id: string;
  name: string | null;
  model: string | null;
  tags: string[];
  current_version: string;
  /** The version it ran before its last successful update: its rollback target. */
  previous_version: string | null;
  /** The slot an A/B device reports it booted. */
  slot: string | null;
  online: boolean;
  last_seen_at: Date | null;
  agent_version: string | null;
  /** Why its agent cannot work, as it last said (device_info.health_error); null while it works. */
  health_error: string | null;
  /** Its update lock in force, as its agent last reported it; null: unlocked (or its `until` passed). */
  lock: DeviceLock | null;
  /** Its IANA time zone; null: its organization's. */
  timezone: string | null;
  created_at: Date;
  updated_at: Date;
}

/** A device's update lock as the server knows it (the agent's device_lock reports). */
export interface DeviceLock {
  reason: string;
  /** When it releases by itself; null: when the device says so. */
  until: Date | null;
  since: Date;
}

const COLUMNS = `device_id, name, model, tags, current_version, previous_version, slot, online, last_seen_at,
  agent_version, health_error, timezone, lock_reason, lock_until, lock_since, created_at, updated_at`;

/** The lock columns as a row reads them. */
interface LockColumns {
  lock_reason: string | null;
  lock_until: Date | null;
  lock_since: Date | null;
}

/** The lock in force at `now` from its columns: a lock past its `until` is released. */
export function lockOf(row: LockColumns, now = new Date()): DeviceLock | null {
  if (row.lock_since === null) return null;
  if (row.lock_until !== null && row.lock_until.getTime() <= now.getTime()) return null;
  return { reason: row.lock_reason ?? 'locked', until: row.lock_until, since: row.lock_since };
}

/** A device row as read (its lock columns) into a DeviceRow (its `lock`). */
function deviceOf<Row extends LockColumns>({ lock_reason, lock_until, lock_since, ...rest }: Row) {
  return { ...rest, lock: lockOf({ lock_reason, lock_until, lock_since }) };
}

/** SQL: the device (as `alias`) is locked now. */
export function lockedNowSql(alias: string): string {
  return `(${alias}.lock_since IS NOT NULL AND (${alias}.lock_until IS NULL OR ${alias}.lock_until > now()))`;
}

export interface NewDevice {
  organizationId: string;
  deviceId: string;
  name: string | null;
  model: string | null;
  tags: string[];
  currentVersion: string;
  keyHash: string;
  timezone?: string | null;
}

/**
 * Returns undefined when the organization already has a device with that id. Its registration
 * (factory) version is the first version it is known to have run (device_versions, a rollback target).
 */
export async function insertDevice(db: Queryable, device: NewDevice): Promise<DeviceRow | undefined> {
  const [row] = await db.query<RawDeviceRow>(
    `WITH inserted AS (
       INSERT INTO devices (organization_id, device_id, name, model, tags, current_version, key_hash, timezone)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
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
      device.timezone ?? null,
    ],
  );
  return row && deviceOf(row);
}

type RawDeviceRow = Omit<DeviceRow, 'lock'> & LockColumns;

export async function findDevice(
  db: Queryable,
  organizationId: string,
  deviceId: string,
): Promise<DeviceRow | undefined> {
  const [row] = await db.query<RawDeviceRow>(
    `SELECT ${COLUMNS} FROM devices WHERE organization_id = $1 AND device_id = $2`,
    [organizationId, deviceId],
  );
  return row && deviceOf(row);
}

export interface DeviceFilter {
  tags?: string[] | undefined;
  model?: string | undefined;
  version?: string | undefined;
  online?: boolean | undefined;
  /** Case-insensitive substring of the device id or name, taken literally (% and _ too). */
  q?: string | undefined;
  /** The status of its latest update (any kind); `none`: it never had one. */
  otaStatus?: UpdateStatus | 'none' | undefined;
}

export interface DevicePage {
  /** Keyset pagination: devices whose id sorts after this one. */
  after?: string | undefined;
  limit: number;
}

export type ListedDeviceRow = DeviceRow & { ota: LatestUpdateSummary | null };

/** `%text%` for ILIKE … ESCAPE '\': every character of `text` matches itself, the wildcards % and _ and \ too. */
export function containsPattern(text: string): string {
  return `%${text.replace(/[\\%_]/g, '\\$&')}%`;
}

/**
 * The FROM … WHERE of the organization's devices matching `filter`, as `d`, with `latest`
 * (updates/repo.ts latestUpdateJoin) joined when asked for. `$` adds a parameter.
 */
function matchingDevices(
  organizationId: string,
  filter: DeviceFilter,
  $: (value: unknown) => string,
  withLatest: boolean,
): string {
  const conditions = [`d.organization_id = ${$(organizationId)}`];
  if (filter.tags?.length) conditions.push(`d.tags @> ${$(filter.tags)}::text[]`);
  if (filter.model !== undefined) conditions.push(`d.model = ${$(filter.model)}`);
  if (filter.version !== undefined) conditions.push(`d.current_version = ${$(filter.version)}`);
  if (filter.online !== undefined) conditions.push(`d.online = ${$(filter.online)}`);
  if (filter.q !== undefined) {
    const pattern = $(containsPattern(filter.q));
    conditions.push(`(d.device_id ILIKE ${pattern} ESCAPE '\\' OR d.name ILIKE ${pattern} ESCAPE '\\')`);
  }
  if (filter.otaStatus === 'none') conditions.push(neverUpdated('d'));
  else if (filter.otaStatus !== undefined) conditions.push(latestUpdateStatusIs('d', $(filter.otaStatus)));
  return `FROM devices d ${withLatest ? latestUpdateJoin('d') : ''} WHERE ${conditions.join(' AND ')}`;
}

function parameters() {
  const params: unknown[] = [];
  return { params, $: (value: unknown) => `$${params.push(value)}` };
}

type OtaColumns = { [column in keyof LatestUpdateSummary as `ota_${column}`]: LatestUpdateSummary[column] | null };

/**
 * A page of the organization's devices matching `filter`, in natural order of their ids
 * (austin-2 before austin-10: `sort_key`, migration 009), each with its latest update.
 */
export async function listDevices(
  db: Queryable,
  organizationId: string,
  filter: DeviceFilter,
  page: DevicePage,
): Promise<ListedDeviceRow[]> {
  const { params, $ } = parameters();
  const from = matchingDevices(organizationId, filter, $, true);
  const after =
    page.after === undefined
      ? ''
      : `AND (d.sort_key, d.device_id) > (natural_sort_key(${$(page.after)}) COLLATE "C", ${$(page.after)})`;
  const rows = await db.query<RawDeviceRow & OtaColumns>(
    `SELECT ${COLUMNS.split(',')
      .map((column) => `d.${column.trim()}`)
      .join(', ')},
       latest.status AS ota_status, latest.kind AS ota_kind, latest.target_version AS ota_target_version,
       latest.progress AS ota_progress, latest.phase AS ota_phase, latest.deployment_id AS ota_deployment_id,
       latest.error_code AS ota_error_code, latest.updated_at AS ota_updated_at,
       latest.offline_bundle_id AS ota_offline_bundle_id
     ${from} ${after}
     ORDER BY d.sort_key, d.device_id
     LIMIT ${$(page.limit)}`,
    params,
  );
  return rows.map(
    ({
      ota_status,
      ota_kind,
      ota_target_version,
      ota_progress,
      ota_phase,
      ota_deployment_id,
      ota_error_code,
      ota_updated_at,
      ota_offline_bundle_id,
      ...device
    }) => ({
      ...deviceOf(device),
      ota:
        ota_status === null
          ? null
          : {
              status: ota_status,
              kind: ota_kind!,
              target_version: ota_target_version!,
              progress: ota_progress!,
              phase: ota_phase,
              deployment_id: ota_deployment_id,
              error_code: ota_error_code,
              updated_at: ota_updated_at!,
              offline_bundle_id: ota_offline_bundle_id,
            },
    }),
  );
}

/** How many of the organization's devices match `filter` (no page: all of them). */
export async function countDevices(db: Queryable, organizationId: string, filter: DeviceFilter): Promise<number> {
  const { params, $ } = parameters();
  const [row] = await db.query<{ n: number }>(
    `SELECT count(*)::int AS n ${matchingDevices(organizationId, filter, $, false)}`,
    params,
  );
  return row?.n ?? 0;
}

/** The organization's devices per version they run (with how many are online), most devices first. */
export function countDevicesByVersion(db: Queryable, organizationId: string) {
  return db.query<{ version: string; devices: number; online: number }>(
    `SELECT current_version AS version, count(*)::int AS devices, (count(*) FILTER (WHERE online))::int AS online
     FROM devices WHERE organization_id = $1
     GROUP BY current_version ORDER BY devices DESC, version`,
    [organizationId],
  );
}

/** The organization's devices per model (null: none given), most devices first. */
export function countDevicesByModel(db: Queryable, organizationId: string) {
  return db.query<{ model: string | null; devices: number }>(
    `SELECT model, count(*)::int AS devices FROM devices WHERE organization_id = $1
     GROUP BY model ORDER BY devices DESC, model NULLS LAST`,
    [organizationId],
  );
}

/** The `limit` tags most of the organization's devices carry, most devices first. */
export function countDevicesByTag(db: Queryable, organizationId: string, limit: number) {
  return db.query<{ tag: string; devices: number }>(
    `SELECT tag, count(*)::int AS devices FROM devices, unnest(tags) AS tag WHERE organization_id = $1
     GROUP BY tag ORDER BY devices DESC, tag LIMIT $2`,
    [organizationId, limit],
  );
}

export interface DevicePatch {
  name?: string | null | undefined;
  model?: string | null | undefined;
  tags?: string[] | undefined;
  timezone?: string | null | undefined;
}

export async function patchDevice(
  db: Queryable,
  organizationId: string,
  deviceId: string,
  patch: DevicePatch,
): Promise<DeviceRow | undefined> {
  const [row] = await db.query<RawDeviceRow>(
    `UPDATE devices SET
       name = CASE WHEN $3 THEN $4 ELSE name END,
       model = CASE WHEN $5 THEN $6 ELSE model END,
       tags = COALESCE($7::text[], tags),
       timezone = CASE WHEN $8 THEN $9 ELSE timezone END,
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
      patch.timezone !== undefined,
      patch.timezone ?? null,
    ],
  );
  return row && deviceOf(row);
}

/** Deletes the device and announces it (`device_deleted`: the process holding its tunnel closes it). */
export async function deleteDevice(db: Queryable, organizationId: string, deviceId: string): Promise<boolean> {
  const rows = await db.query(
    `WITH c AS (DELETE FROM devices WHERE organization_id = $1 AND device_id = $2 RETURNING organization_id, device_id)
     SELECT 1 FROM c, LATERAL (SELECT ${notifySql(
       'device_deleted',
       `json_build_object('organization_id', c.organization_id, 'device_id', c.device_id, 'at', ${EVENT_AT_SQL})`,
     )}) AS announced`,
    [organizationId, deviceId],
  );
  return rows.length > 0;
}

/** The devices these tunnel keys belong to, with their organization (unknown keys are absent). */
export function findDevicesByKeyHashes(db: Queryable, keyHashes: string[]) {
  return db.query<{ organization_id: string; device_id: string; key_hash: string }>(
    'SELECT organization_id, device_id, key_hash FROM devices WHERE key_hash = ANY($1::text[])',
    [keyHashes],
  );
}

/** Announces the presence of each changed row `c` (see events/feed.ts). */
const announcePresence = (online: boolean) =>
  `SELECT 1 FROM c, LATERAL (SELECT ${notifySql(
    'device',
    `json_build_object('organization_id', c.organization_id, 'device_id', c.device_id, 'online', ${online},
       'at', ${EVENT_AT_SQL})`,
  )}) AS announced`;

/** Marks the devices online, their tunnel held by `nodeId`, in one statement. */
export async function markOnline(
  db: Queryable,
  nodeId: string,
  devices: readonly { organizationId: string; deviceId: string; agentVersion: string | null }[],
): Promise<void> {
  await db.query(
    `WITH c AS (
       UPDATE devices AS d SET online = true, connected_node = $1, last_seen_at = now(), connected_at = now(),
         agent_version = COALESCE(s.agent_version, d.agent_version)
       FROM unnest($2::text[], $3::text[], $4::text[]) AS s(organization_id, device_id, agent_version)
       WHERE d.organization_id = s.organization_id AND d.device_id = s.device_id
       RETURNING d.organization_id, d.device_id
     ) ${announcePresence(true)}`,
    [nodeId, devices.map((d) => d.organizationId), devices.map((d) => d.deviceId), devices.map((d) => d.agentVersion)],
  );
}

/** Only the devices `nodeId` still holds: one may already be connected elsewhere. */
export async function markOffline(
  db: Queryable,
  nodeId: string,
  devices: readonly { organizationId: string; deviceId: string }[],
): Promise<void> {
  await db.query(
    `WITH c AS (
       UPDATE devices AS d SET online = false, connected_node = NULL, last_seen_at = now()
       FROM unnest($2::text[], $3::text[]) AS s(organization_id, device_id)
       WHERE d.organization_id = s.organization_id AND d.device_id = s.device_id AND d.connected_node = $1
       RETURNING d.organization_id, d.device_id
     ) ${announcePresence(false)}`,
    [nodeId, devices.map((d) => d.organizationId), devices.map((d) => d.deviceId)],
  );
}

/**
 * Devices whose tunnel a node held that is no longer registered (it stopped, crashed or was
 * declared dead) are offline, or those of `nodeId` alone. Returns how many went offline.
 */
export async function markOfflineOfMissingNodes(db: Queryable, nodeId?: string): Promise<number> {
  const rows = await db.query(
    `WITH c AS (
       UPDATE devices SET online = false, connected_node = NULL
       WHERE connected_node IS NOT NULL
         AND CASE WHEN $1::text IS NULL THEN connected_node NOT IN (SELECT id FROM server_nodes)
                  ELSE connected_node = $1 END
       RETURNING organization_id, device_id
     ) ${announcePresence(false)}`,
    [nodeId ?? null],
  );
  return rows.length;
}

/** One statement for every device seen since the last flush. */
export async function touchLastSeen(
  db: Queryable,
  seen: readonly { organizationId: string; deviceId: string; at: Date }[],
): Promise<void> {
  if (seen.length === 0) return;
  await db.query(
    `UPDATE devices AS d SET last_seen_at = s.at
     FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS s(organization_id, device_id, at)
     WHERE d.organization_id = s.organization_id AND d.device_id = s.device_id`,
    [seen.map((s) => s.organizationId), seen.map((s) => s.deviceId), seen.map((s) => s.at)],
  );
}

/** What the devices say they run, in one statement. */
/**
 * What devices say they run (and the slot they booted) on every connect, batched: the record
 * follows the device. Returns the devices whose version changed, with the version on record
 * before, so the change can be explained and kept in their history.
 */
export async function reportCurrentVersions(
  db: Queryable,
  reports: readonly {
    organizationId: string;
    deviceId: string;
    currentVersion: string;
    agentVersion: string | null;
    slot: string | null;
    timezone?: string | null;
  }[],
): Promise<{ organization_id: string; device_id: string; previous_version: string; current_version: string }[]> {
  return db.query(
    `WITH s AS (
       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
         AS s(organization_id, device_id, current_version, agent_version, slot, timezone)
     ), old AS (
       SELECT d.organization_id, d.device_id, d.current_version FROM devices d
       JOIN s ON s.organization_id = d.organization_id AND s.device_id = d.device_id
       ORDER BY d.organization_id, d.device_id FOR UPDATE OF d
     )
     UPDATE devices AS d SET current_version = s.current_version, reported_at = now(),
       agent_version = COALESCE(s.agent_version, d.agent_version), slot = COALESCE(s.slot, d.slot),
       timezone = COALESCE(d.timezone, s.timezone),
       updated_at = CASE WHEN d.current_version <> s.current_version THEN now() ELSE d.updated_at END
     FROM s, old
     WHERE d.organization_id = s.organization_id AND d.device_id = s.device_id
       AND old.organization_id = d.organization_id AND old.device_id = d.device_id
     RETURNING d.organization_id, d.device_id, old.current_version AS previous_version, d.current_version`,
    [
      reports.map((r) => r.organizationId),
      reports.map((r) => r.deviceId),
      reports.map((r) => r.currentVersion),
      reports.map((r) => r.agentVersion),
      reports.map((r) => r.slot),
      reports.map((r) => r.timezone ?? null),
    ],
  );
}

/**
 * What the devices say of their agent's health at connect: the start-up error, or null when they
 * work again. One statement per burst; rows already saying the same are left alone.
 */
export async function recordHealthErrors(
  db: Queryable,
  reports: readonly { organizationId: string; deviceId: string; healthError: string | null }[],
): Promise<void> {
  await db.query(
    `UPDATE devices AS d SET health_error = s.health_error, updated_at = now()
     FROM unnest($1::text[], $2::text[], $3::text[]) AS s(organization_id, device_id, health_error)
     WHERE d.organization_id = s.organization_id AND d.device_id = s.device_id
       AND d.health_error IS DISTINCT FROM s.health_error`,
    [reports.map((r) => r.organizationId), reports.map((r) => r.deviceId), reports.map((r) => r.healthError)],
  );
}

/** A device's lock as its agent reported it (device_lock, device_info): `locked` false releases it. */
export interface LockReport {
  organizationId: string;
  deviceId: string;
  locked: boolean;
  reason: string | null;
  until: Date | null;
  since: Date | null;
}

/**
 * The devices' locks as their agents report them, one statement per burst; only rows whose lock
 * changed are written. Each device whose lock changed and that a deployment's attempt waits for
 * wakes the scheduler (`wake`): the deployment shows it waiting, or dispatches it once released.
 * Answers the devices whose lock changed.
 */
export async function recordLocks(
  db: Queryable,
  reports: readonly LockReport[],
): Promise<{ organization_id: string; device_id: string; locked: boolean }[]> {
  return db.query(
    `WITH s AS (
       SELECT * FROM unnest($1::text[], $2::text[], $3::boolean[], $4::text[], $5::timestamptz[], $6::timestamptz[])
         AS s(organization_id, device_id, locked, reason, until, since)
     ), c AS (
       UPDATE devices AS d SET
         lock_reason = CASE WHEN s.locked THEN s.reason END,
         lock_until = CASE WHEN s.locked THEN s.until END,
         lock_since = CASE WHEN s.locked THEN coalesce(s.since, d.lock_since, now()) END,
         lock_reported_at = now()
       FROM s
       WHERE d.organization_id = s.organization_id AND d.device_id = s.device_id
         AND CASE WHEN s.locked
               THEN d.lock_since IS NULL OR d.lock_reason IS DISTINCT FROM s.reason OR d.lock_until IS DISTINCT FROM s.until
               ELSE d.lock_since IS NOT NULL END
       RETURNING d.organization_id, d.device_id, s.locked
     ), woken AS (
       SELECT ${notifySql('wake', "json_build_object('deployment_id', u.deployment_id)")}
       FROM (SELECT DISTINCT u.deployment_id FROM c JOIN ota_updates u
               ON u.organization_id = c.organization_id AND u.device_id = c.device_id
              AND u.status IN ('queued', 'dispatched', 'in_progress') AND u.deployment_id IS NOT NULL) AS u
     )
     SELECT c.*, (SELECT count(*) FROM woken) AS woken FROM c`,
    [
      reports.map((r) => r.organizationId),
      reports.map((r) => r.deviceId),
      reports.map((r) => r.locked),
      reports.map((r) => r.reason),
      reports.map((r) => r.until?.toISOString() ?? null),
      reports.map((r) => r.since?.toISOString() ?? null),
    ],
  );
}

/**
 * What a refused command (`device_locked`) tells of a device the server thought unlocked: locked,
 * for the reason it gave, unless the device's own report came since the command was sent
 * (`sentAt`): that report is newer.
 */
export async function recordLockFromRefusal(
  db: Queryable,
  device: { organizationId: string; deviceId: string; deploymentId: string | null },
  reason: string,
  sentAt: Date,
): Promise<void> {
  await db.query(
    `WITH c AS (
       UPDATE devices SET lock_reason = $3, lock_until = NULL, lock_since = now(), lock_reported_at = now()
       WHERE organization_id = $1 AND device_id = $2 AND lock_since IS NULL
         AND (lock_reported_at IS NULL OR lock_reported_at < $4::timestamptz)
       RETURNING device_id
     )
     SELECT ${notifySql('wake', "json_build_object('deployment_id', $5::text)")} FROM c WHERE $5::text IS NOT NULL`,
    [device.organizationId, device.deviceId, reason, sentAt.toISOString(), device.deploymentId],
  );
}

/** The devices among `rows` that are locked now, with their lock. */
export async function findLocks(
  db: Queryable,
  rows: readonly { organization_id: string; device_id: string }[],
): Promise<Map<string, DeviceLock>> {
  if (rows.length === 0) return new Map();
  const found = await db.query<LockColumns & { organization_id: string; device_id: string }>(
    `SELECT organization_id, device_id, lock_reason, lock_until, lock_since FROM devices d
     WHERE d.lock_since IS NOT NULL AND ${lockedNowSql('d')}
       AND organization_id = ANY($1::text[]) AND device_id = ANY($2::text[])`,
    [[...new Set(rows.map((row) => row.organization_id))], [...new Set(rows.map((row) => row.device_id))]],
  );
  const locks = new Map<string, DeviceLock>();
  for (const row of found) {
    const lock = lockOf(row);
    if (lock) locks.set(deviceKey(row.organization_id, row.device_id), lock);
  }
  return locks;
}

/** What a device runs after an update ended (deviceVersionsSql records it). */
export interface VersionRecord {
  organizationId: string;
  deviceId: string;
  currentVersion: string;
  /** The version it may roll back to, none, or `unchanged` (kept). */
  rollbackTarget: string | null | 'unchanged';
  /** Versions it committed: kept in device_versions, last run now. */
  committed: readonly string[];
}

/**
 * The statements that record devices' versions, as CTEs (`recorded_versions`, `recorded_runs`)
 * to run inside another statement: each device's version and rollback target, and the versions
 * it committed (device_versions, last run now; a version it committed again is no longer one it
 * fell back from), for the devices of the update rows in the CTE named `moved` only: the
 * transition of a result and what it records are one statement (updates/engine.ts).
 */
export function deviceVersionsSql(
  records: readonly VersionRecord[],
  $: (value: unknown) => string,
  moved: string,
): string {
  const only = (alias: string) =>
    `JOIN ${moved} m ON m.organization_id = ${alias}.organization_id AND m.device_id = ${alias}.device_id`;
  const committed = records.flatMap((r) =>
    [...new Set(r.committed)].map((version) => ({ organizationId: r.organizationId, deviceId: r.deviceId, version })),
  );
  return `recorded_versions AS (
       UPDATE devices d SET current_version = r.current_version,
         previous_version = CASE WHEN r.unchanged THEN d.previous_version ELSE r.rollback_target END,
         updated_at = now()
       FROM unnest(${$(records.map((r) => r.organizationId))}::text[], ${$(records.map((r) => r.deviceId))}::text[],
         ${$(records.map((r) => r.currentVersion))}::text[], ${$(records.map((r) => r.rollbackTarget === 'unchanged'))}::boolean[],
         ${$(records.map((r) => (r.rollbackTarget === 'unchanged' ? null : r.rollbackTarget)))}::text[])
         AS r(organization_id, device_id, current_version, unchanged, rollback_target) ${only('r')}
       WHERE d.organization_id = r.organization_id AND d.device_id = r.device_id
     ),
     recorded_runs AS (
       INSERT INTO device_versions (organization_id, device_id, version)
       SELECT v.organization_id, v.device_id, v.version
       FROM unnest(${$(committed.map((c) => c.organizationId))}::text[], ${$(committed.map((c) => c.deviceId))}::text[],
         ${$(committed.map((c) => c.version))}::text[]) AS v(organization_id, device_id, version) ${only('v')}
       JOIN devices d ON d.organization_id = v.organization_id AND d.device_id = v.device_id
       ON CONFLICT (organization_id, device_id, version) DO UPDATE SET last_run_at = now(), reverted_at = NULL
     )`;
}

/** One device as a Map key: organization and id (ids are unique only within an organization). */
export function deviceKey(organizationId: string, deviceId: string): string {
  return `${organizationId}\u0000${deviceId}`;
}

/** What a device runs and what it is: what a dispatch re-checks its commands against. */
export interface DeviceVersion {
  current_version: string;
  model: string | null;
}

/** Some devices' DeviceVersion, by organization and device. */
export interface DeviceVersions {
  get(organizationId: string, deviceId: string): DeviceVersion | undefined;
}

/** One organization's devices, by id: a deployment's candidates as its creation read them. */
export function versionsOf(organizationId: string, byId: ReadonlyMap<string, DeviceVersion>): DeviceVersions {
  return { get: (organization, deviceId) => (organization === organizationId ? byId.get(deviceId) : undefined) };
}

/** What the devices of some update rows run now and their model (the dispatch re-check). */
export async function findDeviceVersions(
  db: Queryable,
  rows: readonly { organization_id: string; device_id: string }[],
): Promise<DeviceVersions> {
  const wanted = new Set(rows.map((row) => deviceKey(row.organization_id, row.device_id)));
  // The primary key with a list per column: one index scan whatever the planner knows of the
  // table (a join against the list was planned as one scan of the table per device once).
  const found = await db.query<{
    organization_id: string;
    device_id: string;
    current_version: string;
    model: string | null;
  }>(
    `SELECT organization_id, device_id, current_version, model FROM devices
     WHERE organization_id = ANY($1::text[]) AND device_id = ANY($2::text[])`,
    [[...new Set(rows.map((row) => row.organization_id))], [...new Set(rows.map((row) => row.device_id))]],
  );
  const byKey = new Map(
    found
      .filter((row) => wanted.has(deviceKey(row.organization_id, row.device_id)))
      .map((row) => [deviceKey(row.organization_id, row.device_id), row]),
  );
  return { get: (organizationId, deviceId) => byKey.get(deviceKey(organizationId, deviceId)) };
}

/** The versions a device runs now and has committed, recorded as run now (registration, a re-flash). */
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
     ON CONFLICT (organization_id, device_id, version) DO UPDATE SET last_run_at = now(), reverted_at = NULL`,
    [organizationId, deviceId, [...new Set(versions)]],
  );
}

/**
 * The device fell back from `version` after committing it: no rollback goes there, and its last
 * known good version (previous_version) becomes the most recent version it ran, other than the one
 * it runs, that it did not fall back from (none: null).
 */
export async function recordFallBack(db: Queryable, organizationId: string, deviceId: string, version: string) {
  await db.query(
    `INSERT INTO device_versions (organization_id, device_id, version, reverted_at)
     VALUES ($1, $2, $3, now())
     ON CONFLICT (organization_id, device_id, version) DO UPDATE SET reverted_at = now()`,
    [organizationId, deviceId, version],
  );
  await db.query(
    `UPDATE devices d SET previous_version = (
       SELECT v.version FROM device_versions v
       WHERE v.organization_id = d.organization_id AND v.device_id = d.device_id
         AND v.version <> d.current_version AND v.reverted_at IS NULL
       ORDER BY v.last_run_at DESC LIMIT 1)
     WHERE d.organization_id = $1 AND d.device_id = $2`,
    [organizationId, deviceId],
  );
}

/** Every version the device has run and committed, with when it last ran it. */
/** The versions the device has run and committed (those it fell back from marked), most recent first. */
export function listRunVersions(db: Queryable, organizationId: string, deviceId: string) {
  return db.query<{ version: string; last_run_at: Date; reverted_at: Date | null }>(
    `SELECT version, last_run_at, reverted_at FROM device_versions WHERE organization_id = $1 AND device_id = $2
     ORDER BY last_run_at DESC`,
    [organizationId, deviceId],
  );
}
