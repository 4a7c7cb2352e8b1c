/** Identifiers and bearer secrets. Secrets are 256-bit random and stored only as SHA256 hashes. */
import { createHash, randomBytes } from 'node:crypto';

/**
 * Ids (not secrets) take their random bytes from a pool filled 4 KiB at a time, as Node's
 * randomUUID does: a deployment creating 10,000 updates made 10,000 calls into the system's
 * random source for them (65 ms of P1's profile).
 */
const ID_BYTES = 10;
const ID_POOL_BYTES = 4096;
let idPool = Buffer.alloc(0);
let idPoolAt = 0;

export function newId(prefix: string): string {
  if (idPoolAt + ID_BYTES > idPool.length) {
    idPool = randomBytes(ID_POOL_BYTES);
    idPoolAt = 0;
  }
  idPoolAt += ID_BYTES;
  return `${prefix}_${idPool.toString('hex', idPoolAt - ID_BYTES, idPoolAt)}`;
}

/** `efo_` for organization and system keys, `efd_` for device keys: a leaked key says what it is. */
export function newSecret(kind: 'efo' | 'efd'): string {
  return `${kind}_${randomBytes(32).toString('base64url')}`;
}

/** Keys are high-entropy, so a plain SHA256 is enough (no password stretching needed). */
export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}
