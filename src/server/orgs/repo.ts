import { EVENT_AT_SQL, notifySql } from '../events/feed.ts';
import type { Principal, Role } from '../infra/auth.ts';
import type { Queryable } from '../infra/db.ts';

export interface OrganizationRow {
  id: string;
  name: string;
  signing_public_key: string;
  created_at: Date;
}

export interface ApiKeyRow {
  id: string;
  organization_id: string | null;
  role: Role;
  name: string | null;
  /** The person who holds it (approvals' two-person rule); null: the key is a person of its own. */
  owner: string | null;
  created_at: Date;
}

export async function insertOrganization(
  db: Queryable,
  org: { id: string; name: string; publicKeyPem: string; privateKeyPem: string },
): Promise<OrganizationRow> {
  const [row] = await db.query<OrganizationRow>(
    `INSERT INTO organizations (id, name, signing_public_key, signing_private_key)
     VALUES ($1, $2, $3, $4) RETURNING id, name, signing_public_key, created_at`,
    [org.id, org.name, org.publicKeyPem, org.privateKeyPem],
  );
  return row!;
}

export function listOrganizations(db: Queryable): Promise<OrganizationRow[]> {
  return db.query<OrganizationRow>(
    'SELECT id, name, signing_public_key, created_at FROM organizations ORDER BY created_at, id',
  );
}

export async function findSigningKeys(
  db: Queryable,
  organizationId: string,
): Promise<{ publicKeyPem: string; privateKeyPem: string } | undefined> {
  const [row] = await db.query<{ signing_public_key: string; signing_private_key: string }>(
    'SELECT signing_public_key, signing_private_key FROM organizations WHERE id = $1',
    [organizationId],
  );
  return row && { publicKeyPem: row.signing_public_key, privateKeyPem: row.signing_private_key };
}

export async function insertApiKey(
  db: Queryable,
  key: {
    id: string;
    organizationId: string | null;
    role: Role;
    keyHash: string;
    name: string | null;
    owner?: string | null;
  },
): Promise<ApiKeyRow> {
  const [row] = await db.query<ApiKeyRow>(
    `INSERT INTO api_keys (id, organization_id, role, key_hash, name, owner) VALUES ($1, $2, $3, $4, $5, $6)
     RETURNING id, organization_id, role, name, owner, created_at`,
    [key.id, key.organizationId, key.role, key.keyHash, key.name, key.owner ?? null],
  );
  return row!;
}

/** Who holds the key with this hash (authentication of every API request). */
export async function findPrincipalByKeyHash(db: Queryable, keyHash: string): Promise<Principal | undefined> {
  const [row] = await db.query<{ id: string; name: string | null; role: Role; organization_id: string | null }>(
    'SELECT id, name, role, organization_id FROM api_keys WHERE key_hash = $1',
    [keyHash],
  );
  return row ? { keyId: row.id, keyName: row.name, role: row.role, organizationId: row.organization_id } : undefined;
}

/** A key with its organization (none for the system administrator's). */
export async function findKeyIdentity(db: Queryable, keyId: string) {
  const [row] = await db.query<{
    id: string;
    name: string | null;
    owner: string | null;
    role: Role;
    organization_id: string | null;
    organization_name: string | null;
  }>(
    `SELECT k.id, k.name, k.owner, k.role, o.id AS organization_id, o.name AS organization_name
     FROM api_keys k LEFT JOIN organizations o ON o.id = k.organization_id
     WHERE k.id = $1`,
    [keyId],
  );
  return row;
}

export function listApiKeys(db: Queryable, organizationId: string): Promise<ApiKeyRow[]> {
  return db.query<ApiKeyRow>(
    `SELECT id, organization_id, role, name, owner, created_at FROM api_keys
     WHERE organization_id = $1 ORDER BY created_at, id`,
    [organizationId],
  );
}

/** Announces each revoked key `c` (every process ends what the key holds open; see events/feed.ts). */
const announceRevoked = `SELECT 1 FROM c, LATERAL (SELECT ${notifySql(
  'api_key_revoked',
  `json_build_object('organization_id', c.organization_id, 'key_id', c.id, 'at', ${EVENT_AT_SQL})`,
)}) AS announced`;

/** Revokes a key, announced by the same statement (`api_key_revoked`). */
export async function deleteApiKey(db: Queryable, organizationId: string, id: string): Promise<boolean> {
  const rows = await db.query(
    `WITH c AS (DELETE FROM api_keys WHERE organization_id = $1 AND id = $2 RETURNING id, organization_id)
     ${announceRevoked}`,
    [organizationId, id],
  );
  return rows.length > 0;
}

/** The stored system administrator key hashes (normally one). */
export async function systemAdminKeyHashes(db: Queryable): Promise<string[]> {
  const rows = await db.query<{ key_hash: string }>("SELECT key_hash FROM api_keys WHERE role = 'system_admin'");
  return rows.map((row) => row.key_hash);
}

/** Removes every system administrator key (a reset inserts the new one in the same transaction). */
export async function deleteSystemAdminKeys(db: Queryable): Promise<number> {
  const rows = await db.query(
    `WITH c AS (DELETE FROM api_keys WHERE role = 'system_admin' RETURNING id, organization_id) ${announceRevoked}`,
  );
  return rows.length;
}

export async function getSetting(db: Queryable, name: string): Promise<string | undefined> {
  const [row] = await db.query<{ value: string }>('SELECT value FROM settings WHERE name = $1', [name]);
  return row?.value;
}

/** Inserts unless present (another replica may have won); returns the stored value. */
export async function ensureSetting(db: Queryable, name: string, value: string): Promise<string> {
  await db.query('INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING', [name, value]);
  return (await getSetting(db, name))!;
}

/** Held until the transaction ends: one replica bootstraps at a time. */
export async function lockBootstrap(tx: Queryable): Promise<void> {
  await tx.query('SELECT pg_advisory_xact_lock(7340002)');
}
