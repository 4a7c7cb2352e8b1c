/**
 * The offline bundle's pure part (the format: offline-bundle.ts): the text before the image, the
 * file's default name and the lifetime an operator asks for. No Node and no schema library, so
 * the CLI (through offline-bundle-file.ts) and the dashboard write the same bytes.
 */
import type { OfflineManifest } from './offline-bundle.ts';

export const BUNDLE_MAGIC = 'EDGEFLOW-OFFLINE-BUNDLE 1\n';

/** The magic line and the header line: everything before the image. */
export function bundleHeaderText(manifest: OfflineManifest, signature: string): string {
  return `${BUNDLE_MAGIC}${JSON.stringify({ manifest, signature })}\n`;
}

/** The name a bundle is saved under unless one is given: `edgeflow-1.4.2.bundle`. */
export function bundleFileName(version: string): string {
  return `edgeflow-${version}.bundle`;
}

/** A bundle's lifetime as an operator writes it (`--expires-in`, the dashboard): `90m`, `12h`, `30d`, `2w`. */
export function parseBundleLifetime(text: string): number | undefined {
  const match = /^(\d{1,6})([mhdw])$/.exec(text.trim());
  if (!match) return undefined;
  const unit = { m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[match[2] as 'm' | 'h' | 'd' | 'w'];
  const ms = Number(match[1]) * unit;
  return ms > 0 ? ms : undefined;
}

/** Why a lifetime is not one, in the words the CLI and the dashboard both show. */
export function bundleLifetimeRefusal(what: string, text: string): string {
  return `${what} takes 90m, 12h, 30d or 2w, not ${JSON.stringify(text)}`;
}
