/** The offline bundle's header as bytes (the format: offline-bundle.ts), for the agent and the CLI. */
import { Buffer } from 'node:buffer';
import { type OfflineBundleHeader, type OfflineManifest, validateBundleHeader } from './offline-bundle.ts';
import { BUNDLE_MAGIC, bundleHeaderText } from './offline-bundle-header.ts';

/** The bytes before the image. */
export function encodeBundleHeader(manifest: OfflineManifest, signature: string): Buffer {
  return Buffer.from(bundleHeaderText(manifest, signature));
}

/**
 * The header read from a bundle's first bytes (at most MAX_BUNDLE_HEADER_BYTES of them), and
 * where the image starts; or why these bytes are no bundle. The manifest is not checked here.
 */
export function parseBundleHeader(
  head: Buffer,
): { ok: true; header: OfflineBundleHeader; imageOffset: number } | { ok: false; reason: string } {
  const magic = Buffer.from(BUNDLE_MAGIC);
  if (head.length < magic.length || !head.subarray(0, magic.length).equals(magic)) {
    return { ok: false, reason: 'not an EdgeFlow offline bundle (no EDGEFLOW-OFFLINE-BUNDLE 1 header)' };
  }
  const end = head.indexOf(0x0a, magic.length);
  if (end < 0) return { ok: false, reason: 'the bundle header is cut short or longer than 64 KiB' };
  let header: unknown;
  try {
    header = JSON.parse(head.subarray(magic.length, end).toString('utf8'));
  } catch {
    return { ok: false, reason: 'the bundle header is not JSON' };
  }
  if (!validateBundleHeader.Check(header))
    return { ok: false, reason: 'the bundle header has no manifest and signature' };
  return { ok: true, header, imageOffset: end + 1 };
}
