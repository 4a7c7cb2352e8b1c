export { BlobNotFoundError, type LinkVerdict, LocalBlobStore, type LocalOptions } from './local.ts';
export { S3BlobStore, type S3Options } from './s3.ts';
export type { BlobStore, DownloadLink, StagedObject } from './types.ts';
