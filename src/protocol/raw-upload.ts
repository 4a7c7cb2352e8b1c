import { hasControlCharacter } from './text.ts';

/**
 * Past this, a URL may meet a proxy's or a server's limit (Node's is 16 KiB for all the headers);
 * the metadata then travels in a form instead.
 */
const RAW_UPLOAD_PATH_MAX_CHARS = 8 * 1024;

/**
 * The path and query of a raw firmware upload (PUT /api/v1/firmware/{version}, the file as the
 * body), or undefined when the metadata cannot travel in a URL (release notes with line breaks,
 * or too long): the caller sends a multipart form to POST /api/v1/firmware then. The CLI and the
 * dashboard upload this way; the raw body costs the server less than a form (no multipart parser).
 */
export function rawUploadPath(fields: {
  version: string;
  sha256: string;
  filename: string;
  release_notes?: string | undefined;
  compatible_models?: readonly string[] | undefined;
}): string | undefined {
  if (fields.version === '' || hasControlCharacter(fields.release_notes ?? '')) return undefined;
  const query = new URLSearchParams({ sha256: fields.sha256, filename: fields.filename });
  if (fields.release_notes) query.set('release_notes', fields.release_notes);
  if (fields.compatible_models?.length) query.set('compatible_models', fields.compatible_models.join(','));
  const path = `/api/v1/firmware/${encodeURIComponent(fields.version)}?${query}`;
  return path.length <= RAW_UPLOAD_PATH_MAX_CHARS ? path : undefined;
}
