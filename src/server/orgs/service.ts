import { randomBytes } from 'node:crypto';
import { generateSigningKeyPair } from '../../protocol/manifest.ts';
import type { Principal, Role } from '../infra/auth.ts';
import type { Db } from '../infra/db.ts';
import { BadRequestError, NotFoundError, UnauthorizedError } from '../infra/errors.ts';
import { hashSecret, newId, newSecret } from '../infra/secrets.ts';
import * as repo from './repo.ts';

export interface Bootstrap {
  /** Set only when this start created the system administrator key and generated it. */
  generatedAdminKey: string | undefined;
  /** HMAC secret for the local store's download links, shared by every replica. */
  linkSigningSecret: string;
  /**
   * EDGEFLOW_ADMIN_KEY is set but is not the stored system administrator key: it is ignored
   * (it only seeds the first start), which the operator must be told loudly.
   */
  configuredAdminKeyIgnored: boolean;
}

/**
 * First start: creates the system administrator key (EDGEFLOW_ADMIN_KEY when given, else a
 * generated one that is returned to be printed once) and the link-signing secret.
 */
export async function bootstrap(db: Db, configuredAdminKey: string | undefined): Promise<Bootstrap> {
  return db.transaction(async (tx) => {
    // Replicas starting together: one creates the key, the others see it.
    await repo.lockBootstrap(tx);
    let generatedAdminKey: string | undefined;
    let configuredAdminKeyIgnored = false;
    const storedHashes = await repo.systemAdminKeyHashes(tx);
    if (storedHashes.length > 0) {
      // Stored hashed: compare hashes, never keys.
      configuredAdminKeyIgnored =
        configuredAdminKey !== undefined && !storedHashes.includes(hashSecret(configuredAdminKey));
    } else {
      const key = configuredAdminKey ?? newSecret('efo');
      await repo.insertApiKey(tx, {
        id: newId('key'),
        organizationId: null,
        role: 'system_admin',
        keyHash: hashSecret(key),
        name: 'system administrator',
      });
      if (!configuredAdminKey) generatedAdminKey = key;
    }
    const linkSigningSecret = await repo.ensureSetting(tx, 'link_signing_secret', randomBytes(32).toString('hex'));
    return { generatedAdminKey, linkSigningSecret, configuredAdminKeyIgnored };
  });
}

/**
 * Replaces the system administrator key (`edgeflow-ota admin reset-key`): every earlier one
 * stops working. Returns the new key, to be shown once.
 */
export async function resetSystemAdminKey(db: Db, newKey: string = newSecret('efo')): Promise<string> {
  await db.transaction(async (tx) => {
    await repo.lockBootstrap(tx);
    await repo.deleteSystemAdminKeys(tx);
    await repo.insertApiKey(tx, {
      id: newId('key'),
      organizationId: null,
      role: 'system_admin',
      keyHash: hashSecret(newKey),
      name: 'system administrator',
    });
  });
  return newKey;
}

export async function createOrganization(db: Db, name: string) {
  const trimmed = name.trim();
  if (!trimmed) throw new BadRequestError('invalid_name', 'name must not be blank');
  const keys = generateSigningKeyPair();
  const adminKey = newSecret('efo');
  return db.transaction(async (tx) => {
    const org = await repo.insertOrganization(tx, { id: newId('org'), name: trimmed, ...keys });
    await repo.insertApiKey(tx, {
      id: newId('key'),
      organizationId: org.id,
      role: 'admin',
      keyHash: hashSecret(adminKey),
      name: 'initial admin',
    });
    return { ...org, admin_key: adminKey };
  });
}

export async function createApiKey(
  db: Db,
  organizationId: string,
  role: Exclude<Role, 'system_admin'>,
  name?: string,
  owner?: string,
) {
  if (owner !== undefined && owner.trim() === '') {
    throw new BadRequestError('invalid_owner', 'owner names the person who holds the key; it cannot be blank');
  }
  const key = newSecret('efo');
  const row = await repo.insertApiKey(db, {
    id: newId('key'),
    organizationId,
    role,
    keyHash: hashSecret(key),
    name: name ?? null,
    owner: owner?.trim() ?? null,
  });
  return { ...row, key };
}

export async function revokeApiKey(db: Db, organizationId: string, id: string, callerKeyId: string) {
  if (id === callerKeyId) throw new BadRequestError('cannot_revoke_own_key', 'a key cannot revoke itself');
  if (!(await repo.deleteApiKey(db, organizationId, id))) throw new NotFoundError('api_key_not_found', 'no such key');
}

export async function signingPublicKey(db: Db, organizationId: string): Promise<string> {
  const keys = await repo.findSigningKeys(db, organizationId);
  if (!keys) throw new NotFoundError('organization_not_found', 'no such organization');
  return keys.publicKeyPem;
}

export function listOrganizations(db: Db) {
  return repo.listOrganizations(db);
}

export function listApiKeys(db: Db, organizationId: string) {
  return repo.listApiKeys(db, organizationId);
}

/** Who the caller is: its role, its organization (none for the system administrator) and its key. */
export async function whoAmI(db: Db, principal: Principal) {
  const key = await repo.findKeyIdentity(db, principal.keyId);
  // Revoked between authentication and this read.
  if (!key) throw new UnauthorizedError('the API key is not valid');
  return {
    role: key.role,
    organization: key.organization_id === null ? null : { id: key.organization_id, name: key.organization_name ?? '' },
    key: { id: key.id, name: key.name, owner: key.owner },
  };
}
