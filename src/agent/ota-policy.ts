/**
 * Whether this device may install what an `ota_update` offers: signature, binding to this device
 * and organization, and no silent downgrade. Pure: the same inputs always give the same verdict.
 */
import semver from 'semver';
import { type ArtifactKind, artifactKindMeaning, artifactKindOf } from '../protocol/artifact.ts';
import { verifyManifest } from '../protocol/manifest.ts';
import { type OfflineManifest, validateOfflineManifest } from '../protocol/offline-bundle.ts';
import type { OtaFailureCode, OtaUpdatePayload } from '../protocol/tunnel.ts';

export interface UpdatePolicy {
  deviceId: string;
  /** The Ed25519 public key pinned at provisioning (PEM). */
  publicKeyPem?: string;
  organizationId?: string;
  /** Development only: without a pinned key, trust what the server says, manifest included. */
  allowUnsigned?: boolean;
}

export type Authorization =
  | { verdict: 'install' }
  | { verdict: 'already_installed' }
  | { verdict: 'refuse'; code: OtaFailureCode; message: string };

/**
 * `acceptedKinds`: the artifact kinds the device's installer takes (undefined: any). Checked
 * before a byte is downloaded; an artifact whose kind cannot be told (no known extension) is
 * left to the installer.
 */
export function authorizeUpdate(
  payload: OtaUpdatePayload,
  runningVersion: string,
  policy: UpdatePolicy,
  acceptedKinds?: readonly ArtifactKind[],
): Authorization {
  const manifest = payload.manifest;
  if (policy.publicKeyPem) {
    if (!manifest || !payload.signature) {
      return refuse(
        'signature_required',
        'this device only installs signed firmware, and the update carries no signature',
      );
    }
    if (!verifyManifest(manifest, payload.signature, policy.publicKeyPem)) {
      return refuse('signature_invalid', 'the manifest signature does not match the pinned public key');
    }
  } else if (!policy.allowUnsigned) {
    return refuse('signature_required', 'no public key is pinned on this device and unsigned updates are not allowed');
  }

  if (manifest) {
    const mismatch = manifestMismatch(payload, policy);
    if (mismatch) return refuse('signature_invalid', mismatch);
  }

  const isRollbackForThisDevice = manifest?.kind === 'rollback' && manifest.device_id === policy.deviceId;
  const comparable = semver.valid(payload.version) && semver.valid(runningVersion);
  if (comparable && semver.lt(payload.version, runningVersion) && !isRollbackForThisDevice) {
    return refuse(
      'downgrade_refused',
      `refusing to go from ${runningVersion} down to ${payload.version} without a signed rollback for this device`,
    );
  }
  const sameVersion = comparable ? semver.eq(payload.version, runningVersion) : payload.version === runningVersion;
  if (sameVersion && !payload.force) return { verdict: 'already_installed' };
  const kindProblem = artifactKindProblem(payload, acceptedKinds);
  if (kindProblem) return refuse('artifact_mismatch', kindProblem);
  return { verdict: 'install' };
}

/** The artifact's kind: the server's word, else the extension the download URL's path ends with. */
export function artifactKindOfUpdate(payload: OtaUpdatePayload): string | undefined {
  if (payload.artifact_type !== undefined) return payload.artifact_type;
  try {
    return artifactKindOf(decodeURIComponent(new URL(payload.url).pathname));
  } catch {
    return undefined;
  }
}

function artifactKindProblem(payload: OtaUpdatePayload, accepted: readonly ArtifactKind[] | undefined) {
  const kind = artifactKindOfUpdate(payload);
  if (accepted === undefined || kind === undefined) return undefined;
  if ((accepted as readonly string[]).includes(kind)) return undefined;
  const what = kind in artifactKindMeaning ? `a ${artifactKindMeaning[kind as ArtifactKind]} (.${kind})` : `.${kind}`;
  return `firmware ${payload.version} is ${what}; this device's installer takes ${accepted.map((k) => `.${k}`).join(', ')}`;
}

