/**
 * An offline bundle made in the browser, the file `edgeflow-ota firmware export` writes: the
 * server signs the manifest (the organization's key never leaves it), the image comes through the
 * firmware's download link and is checked against the manifest (size and SHA256, streamed through
 * @noble/hashes as an upload's is), and the file is the header text and the image as one Blob,
 * saved through a download link. The browser keeps the Blob (on disk when large), not the page.
 */
import type { OfflineManifest } from '../protocol/offline-bundle.ts';
import { bundleFileName, bundleHeaderText } from '../protocol/offline-bundle-header.ts';
import { ApiError, api } from './api.ts';
import { sha256OfFile } from './upload.ts';

export interface OfflineBundle {
  blob: Blob;
  /** The name to save it under, the CLI's default. */
  file: string;
  manifest: OfflineManifest;
}

/** The bundle of `version`, valid until `expiresAt` (else the server's default lifetime). */
export async function makeOfflineBundle(version: string, expiresAt: string | undefined): Promise<OfflineBundle> {
  const path = `/api/v1/firmware/${encodeURIComponent(version)}`;
  const { manifest, signature } = await api<{ manifest: OfflineManifest; signature: string }>(
    `${path}/offline-bundle`,
    { method: 'POST', body: expiresAt === undefined ? {} : { expires_at: expiresAt } },
  );
  const link = await api<{ url: string }>(`${path}/download-url`, { method: 'POST', body: {} });
  const image = await downloadImage(version, link.url);
  const sha256 = await sha256OfFile(image);
  if (image.size !== manifest.size || sha256 !== manifest.sha256) {
    throw new ApiError(
      0,
      'checksum_mismatch',
      `the downloaded image (${image.size} bytes, sha256 ${sha256}) is not the firmware the manifest names ` +
        `(${manifest.size} bytes, ${manifest.sha256}): nothing saved`,
    );
  }
  return {
    blob: new Blob([bundleHeaderText(manifest, signature), image], { type: 'application/octet-stream' }),
    file: bundleFileName(manifest.version),
    manifest,
  };
}

/**
 * The image behind a download link. The page may read only its own origin (the local store's
 * links); an S3 store's presigned links are another origin, refused here in words.
 */
async function downloadImage(version: string, url: string): Promise<Blob> {
  const target = new URL(url, location.href);
  if (target.origin !== location.origin) {
    throw new ApiError(
      0,
      'other_origin',
      `firmware ${version} is served from ${target.origin}, which this page may not read: ` +
        `\`edgeflow-ota firmware export ${version}\` writes the same bundle`,
    );
  }
  let response: Response;
  try {
    response = await fetch(target);
  } catch {
    throw new ApiError(0, 'unreachable', `could not download firmware ${version}: the server does not answer`);
  }
  if (!response.ok) {
    throw new ApiError(
      response.status,
      `http_${response.status}`,
      `could not download firmware ${version}: HTTP ${response.status}`,
    );
  }
  return response.blob();
}

/** Hands a Blob to the browser as a file to save. */
export function saveBlob(blob: Blob, name: string): void {
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  // Revoked once the browser has surely taken it: at once could cancel the download.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
