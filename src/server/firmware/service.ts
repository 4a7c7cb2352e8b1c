import type { Readable } from 'node:stream';
import { ARTIFACT_KINDS, type ArtifactKind, artifactKindOf } from '../../protocol/artifact.ts';
import { hasControlCharacter } from '../../protocol/text.ts';
import { isStrictSemver } from '../../protocol/version.ts';
import type { DownloadLink } from '../infra/blobstore/types.ts';
import type { Queryable } from '../infra/db.ts';
import { BadRequestError, ConflictError, NotFoundError, UnprocessableError } from '../infra/errors.ts';
import type { Services } from '../services.ts';
import * as repo from './repo.ts';

/**
 * The one place a storage key is built; only validated, strict-semver versions reach it. It ends
 * with the artifact's kind, which a device reads off its download link (src/agent/ota-policy.ts).
 */
export function firmwareKey(
  organizationId: string,
  version: string,
  sha256: string,
  kind: ArtifactKind = 'bin',
): string {
  return `firmware/${organizationId}/${version}/${sha256}.${kind}`;
}

export interface UploadFields {
  version?: string | undefined;
  sha256?: string | undefined;
  release_notes?: string | undefined;
  compatible_models?: string[] | undefined;
}

export interface ValidUpload {
  version: string;
  sha256: string;
  release_notes: string | null;
  compatible_models: string[];
  /** From the file name; a file arriving on its own (uploadFirmware) is a raw `.bin` unless said. */
  artifact_type?: ArtifactKind;
}

const MODEL = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$/;

/** Checks the fields that precede the file part, before a single byte is stored. */
export function validateUploadFields(fields: UploadFields, filename: string | undefined): ValidUpload {
  for (const [name, value] of Object.entries(fields)) {
    const values: unknown[] = Array.isArray(value) ? value : [value];
    if (values.some((text) => typeof text === 'string' && hasControlCharacter(text, { allowLineBreaks: true }))) {
      throw new BadRequestError('invalid_characters', `${name} must not contain control characters`);
    }
  }
  if (fields.version === undefined) {
    throw new BadRequestError('missing_field', 'the version field must come before the file');
  }
  if (!isStrictSemver(fields.version)) {
    throw new BadRequestError('invalid_version', 'version must be a strict semantic version such as 1.4.2');
  }
  if (fields.sha256 === undefined) {
    throw new BadRequestError('missing_field', 'the sha256 field must come before the file');
  }
  const sha256 = fields.sha256.trim().toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(sha256)) {
    throw new BadRequestError('invalid_checksum', 'sha256 must be 64 hexadecimal characters');
  }
  if (filename === undefined) throw new BadRequestError('missing_file', 'a file part named "file" is required');
  const artifactType = artifactKindOf(filename);
  if (artifactType === undefined) {
    throw new BadRequestError(
      'invalid_file_type',
      `firmware must be one of ${ARTIFACT_KINDS.map((kind) => `.${kind}`).join(', ')}, named by its file name`,
    );
  }
  const releaseNotes = fields.release_notes ?? null;
  if (releaseNotes !== null && releaseNotes.length > 10_000) {
    throw new BadRequestError('invalid_release_notes', 'release_notes is limited to 10000 characters');
  }
  const models = [...new Set(fields.compatible_models ?? [])];
  const badModel = models.find((model) => !MODEL.test(model));
  if (badModel !== undefined || models.length > 100) {
    throw new BadRequestError(
      'invalid_compatible_models',
      'compatible_models are model names: letters, digits, . _ : -',
    );
  }
  return {
    version: fields.version,
    sha256,
    release_notes: releaseNotes,
    compatible_models: models,
    artifact_type: artifactType,
  };
}

/** A verified upload waiting in the store's staging area for the request to end. */
export interface StagedUpload {
  upload: ValidUpload;
  tempKey: string;
  size: number;
  /** The same version with identical content exists already: nothing to commit. */
  existing: repo.FirmwareRow | undefined;
}

/**
 * Streams the file into the store's staging area while hashing it, and keeps it only if the
 * computed SHA256 equals the declared one. Commits nothing: `commitUpload` does, once the whole
 * request has been read and accepted; `discardUpload` undoes it. Whatever fails here, nothing
 * of the upload remains.
 */
