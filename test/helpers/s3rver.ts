import { fork } from 'node:child_process';
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { S3BlobStore, type S3Options } from '../../src/server/infra/blobstore/s3.ts';

/** The part of s3rver's API used here; the package ships no type declarations. */
interface S3rverInstance {
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
}
type S3rverConstructor = new (options: {
  address: string;
  port: number;
  directory: string;
  silent: boolean;
  configureBuckets: { name: string }[];
}) => S3rverInstance;

const S3rver = createRequire(import.meta.url)('s3rver') as S3rverConstructor;

export interface RunningS3rver {
  /** Path-style endpoint, e.g. http://127.0.0.1:34567. */
  endpoint: string;
  bucket: string;
  /** s3rver's built-in account; it checks the access key id but never a SigV4 signature. */
  accessKeyId: string;
  secretAccessKey: string;
  stop(): Promise<void>;
}

/** An S3-protocol server on a free loopback port, storing into a fresh temporary directory. */
export async function startS3rver(): Promise<RunningS3rver> {
  const directory = await mkdtemp(path.join(os.tmpdir(), 'edgeflow-s3rver-'));
  const bucket = 'edgeflow-test';
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    directory,
    silent: true,
    configureBuckets: [{ name: bucket }],
  });
  const { port } = await server.run();
  return {
    endpoint: `http://127.0.0.1:${port}`,
    bucket,
    accessKeyId: 'S3RVER',
    secretAccessKey: 'S3RVER',
    async stop() {
      await server.close();
      // Its files go when this process exits, not now: a request whose client went away (a
      // replica killed or stopped mid-probe) may still be writing, and s3rver throws what its
      // file streams hit (ENOENT) as an uncaught exception.
      process.once('exit', () => rmSync(directory, { recursive: true, force: true }));
    },
  };
}

/**
 * The same in a child process (s3rver-process.ts): for suites that kill clients of the bucket
 * mid-request (replicas killed with SIGKILL), whose aborted requests s3rver answers with an
 * uncaught exception; and for benchmarks, to keep the bucket's work off the measuring process.
 */
export async function startS3rverProcess(): Promise<RunningS3rver> {
  const child = fork(fileURLToPath(new URL('./s3rver-process.ts', import.meta.url)), [], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const [message] = (await Promise.race([
    once(child, 'message'),
    once(child, 'exit').then(([code]) => {
      throw new Error(`the s3rver process exited (${code}) before it listened`);
    }),
  ])) as [Omit<RunningS3rver, 'stop'>];
  return {
    ...message,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** An S3 store on `s3`'s bucket as the tests reach it (path-style, its account); `options` change any of it. */
export function s3StoreOn(s3: Omit<RunningS3rver, 'stop'>, options: Partial<S3Options> = {}): S3BlobStore {
  return new S3BlobStore({
    endpoint: s3.endpoint,
    region: 'us-east-1',
    bucket: s3.bucket,
    accessKeyId: s3.accessKeyId,
    secretAccessKey: s3.secretAccessKey,
    forcePathStyle: true,
    ...options,
  });
}
