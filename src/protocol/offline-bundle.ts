/**
 * Offline bundles: firmware carried to a device on a stick or a service laptop, installed with
 * `edgeflow-agent install <bundle>` while the server is out of reach.
 *
 * A bundle is one file, written and read as a stream (firmware can be GiBs):
 *
 *     EDGEFLOW-OFFLINE-BUNDLE 1\n
 *     {"manifest":{…},"signature":"<base64>"}\n      one line of JSON, at most 64 KiB
 *     <the image: manifest.size bytes, to the end of the file>
 *
 * The header is written as text by offline-bundle-header.ts (the CLI and the dashboard), read and
 * written as bytes by offline-bundle-file.ts (the agent, the CLI). The manifest is signed by the
 * server with the organization's Ed25519 key (the key that signs every update, manifest.ts), over
 * its canonical JSON. Its `kind` is `offline`: no manifest of an
 * online update (kind `update` or `rollback`) passes for one, nor the other way round.
 */
import { type Static, Type } from 'typebox';
import { Compile } from 'typebox/compile';
import { SEMVER_FORMAT } from './version.ts';

/** The magic line and the header line together are at most this long. */
export const MAX_BUNDLE_HEADER_BYTES = 64 * 1024;

export const OfflineManifest = Type.Object({
  kind: Type.Literal('offline'),
  bundle_id: Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9_-]+$' }),
  organization_id: Type.String({ minLength: 1, maxLength: 128 }),
  version: Type.String({ minLength: 5, maxLength: 64, format: SEMVER_FORMAT }),
  sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }),
  size: Type.Integer({ minimum: 1 }),
  artifact_type: Type.String({ minLength: 1, maxLength: 16 }),
  /** Empty: any model. */
  compatible_models: Type.Array(Type.String({ maxLength: 128 })),
  issued_at: Type.String({ minLength: 1, maxLength: 64 }),
  expires_at: Type.String({ minLength: 1, maxLength: 64 }),
});
export type OfflineManifest = Static<typeof OfflineManifest>;

export const OfflineBundleHeader = Type.Object({
  manifest: Type.Unknown(),
  signature: Type.String({ minLength: 1, maxLength: 256 }),
});
export type OfflineBundleHeader = { manifest: unknown; signature: string };

export const validateOfflineManifest = Compile(OfflineManifest);
export const validateBundleHeader = Compile(OfflineBundleHeader);