export async function stageUpload(
  services: Services,
  organizationId: string,
  upload: ValidUpload,
  file: Readable,
): Promise<StagedUpload> {
  const { db, store, config } = services;
  const existing = await repo.findFirmware(db, organizationId, upload.version);
  if (existing && (existing.sha256 !== upload.sha256 || existing.artifact_type !== (upload.artifact_type ?? 'bin'))) {
    throw new ConflictError('version_exists', `version ${upload.version} exists with other content`);
  }
  const staged = await store.stage(file, { maxBytes: config.firmwareMaxBytes });
  try {
    if (staged.size === 0) throw new BadRequestError('empty_file', 'the firmware file is empty');
    if (staged.sha256 !== upload.sha256) {
      throw new UnprocessableError('checksum_mismatch', 'the file does not match the declared sha256', {
        declared: upload.sha256,
        computed: staged.sha256,
      });
    }
  } catch (error) {
    await store.discard(staged.tempKey).catch(() => {});
    throw error;
  }
  return { upload, tempKey: staged.tempKey, size: staged.size, existing };
}

export async function discardUpload(services: Services, staged: StagedUpload): Promise<void> {
  // A staged file that cannot be removed now is stale at the next start or sweep.
  await services.store.discard(staged.tempKey).catch(() => {});
}

/**
 * Promotes the staged file to its final key and inserts the row; on any failure neither
 * remains. Returns `created: false` when the same version with identical content existed.
 */
export async function commitUpload(
  services: Services,
  organizationId: string,
  staged: StagedUpload,
): Promise<{ firmware: repo.FirmwareRow; created: boolean }> {
  const { db, store } = services;
  const { upload } = staged;
  if (staged.existing) {
    await discardUpload(services, staged);
    return { firmware: staged.existing, created: false };
  }
  const key = firmwareKey(organizationId, upload.version, upload.sha256, upload.artifact_type);
  try {
    await store.promote(staged.tempKey, key);
  } catch (error) {
    await discardUpload(services, staged);
    throw error;
  }
  let inserted: repo.FirmwareRow | undefined;
  try {
    inserted = await repo.insertFirmware(db, organizationId, {
      ...upload,
      artifact_type: upload.artifact_type ?? 'bin',
      size: staged.size,
      storage_key: key,
    });
  } catch (error) {
    await store.delete(key).catch(() => {});
    throw error;
  }
  if (inserted) {
    services.metrics.firmwareUploadedBytes.inc(staged.size);
    return { firmware: inserted, created: true };
  }
  // A concurrent upload of the same version won the insert; the key is content-addressed, so
  // an identical winner owns the very object just promoted.
  const winner = await repo.findFirmware(db, organizationId, upload.version);
  if (winner?.sha256 === upload.sha256) return { firmware: winner, created: false };
  await store.delete(key).catch(() => {});
  throw new ConflictError('version_exists', `version ${upload.version} exists with other content`);
}

/** Stages and commits in one go, for a file that arrives on its own (not inside a form). */
export async function uploadFirmware(
  services: Services,
  organizationId: string,
  upload: ValidUpload,
  file: Readable,
): Promise<{ firmware: repo.FirmwareRow; created: boolean }> {
  return commitUpload(services, organizationId, await stageUpload(services, organizationId, upload, file));
}

export async function getFirmware(services: Services, organizationId: string, version: string) {
  const firmware = await repo.findFirmware(services.db, organizationId, version);
  if (!firmware) throw new NotFoundError('firmware_not_found', `no firmware ${version}`);
  return firmware;
}

/**
 * All or nothing: the blob is deleted while the deleted row is still locked and uncommitted,
 * so a store that refuses (read-only, unreachable) rolls the row back and the firmware stays
 * whole (503 storage_unavailable); neither an orphaned blob nor a row without its file.
 */
export async function deleteFirmware(services: Services, organizationId: string, version: string) {
  await services.db.transaction(async (tx) => {
    // Locked first: a deployment being created holds the row (key share) until it commits, and
    // the check below, a statement of its own, then sees it.
    const firmware = await repo.findFirmware(tx, organizationId, version, 'update');
    if (!firmware) throw new NotFoundError('firmware_not_found', `no firmware ${version}`);
    const reason = await repo.firmwareInUseReason(tx, organizationId, version);
    if (reason) throw new ConflictError('firmware_in_use', `firmware ${version} cannot be deleted: ${reason}`);
    const removed = await repo.deleteFirmware(tx, organizationId, version);
    if (removed) await services.store.delete(removed.storage_key);
  });
}

export async function firmwareDownloadLink(
  services: Services,
  organizationId: string,
  version: string,
  ttlSeconds = services.config.downloadLinkTtlSeconds,
): Promise<DownloadLink> {
  const firmware = await getFirmware(services, organizationId, version);
  return services.store.downloadLink(firmware.storage_key, ttlSeconds);
}

export function listFirmware(db: Queryable, organizationId: string) {
  return repo.listFirmware(db, organizationId);
}
