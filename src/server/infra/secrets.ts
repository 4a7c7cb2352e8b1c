/** Identifiers and bearer secrets. Secrets are 256-bit random and stored only as SHA256 hashes. */
import { createHash, randomBytes } from 'node:crypto';

export function newId(prefix: string): string {
  return `${prefix}_${randomBytes(10).toString('hex')}`;
}

/** `efo_` for organization and system keys, `efd_` for device keys: a leaked key says what it is. */
export function newSecret(kind: 'efo' | 'efd'): string {
  return `${kind}_${randomBytes(32).toString('base64url')}`;
}

/** Keys are high-entropy, so a plain SHA256 is enough (no password stretching needed). */
export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}
