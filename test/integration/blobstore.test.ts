/**
 * Both firmware blob stores against the same contract: the local directory (served here by a
 * minimal stand-in for the server's `GET /dl/*` route) and S3 (against s3rver, a real
 * S3-protocol server, through the real AWS SDK).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import { after, afterEach, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { BlobNotFoundError, LocalBlobStore, type S3BlobStore } from '../../src/server/infra/blobstore/index.ts';
import type { BlobStore } from '../../src/server/infra/blobstore/types.ts';
import { FileTooLargeError, StorageUnavailableError } from '../../src/server/infra/errors.ts';
import { type RunningS3rver, s3StoreOn, startS3rver } from '../helpers/s3rver.ts';

const MiB = 1024 * 1024;
const CHUNK_BYTES = 64 * 1024;

/**
 * Deterministic pseudo-random bytes (xorshift32), produced chunk by chunk so that a 50 MiB
 * body never exists in memory; the same seed regenerates the same bytes for the expected hash.
 * With `failAfterBytes` the stream dies mid-way like a client whose connection drops.
 */
function seededBytes(totalBytes: number, seed: number, failAfterBytes?: number): Readable {
  let state = seed >>> 0 || 1;
  let produced = 0;
  return new Readable({
    read() {
      if (failAfterBytes !== undefined && produced >= failAfterBytes) {
        this.destroy(new Error('connection reset by peer'));
        return;
      }
      if (produced >= totalBytes) {
        this.push(null);
        return;
      }
      const words = new Uint32Array(CHUNK_BYTES / 4);
      for (let i = 0; i < words.length; i++) {
        state ^= state << 13;
        state ^= state >>> 17;
        state ^= state << 5;
        words[i] = state >>> 0;
      }
      const size = Math.min(CHUNK_BYTES, totalBytes - produced);
      produced += size;
      this.push(Buffer.from(words.buffer, 0, size));
    },
  });
}

async function digestOf(chunks: AsyncIterable<Uint8Array>): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of chunks) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { sha256: hash.digest('hex'), size };
}

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of chunks) parts.push(Buffer.from(chunk));
  return Buffer.concat(parts);
}

function responseBody(response: Response): Readable {
  assert.ok(response.body, 'response has a body');
  return Readable.fromWeb(response.body as NodeReadableStream<Uint8Array>);
}

async function stageBytes(store: BlobStore, bytes: Buffer): Promise<string> {
  const staged = await store.stage(Readable.from([bytes]), { maxBytes: bytes.length });
  return staged.tempKey;
}

function firmwareKey(organizationId: string, version: string, sha256: string): string {
  return `firmware/${organizationId}/${version}/${sha256}.bin`;
}

