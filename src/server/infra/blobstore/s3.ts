import { randomUUID } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  type BucketLocationConstraint,
  CopyObjectCommand,
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  PutObjectCommand,
  paginateListObjectsV2,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { s3Fault } from './faults.ts';
import { assertSafeKey } from './keys.ts';
import { HashingMeter } from './meter.ts';
import type { BlobStore, DownloadLink, StagedObject } from './types.ts';

export interface S3Options {
  /** Absent → AWS's own endpoint for `region`. */
  endpoint?: string;
  region: string;
  bucket: string;
  /** Both absent → the SDK's default credential chain (environment, instance role …). */
  accessKeyId?: string;
  secretAccessKey?: string;
  /** Needed by MinIO and most S3-compatible servers reached by IP or a single host name. */
  forcePathStyle: boolean;
  /** Host name devices reach S3 under, when it differs from the server's; used only to presign. */
  publicEndpoint?: string;
}

const STAGING_PREFIX = 'staging/';
const PART_SIZE_BYTES = 8 * 1024 * 1024;
const PARTS_IN_FLIGHT = 4;

/**
 * Firmware in an S3 bucket (AWS S3, MinIO, or any S3-protocol server). Devices download
 * straight from the bucket through presigned GET URLs, so firmware bytes never pass through
 * the server on the way out.
 */
/** How long a successful ping answers for the bucket at once, and while the next one runs. */
const PING_FRESH_MS = 5000;
const PING_VALID_MS = 60_000;

export class S3BlobStore implements BlobStore {
  readonly kind = 's3';
  readonly #client: S3Client;
  #pingedAtMs = Number.NEGATIVE_INFINITY;
  #probing: Promise<void> | undefined;
  /** Same credentials, other host name: signing involves no request, so it costs no sockets. */
  readonly #presigner: S3Client;
  readonly #bucket: string;
  readonly #region: string;

  constructor(options: S3Options) {
    this.#bucket = options.bucket;
    this.#region = options.region;
    this.#client = new S3Client(clientConfig(options, options.endpoint));
    this.#presigner =
      options.publicEndpoint && options.publicEndpoint !== options.endpoint
        ? new S3Client(clientConfig(options, options.publicEndpoint))
        : this.#client;
  }

  async stage(body: Readable, options: { maxBytes: number }): Promise<StagedObject> {
    const tempKey = `${STAGING_PREFIX}${randomUUID()}`;
    const meter = new HashingMeter(options.maxBytes);
    // Multipart upload of 8 MiB parts, at most PARTS_IN_FLIGHT of them buffered at a time,
    // whatever the size of the file.
    const upload = new Upload({
      client: this.#client,
      params: { Bucket: this.#bucket, Key: tempKey, Body: meter, ContentType: 'application/octet-stream' },
      partSize: PART_SIZE_BYTES,
      queueSize: PARTS_IN_FLIGHT,
    });
    // Without this, done() would first wait for the parts already in flight. lib-storage then
    // sends AbortMultipartUpload in the background, which frees the parts on S3 and MinIO; s3rver
    // answers it 405 (it has no route for it), an error lib-storage reports nowhere once done()
    // has rejected, and its parts stay in s3rver's directory, where no listing shows them.
    meter.once('error', () => void upload.abort());
    // Attached before any await, so an early error of `body` is never an unhandled event.
    const piping = pipeline(body, meter);
    let sha256: string;
    try {
      await upload.done();
      await piping;
      sha256 = await meter.digestHex();
    } catch (error) {
      // The meter holds the real cause (FileTooLargeError, the body's own error); done() only
      // reports "Upload aborted" for those.
      const cause = meter.errored ?? s3Fault(error);
      meter.destroy();
      await piping.catch(() => {});
      await upload.abort();
      // A body under one part goes up as a plain PUT, which may have landed. If this delete
      // fails too, the object is under staging/ and sweepStaged collects it.
      await this.delete(tempKey).catch(() => {});
      throw cause;
    }
    return { tempKey, size: meter.bytes, sha256 };
  }

  async promote(tempKey: string, key: string): Promise<void> {
    assertSafeKey(tempKey);
    assertSafeKey(key);
    // CopyObject is limited to 5 GiB; bigger objects would need a multipart copy
    // (UploadPartCopy). The firmware size limit in the config keeps us far below that.
    try {
      await this.#client.send(
        new CopyObjectCommand({
          Bucket: this.#bucket,
          Key: key,
          CopySource: `${this.#bucket}/${tempKey.split('/').map(encodeURIComponent).join('/')}`,
        }),
      );
    } catch (error) {
      throw s3Fault(error);
    }
    // A staged copy left behind is collected by sweepStaged.
    await this.delete(tempKey).catch(() => {});
  }

  async discard(tempKey: string): Promise<void> {
    await this.delete(tempKey);
  }

  async delete(key: string): Promise<void> {
    assertSafeKey(key);
    try {
      await this.#client.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: key }));
    } catch (error) {
      if (!isNotFound(error)) throw s3Fault(error);
    }
  }

