/** The replicas' registry (`server_nodes`): each process registers, beats, and leaves. */
import type { Queryable } from '../infra/db.ts';

export async function registerNode(db: Queryable, nodeId: string): Promise<void> {
  await db.query(
    `INSERT INTO server_nodes (id) VALUES ($1)
     ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()`,
    [nodeId],
  );
}

/** False when the replica is no longer registered (others took it for dead). */
export async function beatNode(db: Queryable, nodeId: string): Promise<boolean> {
  const rows = await db.query('UPDATE server_nodes SET heartbeat_at = now() WHERE id = $1 RETURNING id', [nodeId]);
  return rows.length > 0;
}

export async function deleteNode(db: Queryable, nodeId: string): Promise<void> {
  await db.query('DELETE FROM server_nodes WHERE id = $1', [nodeId]);
}

/** Forgets the replicas that stopped beating (crashed, killed); returns how many. */
export async function deleteDeadNodes(db: Queryable, staleAfterSeconds: number): Promise<number> {
  const rows = await db.query(
    'DELETE FROM server_nodes WHERE heartbeat_at < now() - make_interval(secs => $1) RETURNING id',
    [staleAfterSeconds],
  );
  return rows.length;
}