/** The behaviour the rest of the server relies on, identical for both stores. */
function blobStoreContract(getStore: () => BlobStore): void {
  afterEach(async () => {
    const store = getStore();
    for (const key of await store.listKeys('')) await store.delete(key);
  });

  it('stages, promotes and serves a 50 MiB file through its download link, byte for byte', async () => {
    const store = getStore();
    const size = 50 * MiB;
    const expected = await digestOf(seededBytes(size, 42));

    const staged = await store.stage(seededBytes(size, 42), { maxBytes: 64 * MiB });
    assert.equal(staged.size, size);
    assert.equal(staged.sha256, expected.sha256);
    assert.deepEqual(await store.listKeys(''), [staged.tempKey]);

    // "+build" is legal semver and must survive URL encoding on both stores.
    const key = firmwareKey('org-1', '1.2.3+build.7', staged.sha256);
    await store.promote(staged.tempKey, key);
    assert.equal(await store.exists(key), true);
    assert.equal(await store.exists(staged.tempKey), false);
    assert.deepEqual(await store.listKeys(''), [key]);
    assert.deepEqual(await store.listKeys('firmware/org-1/'), [key]);
    assert.deepEqual(await store.listKeys('firmware/org-2/'), []);

    const link = await store.downloadLink(key, 60);
    const expiresInMs = Date.parse(link.expires_at) - Date.now();
    assert.ok(expiresInMs > 55_000 && expiresInMs <= 60_000, `expires_at ${link.expires_at} is about 60 s ahead`);
    const response = await fetch(link.url);
    assert.equal(response.status, 200);
    assert.deepEqual(await digestOf(responseBody(response)), expected);
  });

  it('rejects a body over maxBytes with FileTooLargeError and leaves nothing behind', async () => {
    const store = getStore();
    // Past two 8 MiB parts, so the S3 store has a multipart upload in flight to abandon.
    await assert.rejects(store.stage(seededBytes(30 * MiB, 7), { maxBytes: 20 * MiB }), FileTooLargeError);
    assert.deepEqual(await store.listKeys(''), []);
  });

  it('accepts a body of exactly maxBytes', async () => {
    const store = getStore();
    const staged = await store.stage(seededBytes(MiB, 8), { maxBytes: MiB });
    assert.equal(staged.size, MiB);
  });

  it('rejects with the body’s own error when it fails mid-way, and leaves nothing behind', async () => {
    const store = getStore();
    await assert.rejects(store.stage(seededBytes(40 * MiB, 9, 12 * MiB), { maxBytes: 64 * MiB }), {
      message: 'connection reset by peer',
    });
    assert.deepEqual(await store.listKeys(''), []);
  });

  it('discard removes a staged object, delete is idempotent, exists tells present from absent', async () => {
    const store = getStore();
    const tempKey = await stageBytes(store, Buffer.from('firmware image'));
    assert.equal(await store.exists(tempKey), true);
    await store.discard(tempKey);
    assert.equal(await store.exists(tempKey), false);
    await store.discard(tempKey);

    const key = firmwareKey('org-1', '2.0.0', 'a'.repeat(64));
    await store.promote(await stageBytes(store, Buffer.from('another image')), key);
    assert.equal(await store.exists(key), true);
    await store.delete(key);
    assert.equal(await store.exists(key), false);
    await store.delete(key);
    assert.deepEqual(await store.listKeys(''), []);
  });

  it('sweepStaged removes only staged objects older than the cutoff', async () => {
    const store = getStore();
    const key = firmwareKey('org-1', '3.0.0', 'b'.repeat(64));
    await store.promote(await stageBytes(store, Buffer.from('kept')), key);
    const abandoned = await stageBytes(store, Buffer.from('left by a crash'));

    assert.equal(await store.sweepStaged(60 * 60 * 1000), 0);
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(await store.sweepStaged(0), 1);
    assert.equal(await store.exists(abandoned), false);
    assert.deepEqual(await store.listKeys(''), [key]);
  });

  it('refuses keys that could escape the store', async () => {
    const store = getStore();
    const tempKey = await stageBytes(store, Buffer.from('x'));
    for (const bad of ['/etc/passwd', '../outside.bin', 'firmware/a/../../b', 'firmware\\a', 'firmware/a\0b', '']) {
      await assert.rejects(store.promote(tempKey, bad), /unsafe blob key/, bad);
      await assert.rejects(store.exists(bad), /unsafe blob key/, bad);
      await assert.rejects(store.downloadLink(bad, 60), /unsafe blob key/, bad);
    }
    assert.equal(await store.exists(tempKey), true);
  });
}

