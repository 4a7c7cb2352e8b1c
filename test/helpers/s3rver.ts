import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';

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
      await rm(directory, { recursive: true, force: true });
    },
  };
}
