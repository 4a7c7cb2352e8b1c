/** The audit log's SQL: append, read a page, prune past the retention. */
import type { Db, Queryable } from '../infra/db.ts';

export type AuditOutcome = 'success' | 'denied';

export interface AuditEntryInput {
  organizationId: string | null;
  actorKeyId: string | null;
  actorKeyName: string | null;
  actorRole: string | null;
  sourceAddress: string;
  method: string;
  route: string;
  action: string;
  targetType: string | null;
  targetId: string | null;
  outcome: AuditOutcome;
  status: number;
  changes: unknown;
  createdId: string | null;
}

export interface AuditEntryRow {
  id: string;
  at: Date;
  organization_id: string | null;
  actor_key_id: string | null;
  actor_key_name: string | null;
  actor_role: string | null;
  source_address: string;
  method: string;
  route: string;
  action: string;
  target_type: string | null;
  target_id: string | null;
  outcome: AuditOutcome;
  status: number;
  changes: unknown;
  created_id: string | null;
}

export async function appendAuditEntry(db: Queryable, entry: AuditEntryInput): Promise<void> {
  await db.query(
    `INSERT INTO audit_log (organization_id, actor_key_id, actor_key_name, actor_role, source_address, method, route,
       action, target_type, target_id, outcome, status, changes, created_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb, $14)`,
    [
      entry.organizationId,
      entry.actorKeyId,
      entry.actorKeyName,
      entry.actorRole,
      entry.sourceAddress,
      entry.method,
      entry.route,
      entry.action,
      entry.targetType,
      entry.targetId,
      entry.outcome,
      entry.status,
      entry.changes === undefined ? null : JSON.stringify(entry.changes),
      entry.createdId,
    ],
  );
}

export interface AuditFilter {
  /** One organization's entries; undefined: every organization's (the system administrator). */
  organizationId?: string;
  actorKeyId?: string;
  /** An action, or a prefix of one (`deployment.` for `deployment.*`). */
  action?: { exact: string } | { prefix: string };
  targetType?: string;
  targetId?: string;
  outcome?: AuditOutcome;
  since?: Date;
  until?: Date;
  /** Entries older than this one (the previous page's last id). */
  before?: string;
  limit: number;
}

/** Newest first, a page at a time by id (keyset: a page never repeats or skips an entry). */
export function listAuditEntries(db: Queryable, filter: AuditFilter): Promise<AuditEntryRow[]> {
  const where: string[] = [];
  const params: unknown[] = [];
  const add = (clause: (placeholder: string) => string, value: unknown) => {
    params.push(value);
    where.push(clause(`$${params.length}`));
  };
  if (filter.organizationId !== undefined) add((p) => `organization_id = ${p}`, filter.organizationId);
  if (filter.actorKeyId !== undefined) add((p) => `actor_key_id = ${p}`, filter.actorKeyId);
  if (filter.action && 'exact' in filter.action) add((p) => `action = ${p}`, filter.action.exact);
  if (filter.action && 'prefix' in filter.action) {
    add((p) => `action LIKE ${p}`, `${filter.action.prefix.replace(/[\\%_]/g, '\\$&')}%`);
  }
  if (filter.targetType !== undefined) add((p) => `target_type = ${p}`, filter.targetType);
  if (filter.targetId !== undefined) add((p) => `target_id = ${p}`, filter.targetId);
  if (filter.outcome !== undefined) add((p) => `outcome = ${p}`, filter.outcome);
  if (filter.since !== undefined) add((p) => `at >= ${p}`, filter.since);
  if (filter.until !== undefined) add((p) => `at < ${p}`, filter.until);
  if (filter.before !== undefined) add((p) => `id < ${p}::bigint`, filter.before);
  params.push(filter.limit);
  return db.query<AuditEntryRow>(
    `SELECT id::text AS id, at, organization_id, actor_key_id, actor_key_name, actor_role, source_address, method,
       route, action, target_type, target_id, outcome, status, changes, created_id
     FROM audit_log ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
     ORDER BY audit_log.id DESC LIMIT $${params.length}`,
    params,
  );
}

const PRUNE_CHUNK = 5000;

/**
 * Deletes the entries older than `cutoff`, a chunk per transaction, in the one way the
 * database's append-only trigger lets through: a transaction that set `edgeflow.audit_prune`.
 * Idempotent: replicas may prune at once.
 */
export async function pruneAuditEntries(db: Db, cutoff: Date): Promise<number> {
  let removed = 0;
  for (;;) {
    const deleted = await db.transaction(async (tx) => {
      await tx.query(`SET LOCAL edgeflow.audit_prune = 'on'`);
      return tx.query<{ id: string }>(
        `DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < $1 ORDER BY at LIMIT ${PRUNE_CHUNK})
         RETURNING id`,
        [cutoff],
      );
    });
    removed += deleted.length;
    if (deleted.length < PRUNE_CHUNK) return removed;
  }
}
