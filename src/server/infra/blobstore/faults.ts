import { StorageFullError, StorageUnavailableError } from '../errors.ts';

/** No room: the disk or a quota is full. */
const FULL_CODES = new Set(['ENOSPC', 'EDQUOT']);
/** The store is there but refuses writes or cannot be used: read-only, permissions, I/O errors. */
const UNAVAILABLE_CODES = new Set(['EROFS', 'EACCES', 'EPERM', 'EIO', 'EBUSY']);

/**
 * Names a file-system fault of the store (ENOSPC → storage_full, EROFS/EACCES … →
 * storage_unavailable) so that clients get 507/503 with a code instead of a 500. Any other
 * error (a client hanging up mid-upload, a file over the limit) is returned unchanged.
 */
export function fileSystemFault(error: unknown): unknown {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code !== 'string') return error;
  if (FULL_CODES.has(code)) return new StorageFullError();
  if (UNAVAILABLE_CODES.has(code)) {
    return new StorageUnavailableError(`the firmware store refuses the operation (${code}); nothing was changed`);
  }
  return error;
}

/**
 * The same for an S3 client: the store answering 5xx (507 and MinIO's XMinioStorageFull for a
 * full disk), refusing access (403), or not answering at all.
 */
export function s3Fault(error: unknown): unknown {
  const failure = error as { name?: string; code?: string; $metadata?: { httpStatusCode?: number } } | undefined;
  const status = failure?.$metadata?.httpStatusCode;
  const name = failure?.name ?? '';
  if (status === 507 || name === 'XMinioStorageFull' || name === 'StorageFull') return new StorageFullError();
  const networkCodes = ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND', 'EPIPE'];
  if (
    (status !== undefined && (status >= 500 || status === 403)) ||
    name === 'TimeoutError' ||
    name === 'AccessDenied' ||
    (failure?.code !== undefined && networkCodes.includes(failure.code))
  ) {
    return new StorageUnavailableError(
      `the firmware store refuses the operation (${name || failure?.code || status}); nothing was changed`,
    );
  }
  return error;
}
