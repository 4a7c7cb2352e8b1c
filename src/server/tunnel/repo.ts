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

export async function removeNode(db: Queryable, nodeId: string): Promise<void> {
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

export async function markOnline(
  db: Queryable,
  organizationId: string,
  deviceId: string,
  nodeId: string,
  agentVersion: string | null,
): Promise<void> {
  await db.query(
    `UPDATE devices SET online = true, connected_node = $3, last_seen_at = now(),
       agent_version = COALESCE($4, agent_version)
     WHERE organization_id = $1 AND device_id = $2`,
    [organizationId, deviceId, nodeId, agentVersion],
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

export async function reportCurrentVersion(
  db: Queryable,
  organizationId: string,
  deviceId: string,
  currentVersion: string,
  agentVersion: string | undefined,
): Promise<void> {
  await db.query(
    `UPDATE devices SET current_version = $3, agent_version = COALESCE($4, agent_version), updated_at = now()
     WHERE organization_id = $1 AND device_id = $2`,
    [organizationId, deviceId, currentVersion, agentVersion ?? null],
  );
}
