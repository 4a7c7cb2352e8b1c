/**
 * `POST /api/v1/firmware/{version}/offline-bundle`: the signed manifest of an offline bundle
 * (protocol/offline-bundle.ts). The server signs with the organization's key, which never leaves
 * it; the CLI (`edgeflow-ota firmware export`) writes the bundle file: this header, then the image
 * streamed from the firmware's download link.
 */
import { signManifest } from '../../protocol/manifest.ts';
import type { OfflineManifest } from '../../protocol/offline-bundle.ts';
import { BadRequestError } from '../infra/errors.ts';
import { newId } from '../infra/secrets.ts';
import { findSigningKeys } from '../orgs/repo.ts';
import type { Services } from '../services.ts';
import { getFirmware } from './service.ts';

/** Without `expires_at`, a bundle is good for this long. */
export const DEFAULT_BUNDLE_LIFETIME_MS = 30 * 24 * 3600_000;
/** The longest lifetime a bundle may be given. */
export const MAX_BUNDLE_LIFETIME_MS = 366 * 24 * 3600_000;

export async function signOfflineBundle(
  services: Services,
  organizationId: string,
  version: string,
  expiresAt: Date | undefined,
  now = new Date(),
): Promise<{ manifest: OfflineManifest; signature: string }> {
  const expires = expiresAt ?? new Date(now.getTime() + DEFAULT_BUNDLE_LIFETIME_MS);
  if (expires.getTime() <= now.getTime()) {
    throw new BadRequestError('invalid_expiry', `expires_at ${expires.toISOString()} is not in the future`);
  }
  if (expires.getTime() - now.getTime() > MAX_BUNDLE_LIFETIME_MS) {
    throw new BadRequestError('invalid_expiry', 'an offline bundle may be valid for at most 366 days');
  }
  const firmware = await getFirmware(services, organizationId, version);
  const keys = await findSigningKeys(services.db, organizationId);
  if (!keys) throw new Error(`organization ${organizationId} has no signing key`);
  const manifest: OfflineManifest = {
    kind: 'offline',
    bundle_id: newId('bnd'),
    organization_id: organizationId,
    version: firmware.version,
    sha256: firmware.sha256,
    size: Number(firmware.size),
    artifact_type: firmware.artifact_type,
    compatible_models: firmware.compatible_models,
    issued_at: now.toISOString(),
    expires_at: expires.toISOString(),
  };
  return { manifest, signature: signManifest(manifest, keys.privateKeyPem) };
}
