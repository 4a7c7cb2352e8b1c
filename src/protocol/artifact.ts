/**
 * The kinds of firmware artifact, named by their file extension: what the server accepts on
 * upload and keeps in the object key (`firmware/{org}/{version}/{sha256}.{kind}`), and what each
 * of the agent's installers takes. Shared, so that the upload's refusal and the device's check
 * say the same thing.
 */
import { Type } from 'typebox';

export const ARTIFACT_KINDS = ['bin', 'img', 'ext4', 'raucb', 'swu'] as const;
export type ArtifactKind = (typeof ARTIFACT_KINDS)[number];

export const ArtifactKindSchema = Type.Union(
  [Type.Literal('bin'), Type.Literal('img'), Type.Literal('ext4'), Type.Literal('raucb'), Type.Literal('swu')],
  {
    description:
      'bin, img, ext4: a raw image written onto the inactive slot (uboot, grub, ab, script); raucb: a RAUC bundle ' +
      '(rauc); swu: a SWUpdate image (swupdate). Taken from the file name.',
  },
);

/** What each kind is, for messages and the API documentation. */
export const artifactKindMeaning: Record<ArtifactKind, string> = {
  bin: 'raw image',
  img: 'raw disk or partition image',
  ext4: 'raw ext4 file-system image',
  raucb: 'RAUC bundle',
  swu: 'SWUpdate image',
};

/** The kind a file name (or a URL path) names by its extension, or undefined for any other. */
export function artifactKindOf(name: string): ArtifactKind | undefined {
  const dot = name.lastIndexOf('.');
  if (dot < 0) return undefined;
  const extension = name.slice(dot + 1).toLowerCase();
  return (ARTIFACT_KINDS as readonly string[]).includes(extension) ? (extension as ArtifactKind) : undefined;
}

/** Images an installer copies byte for byte onto a partition (or a slot directory). */
export const RAW_IMAGE_KINDS: readonly ArtifactKind[] = ['bin', 'img', 'ext4'];
