import type { Queryable } from '../infra/db.ts';

export async function registerNode(db: Queryable, nodeId: string): Promise<void> {
  await db.query(
    `INSERT INTO server_nodes (id) VALUES ($1)
     ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()`,
    [nodeId],
  );
}

export async function beatNode(db: Queryable, nodeId: string): Promise<void> {
  await db.query('UPDATE server_nodes SET heartbeat_at = now() WHERE id = $1', [nodeId]);
}

/** A replica leaving: the devices it held are offline, and it is forgotten. */
export async function removeNode(db: Queryable, nodeId: string): Promise<void> {
  await db.query('UPDATE devices SET online = false, connected_node = NULL WHERE connected_node = $1', [nodeId]);
  await db.query('DELETE FROM server_nodes WHERE id = $1', [nodeId]);
}

/**
 * Devices held by replicas that stopped beating (crashed, killed) are offline; those
 * replicas are forgotten. Returns how many devices went offline.
 */
export async function releaseDeadNodes(db: Queryable, staleAfterSeconds: number): Promise<number> {
  const rows = await db.query(
    `WITH dead AS (
       DELETE FROM server_nodes WHERE heartbeat_at < now() - make_interval(secs => $1) RETURNING id
     )
     UPDATE devices SET online = false, connected_node = NULL
     WHERE connected_node IS NOT NULL
       AND (connected_node IN (SELECT id FROM dead)
            OR connected_node NOT IN (SELECT id FROM server_nodes))
     RETURNING 1`,
    [staleAfterSeconds],
  );
  return rows.length;
}

/** Marks the devices online on this replica, in one statement. */
export async function markOnline(
  db: Queryable,
  nodeId: string,
  devices: { organizationId: string; deviceId: string; agentVersion: string | null }[],
): Promise<void> {
  await db.query(
    `UPDATE devices AS d SET online = true, connected_node = $1, last_seen_at = now(),
       agent_version = COALESCE(s.agent_version, d.agent_version)
     FROM unnest($2::text[], $3::text[], $4::text[]) AS s(organization_id, device_id, agent_version)
     WHERE d.organization_id = s.organization_id AND d.device_id = s.device_id`,
    [nodeId, devices.map((d) => d.organizationId), devices.map((d) => d.deviceId), devices.map((d) => d.agentVersion)],
  );
}

/** Only if this replica still holds it: the device may already be connected elsewhere. */
export async function markOffline(db: Queryable, organizationId: string, deviceId: string, nodeId: string) {
  await db.query(
    `UPDATE devices SET online = false, connected_node = NULL, last_seen_at = now()
     WHERE organization_id = $1 AND device_id = $2 AND connected_node = $3`,
    [organizationId, deviceId, nodeId],
  );
}

/** One statement for every device seen since the last flush. */
export async function touchLastSeen(
  db: Queryable,
  seen: { organizationId: string; deviceId: string; at: Date }[],
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
export async function reportCurrentVersions(
  db: Queryable,
  reports: { organizationId: string; deviceId: string; currentVersion: string; agentVersion: string | null }[],
): Promise<void> {
  await db.query(
    `UPDATE devices AS d SET current_version = s.current_version,
       agent_version = COALESCE(s.agent_version, d.agent_version), updated_at = now()
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
       AS s(organization_id, device_id, current_version, agent_version)
     WHERE d.organization_id = s.organization_id AND d.device_id = s.device_id`,
    [
      reports.map((r) => r.organizationId),
      reports.map((r) => r.deviceId),
      reports.map((r) => r.currentVersion),
      reports.map((r) => r.agentVersion),
    ],
  );
}
