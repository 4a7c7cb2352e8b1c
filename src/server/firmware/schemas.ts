/** Firmware on the wire. */
import { Type } from 'typebox';
import { ArtifactKindSchema } from '../../protocol/artifact.ts';
import { OfflineManifest } from '../../protocol/offline-bundle.ts';
import { Timestamp } from '../infra/schemas.ts';

export const Firmware = Type.Object({
  version: Type.String(),
  sha256: Type.String(),
  size: Type.Integer(),
  storage_key: Type.String(),
  artifact_type: ArtifactKindSchema,
  release_notes: Type.Union([Type.String(), Type.Null()]),
  compatible_models: Type.Array(Type.String()),
  created_at: Timestamp,
});

/** `POST /api/v1/firmware/{version}/offline-bundle`: the manifest and its base64 Ed25519 signature. */
export const OfflineBundleManifest = Type.Object({ manifest: OfflineManifest, signature: Type.String() });
