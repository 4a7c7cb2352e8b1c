import { LocalBlobStore, type LocalOptions } from './local.ts';
import { S3BlobStore, type S3Options } from './s3.ts';

export { BlobNotFoundError, type LinkVerdict, LocalBlobStore, type LocalOptions } from './local.ts';
export { S3BlobStore, type S3Options } from './s3.ts';
export type { BlobStore, DownloadLink, StagedObject } from './types.ts';

export interface BlobStoreConfig {
  kind: 'local' | 's3';
  local?: LocalOptions;
  s3?: S3Options;
}

/** The union, not BlobStore: `store.kind === 'local'` then narrows to the class with verifyLink and openRead. */
export function createBlobStore(config: BlobStoreConfig): LocalBlobStore | S3BlobStore {
  if (config.kind === 'local') {
    if (!config.local) throw new Error('blob store kind local needs its local options');
    return new LocalBlobStore(config.local);
  }
  if (!config.s3) throw new Error('blob store kind s3 needs its s3 options');
  return new S3BlobStore(config.s3);
}