/** A signed manifest only vouches for the image it names, for the device and update it names. */
function manifestMismatch(payload: OtaUpdatePayload, policy: UpdatePolicy): string | undefined {
  const manifest = payload.manifest!;
  if (manifest.version !== payload.version)
    return `manifest is for version ${manifest.version}, not ${payload.version}`;
  if (manifest.sha256 !== payload.sha256) return 'manifest sha256 differs from the update';
  if (manifest.size !== payload.size) return 'manifest size differs from the update';
  if (policy.organizationId !== undefined && manifest.organization_id !== policy.organizationId) {
    return `manifest belongs to organization ${manifest.organization_id}, not this device's`;
  }
  if (manifest.device_id !== undefined && manifest.device_id !== policy.deviceId) {
    return `manifest is bound to device ${manifest.device_id}`;
  }
  if (manifest.update_id !== undefined && manifest.update_id !== payload.update_id) {
    return `manifest is bound to update ${manifest.update_id}`;
  }
  return undefined;
}

function refuse(code: OtaFailureCode, message: string): Authorization {
  return { verdict: 'refuse', code, message };
}

/** Whether this device may install an offline bundle (offline-bundle.ts), read from a file. */
export interface OfflineBundleCheck {
  manifest: unknown;
  signature: string;
  runningVersion: string;
  policy: UpdatePolicy;
  /** The device's model (agent option `model`); a bundle naming models needs it. */
  model: string | undefined;
  acceptedKinds: readonly ArtifactKind[] | undefined;
  now: Date;
}

export type OfflineAuthorization =
  | { verdict: 'install'; manifest: OfflineManifest }
  | { verdict: 'already_installed'; manifest: OfflineManifest }
  | { verdict: 'refuse'; code: OtaFailureCode | 'expired' | 'wrong_organization' | 'wrong_model'; message: string };

/** Signature first (nothing unsigned is read further), then organization, expiry, model, version, kind. */
export function authorizeOfflineBundle(check: OfflineBundleCheck): OfflineAuthorization {
  const { policy } = check;
  if (!policy.publicKeyPem) {
    return { verdict: 'refuse', code: 'signature_required', message: 'no public key is pinned on this device' };
  }
  if (!validateOfflineManifest.Check(check.manifest)) {
    return { verdict: 'refuse', code: 'signature_invalid', message: 'the bundle manifest is not an offline manifest' };
  }
  const manifest = check.manifest;
  if (!verifyManifest(manifest, check.signature, policy.publicKeyPem)) {
    return {
      verdict: 'refuse',
      code: 'signature_invalid',
      message: "the bundle's signature does not match this device's pinned organization key",
    };
  }
  if (policy.organizationId !== undefined && manifest.organization_id !== policy.organizationId) {
    return {
      verdict: 'refuse',
      code: 'wrong_organization',
      message: `the bundle belongs to organization ${manifest.organization_id}, not this device's`,
    };
  }
  const expiresAt = Date.parse(manifest.expires_at);
  if (!(expiresAt > check.now.getTime())) {
    return { verdict: 'refuse', code: 'expired', message: `the bundle expired at ${manifest.expires_at}` };
  }
  const models = manifest.compatible_models;
  if (models.length > 0 && !models.includes(check.model ?? '')) {
    const mine = check.model === undefined ? 'no model is configured on this device (model)' : `not ${check.model}`;
    return { verdict: 'refuse', code: 'wrong_model', message: `the bundle is for ${models.join(', ')}; ${mine}` };
  }
  const comparable = semver.valid(check.runningVersion) !== null;
  if (comparable && semver.lt(manifest.version, check.runningVersion)) {
    return {
      verdict: 'refuse',
      code: 'downgrade_refused',
      message: `refusing to go from ${check.runningVersion} down to ${manifest.version}`,
    };
  }
  if (manifest.version === check.runningVersion || (comparable && semver.eq(manifest.version, check.runningVersion)))
    return { verdict: 'already_installed', manifest };
  const accepted = check.acceptedKinds;
  if (accepted !== undefined && !(accepted as readonly string[]).includes(manifest.artifact_type)) {
    return {
      verdict: 'refuse',
      code: 'artifact_mismatch',
      message: `the bundle holds a .${manifest.artifact_type}; this device's installer takes ${accepted.map((k) => `.${k}`).join(', ')}`,
    };
  }
  return { verdict: 'install', manifest };
}
