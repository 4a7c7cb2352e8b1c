/** Firmware on the wire. */
import { Type } from 'typebox';
import { ArtifactKindSchema } from '../../protocol/artifact.ts';
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
