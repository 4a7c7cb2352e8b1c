/**
 * What holds a device: the one rule every door asks (a single update, a rollback, a forced
 * update, a deployment being planned, a deployment's dispatch and its rollback). A device is in
 * at most one active deployment or update at a time. Every door takes its organization's doors
 * lock first, and asks in a statement of its own: a deployment being planned takes it alone
 * (`closeDoors`), the per-device doors share it (`enterDoor`), so a plan never races a door, and
 * two doors racing for one device meet in the one-active-update index.
 */
import type { Queryable } from '../infra/db.ts';
import { HOLDING_DEVICE_STATES, OPEN_STATES } from '../model/deployment.ts';
import { ACTIVE_STATUSES } from '../model/update-status.ts';

const quoted = (values: readonly string[]) => values.map((value) => `'${value}'`).join(', ');
const ACTIVE = quoted(ACTIVE_STATUSES);

/**
 * What holds device `d` (an alias of `devices`), or null: its active update (the deployment of
 * a deployment's row, else the update's id), or an open deployment it is in and not done with,
 * or a rolled-back deployment that has still to take it back. The "busy" of every door.
 * `$exclude`: a deployment that does not count (the one being planned).
 */
export function holderOf(d: string, exclude = 'NULL'): string {
  return `coalesce(
    (SELECT coalesce(u.deployment_id, u.id) FROM ota_updates u
      WHERE u.organization_id = ${d}.organization_id AND u.device_id = ${d}.device_id
        AND u.status IN (${ACTIVE})
        AND (${exclude} IS NULL OR u.deployment_id IS DISTINCT FROM ${exclude}) LIMIT 1),
    (SELECT m.deployment_id FROM deployment_devices m JOIN deployments p ON p.id = m.deployment_id
      WHERE m.organization_id = ${d}.organization_id AND m.device_id = ${d}.device_id
        AND (${exclude} IS NULL OR m.deployment_id <> ${exclude})
        AND ((p.state IN (${quoted(OPEN_STATES)}) AND m.state IN (${quoted(HOLDING_DEVICE_STATES)}))
          OR (p.state = 'rolled_back' AND NOT p.settled AND m.committed_at IS NOT NULL
              AND (m.rollback_status IS NULL OR m.rollback_status IN (${ACTIVE}))))
      LIMIT 1))`;
}

const doorsOf = (organizationId: string) => `deployments:${organizationId}`;

/** A per-device door (single update, rollback, a deployment's rollback) shares the lock until the transaction ends. */
export async function enterDoor(tx: Queryable, organizationId: string): Promise<void> {
  await tx.query('SELECT pg_advisory_xact_lock_shared(hashtext($1))', [doorsOf(organizationId)]);
}

/** A deployment being planned holds the lock alone until its transaction ends: no door moves meanwhile. */
export async function closeDoors(tx: Queryable, organizationId: string): Promise<void> {
  await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [doorsOf(organizationId)]);
}

/** What holds the device now (a deployment id, or a single update's id), or null. */
export async function findHolder(db: Queryable, organizationId: string, deviceId: string): Promise<string | null> {
  const [row] = await db.query<{ held_by: string | null }>(
    `SELECT ${holderOf('d')} AS held_by FROM devices d WHERE d.organization_id = $1 AND d.device_id = $2`,
    [organizationId, deviceId],
  );
  return row?.held_by ?? null;
}
