/**
 * Whether this device may install what an `ota_update` offers: signature, binding to this device
 * and organization, and no silent downgrade. Pure: the same inputs always give the same verdict.
 */
import semver from 'semver';
import { type ArtifactKind, artifactKindMeaning, artifactKindOf } from '../protocol/artifact.ts';
import { verifyManifest } from '../protocol/manifest.ts';
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