  async exists(key: string): Promise<boolean> {
    assertSafeKey(key);
    try {
      await this.#client.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: key }));
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }

  async downloadLink(key: string, ttlSeconds: number): Promise<DownloadLink> {
    assertSafeKey(key);
    const signedAtMs = Date.now();
    const url = await getSignedUrl(this.#presigner, new GetObjectCommand({ Bucket: this.#bucket, Key: key }), {
      expiresIn: ttlSeconds,
      signingDate: new Date(signedAtMs),
    });
    return { url, expires_at: new Date(signedAtMs + ttlSeconds * 1000).toISOString() };
  }

  async listKeys(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    for await (const object of this.#listObjects(prefix)) keys.push(object.key);
    return keys.sort();
  }

  async sweepStaged(olderThanMs: number): Promise<number> {
    const cutoffMs = Date.now() - olderThanMs;
    // Collect first: deleting while paginating could shift the listing under the cursor.
    const abandoned: string[] = [];
    for await (const object of this.#listObjects(STAGING_PREFIX)) {
      if (object.lastModifiedMs < cutoffMs) abandoned.push(object.key);
    }
    for (const key of abandoned) await this.delete(key);
    return abandoned.length;
  }

  /** A tiny object written and removed under staging/ (sweepStaged collects it if the delete fails). */
  /**
   * The bucket exists and takes a write: three requests. A load balancer asks every replica every
   * second, and under a rollout's downloads the bucket answers slowly (a minute, in P7 on one
   * machine), so: a success within PING_FRESH_MS answers at once; within PING_VALID_MS it answers
   * too while a new probe runs behind it; a probe that failed, or none recent, is waited for.
   */
  async ping(): Promise<void> {
    const sinceMs = performance.now() - this.#pingedAtMs;
    if (sinceMs < PING_FRESH_MS) return;
    this.#probing ??= this.#probe().finally(() => {
      this.#probing = undefined;
    });
    const probe = this.#probing;
    if (sinceMs < PING_VALID_MS) {
      probe.catch(() => {});
      return;
    }
    await probe;
  }

  async #probe(): Promise<void> {
    try {
      await this.#client.send(new HeadBucketCommand({ Bucket: this.#bucket }));
      const probe = `${STAGING_PREFIX}probe-${randomUUID()}`;
      await this.#client.send(new PutObjectCommand({ Bucket: this.#bucket, Key: probe, Body: 'ready?' }));
      await this.#client.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: probe }));
      this.#pingedAtMs = performance.now();
    } catch (error) {
      // A failed probe is the answer until one succeeds: the next ping waits for its own.
      this.#pingedAtMs = Number.NEGATIVE_INFINITY;
      throw error;
    }
  }

  /** S3 has no notion of free space. */
  async freeBytes(): Promise<undefined> {
    return undefined;
  }

  /** Creates the bucket if it is missing; for development setups and tests, not production. */
  async ensureBucket(): Promise<void> {
    try {
      await this.ping();
      return;
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
    try {
      await this.#client.send(
        new CreateBucketCommand({
          Bucket: this.#bucket,
          // us-east-1 is the one region that refuses an explicit location constraint.
          ...(this.#region === 'us-east-1'
            ? {}
            : { CreateBucketConfiguration: { LocationConstraint: this.#region as BucketLocationConstraint } }),
        }),
      );
    } catch (error) {
      // Another replica starting at the same moment may have won the race.
      if (errorName(error) !== 'BucketAlreadyOwnedByYou') throw error;
    }
  }

  async close(): Promise<void> {
    this.#client.destroy();
    if (this.#presigner !== this.#client) this.#presigner.destroy();
  }

  async *#listObjects(prefix: string): AsyncGenerator<{ key: string; lastModifiedMs: number }> {
    const pages = paginateListObjectsV2({ client: this.#client }, { Bucket: this.#bucket, Prefix: prefix });
    for await (const page of pages) {
      for (const object of page.Contents ?? []) {
        if (object.Key !== undefined) {
          yield { key: object.Key, lastModifiedMs: object.LastModified?.getTime() ?? 0 };
        }
      }
    }
  }
}

function clientConfig(options: S3Options, endpoint: string | undefined): S3ClientConfig {
  const agentOptions = { keepAlive: true, maxSockets: 64 };
  return {
    region: options.region,
    endpoint,
    forcePathStyle: options.forcePathStyle,
    credentials:
      options.accessKeyId && options.secretAccessKey
        ? { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey }
        : undefined,
    // Since SDK 3.729 the default puts CRC32 checksum headers (x-amz-sdk-checksum-algorithm,
    // x-amz-checksum-crc32) on every PutObject and UploadPart, and S3-compatible stores that
    // predate them refuse the request (older MinIO, Backblaze B2, …); s3rver 3.7 happens to
    // ignore them. Integrity does not depend on them: we hash every upload ourselves and the
    // device checks the SHA256 again after download.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: {
      httpAgent: new http.Agent(agentOptions),
      httpsAgent: new https.Agent(agentOptions),
      // A store that accepts the connection and then stalls must fail the upload, not hang it.
      connectionTimeout: 10_000,
      requestTimeout: 120_000,
    },
  };
}

function errorName(error: unknown): unknown {
  return (error as { name?: unknown } | undefined)?.name;
}

function isNotFound(error: unknown): boolean {
  const status = (error as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
  const name = errorName(error);
  return status === 404 || name === 'NotFound' || name === 'NoSuchKey' || name === 'NoSuchBucket';
}