describe('LocalBlobStore', () => {
  let rootDir: string;
  let store: LocalBlobStore;
  let server: FastifyInstance;

  before(async () => {
    rootDir = await mkdtemp(path.join(os.tmpdir(), 'edgeflow-blobs-'));
    // Just enough of the server's download route to prove that links round-trip through HTTP.
    server = Fastify();
    server.get('/dl/*', async (request, reply) => {
      const key = (request.params as { '*': string })['*'];
      const query = request.query as { expires?: string; signature?: string };
      const verdict = store.verifyLink(key, query.expires ?? '', query.signature ?? '');
      if (verdict !== 'ok') return reply.code(403).send({ error: verdict });
      const { stream, size } = await store.openRead(key);
      return reply.header('content-length', size).send(stream);
    });
    await server.listen({ host: '127.0.0.1', port: 0 });
    const { port } = server.server.address() as AddressInfo;
    store = new LocalBlobStore({ rootDir, publicUrl: `http://127.0.0.1:${port}/`, signingSecret: 'test-secret' });
    await store.ping();
  });

  after(async () => {
    await store.close();
    await server.close();
    await rm(rootDir, { recursive: true, force: true });
  });

  blobStoreContract(() => store);

  it('stages bodies of every size around a block and a slot byte for byte, with direct writes and through the page cache', async () => {
    const bufferedRoot = await mkdtemp(path.join(os.tmpdir(), 'edgeflow-blobs-buffered-'));
    const buffered = new LocalBlobStore({
      rootDir: bufferedRoot,
      publicUrl: 'http://127.0.0.1/',
      signingSecret: 'test-secret',
      directWrites: false,
    });
    try {
      // Direct writes pad the last block and cut the file back; 9 MiB is past the 8 slots of 1 MiB.
      const sizes = [1, 4095, 4096, 4097, MiB - 1, MiB, MiB + 1, 9 * MiB + 77];
      for (const [name, target] of [
        ['direct', store],
        ['buffered', buffered],
      ] as const) {
        for (const size of sizes) {
          const bytes = await collect(seededBytes(size, size));
          // Chunks that never line up with a block or a slot.
          const chunks: Buffer[] = [];
          for (let offset = 0; offset < size; offset += 3001 + (offset % 7)) {
            chunks.push(bytes.subarray(offset, Math.min(size, offset + 3001 + (offset % 7))));
          }
          const staged = await target.stage(Readable.from(chunks), { maxBytes: size });
          const expected = await digestOf(Readable.from([bytes]));
          assert.deepEqual({ size: staged.size, sha256: staged.sha256 }, expected, `${name}, ${size} bytes`);
          assert.equal((await target.stat(staged.tempKey)).size, size, `${name}, ${size} bytes on disk`);
          assert.ok((await collect((await target.openRead(staged.tempKey)).stream)).equals(bytes), `${name}, ${size}`);
          await target.discard(staged.tempKey);
        }
      }
    } finally {
      await buffered.close();
      await rm(bufferedRoot, { recursive: true, force: true });
    }
  });

  // s3rver never checks SigV4 signatures, so link tampering can only be proven on our own signing.
  it('verifyLink: ok when untouched, invalid when tampered or moved to another key, expired after expiry', async () => {
    const key = firmwareKey('org-1', '1.0.0', 'c'.repeat(64));
    const link = await store.downloadLink(key, 60);
    const url = new URL(link.url);
    assert.equal(decodeURIComponent(url.pathname), `/dl/${key}`);
    const expires = url.searchParams.get('expires') ?? '';
    const signature = url.searchParams.get('signature') ?? '';

    assert.equal(store.verifyLink(key, expires, signature), 'ok');
    const flipped = (signature[0] === '0' ? '1' : '0') + signature.slice(1);
    assert.equal(store.verifyLink(key, expires, flipped), 'invalid');
    assert.equal(store.verifyLink(firmwareKey('org-2', '1.0.0', 'c'.repeat(64)), expires, signature), 'invalid');
    assert.equal(store.verifyLink(key, String(Number(expires) + 3600), signature), 'invalid');
    assert.equal(store.verifyLink(key, expires, signature, Date.parse(link.expires_at) + 1000), 'expired');
    // Malformed input from a URL is an answer, never an exception.
    for (const [badExpires, badSignature] of [
      [expires, ''],
      [expires, signature.slice(2)],
      [expires, 'zz'.repeat(32)],
      [expires, `${signature}00`],
      ['soon', signature],
      ['-1', signature],
    ] as const) {
      assert.equal(store.verifyLink(key, badExpires, badSignature), 'invalid');
    }
    assert.equal(store.verifyLink('../etc/passwd', expires, signature), 'invalid');

    const response = await fetch(`${url.origin}${url.pathname}?expires=${expires}&signature=${flipped}`);
    assert.equal(response.status, 403);
    await response.body?.cancel();
  });

  it('openRead returns exactly the requested byte range and the total size', async () => {
    const bytes = await collect(seededBytes(3 * MiB, 11));
    const key = firmwareKey('org-1', '1.0.1', 'd'.repeat(64));
    await store.promote(await stageBytes(store, bytes), key);

    assert.deepEqual(await store.stat(key).then((info) => info.size), bytes.length);
    const middle = await store.openRead(key, { start: 1_000_000, end: 1_999_999 });
    assert.equal(middle.size, bytes.length);
    assert.deepEqual(await collect(middle.stream), bytes.subarray(1_000_000, 2_000_000));
    const tail = await store.openRead(key, { start: bytes.length - 10 });
    assert.deepEqual(await collect(tail.stream), bytes.subarray(bytes.length - 10));
    const whole = await store.openRead(key);
    assert.deepEqual(await collect(whole.stream), bytes);

    await assert.rejects(store.openRead(key, { start: bytes.length }), RangeError);
    await assert.rejects(store.openRead(firmwareKey('org-1', '9.9.9', 'e'.repeat(64))), BlobNotFoundError);
    await assert.rejects(store.stat(firmwareKey('org-1', '9.9.9', 'e'.repeat(64))), BlobNotFoundError);
  });

  it('serves a small blob from memory while it is downloaded, never the bytes of a key replaced or deleted', async () => {
    const key = firmwareKey('org-1', '1.0.2', 'f'.repeat(64));
    await store.promote(await stageBytes(store, Buffer.from('first image')), key);
    assert.equal((await collect((await store.openRead(key)).stream)).toString(), 'first image');
    assert.equal((await collect((await store.openRead(key)).stream)).toString(), 'first image', 'again, kept');
    await store.promote(await stageBytes(store, Buffer.from('second image')), key);
    assert.equal((await collect((await store.openRead(key, { start: 7 })).stream)).toString(), 'image');
    assert.equal((await collect((await store.openRead(key)).stream)).toString(), 'second image');
    await store.delete(key);
    await assert.rejects(store.openRead(key), BlobNotFoundError);
  });

  it('streams a blob too large to keep in memory from its file, ranges included', async () => {
    const bytes = await collect(seededBytes(17 * MiB, 12));
    const key = firmwareKey('org-1', '1.0.3', '0'.repeat(64));
    await store.promote(await stageBytes(store, bytes), key);
    const whole = await store.openRead(key);
    assert.equal(whole.size, bytes.length);
    assert.deepEqual(await collect(whole.stream), bytes);
    const range = await store.openRead(key, { start: 16 * MiB, end: 16 * MiB + 9 });
    assert.deepEqual(await collect(range.stream), bytes.subarray(16 * MiB, 16 * MiB + 10));
  });
});

describe('S3BlobStore on s3rver', () => {
  let s3rver: RunningS3rver;
  let store: S3BlobStore;

  before(async () => {
    s3rver = await startS3rver();
    store = s3StoreOn(s3rver);
    await store.ping();
  });

  after(async () => {
    await store.close();
    await s3rver.stop();
  });

  blobStoreContract(() => store);

  it('a Range GET on the presigned URL answers 206 with exactly those bytes, as a resuming agent needs', async () => {
    const bytes = await collect(seededBytes(3 * MiB, 13));
    const key = firmwareKey('org-1', '1.0.2', 'f'.repeat(64));
    await store.promote(await stageBytes(store, bytes), key);
    const { url } = await store.downloadLink(key, 60);

    const response = await fetch(url, { headers: { Range: 'bytes=1000000-1999999' } });
    assert.equal(response.status, 206);
    assert.equal(response.headers.get('content-range'), `bytes 1000000-1999999/${bytes.length}`);
    assert.deepEqual(await collect(responseBody(response)), bytes.subarray(1_000_000, 2_000_000));
  });

  it('ping: a recent success answers while the next probe runs; a failed probe is the answer until one succeeds', async (t) => {
    const bucket = await startS3rver();
    const store = s3StoreOn(bucket);
    try {
      await store.ping();
      await bucket.stop();
      // Within 5 s of the success: answered without a request.
      await store.ping();
      // 10 s later (a load balancer's next checks while the bucket is slow or gone): still answered
      // by the success, while a probe runs behind it and fails.
      const realNow = performance.now.bind(performance);
      t.mock.method(performance, 'now', () => realNow() + 10_000);
      await store.ping();
      // Once that probe has failed, its failure is the answer.
      let failed = false;
      for (let tries = 0; tries < 200 && !failed; tries++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        failed = await store.ping().then(
          () => false,
          () => true,
        );
      }
      assert.ok(failed, 'the failed probe made the store not ready');
    } finally {
      await store.close();
    }
  });

  it('names an unreachable store: delete, stage and ping reject with StorageUnavailableError, not a raw error', async () => {
    const stopped = await startS3rver();
    const gone = s3StoreOn(stopped);
    await stopped.stop();
    try {
      await assert.rejects(gone.delete('firmware/org/1.0.0/x.bin'), StorageUnavailableError);
      await assert.rejects(gone.stage(Readable.from([Buffer.alloc(1024)]), { maxBytes: MiB }), StorageUnavailableError);
      await assert.rejects(gone.ping());
    } finally {
      await gone.close();
    }
  });

  it('ensureBucket creates a missing bucket and is idempotent', async () => {
    const other = s3StoreOn(s3rver, { bucket: 'edgeflow-created' });
    try {
      await assert.rejects(other.ping());
      await other.ensureBucket();
      await other.ping();
      await other.ensureBucket();
    } finally {
      await other.close();
    }
  });

  it('presigns for the public endpoint when devices reach S3 under another name', async () => {
    const other = s3StoreOn(s3rver, { publicEndpoint: 'https://firmware.example.com' });
    try {
      const { url } = await other.downloadLink(firmwareKey('org-1', '1.0.0', 'a'.repeat(64)), 3600);
      const parsed = new URL(url);
      assert.equal(parsed.origin, 'https://firmware.example.com');
      assert.equal(parsed.searchParams.get('X-Amz-Expires'), '3600');
    } finally {
      await other.close();
    }
  });
});
