/**
 * SHA256 on the hashing worker gives the digest node:crypto gives on the main thread, whatever
 * the chunking (chunks larger than the bytes the worker may have in flight, chunks that straddle
 * slabs), with several hashes interleaved and one of them abandoned; bytes in shared memory are
 * hashed in place, in their turn among copied ones.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { WorkerSha256 } from '../../src/server/infra/blobstore/worker-sha256.ts';

const MiB = 1024 * 1024;

function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Feeds `bytes` in chunks of the given sizes (cycled), waiting whenever the hash asks to. */
async function hashInChunks(bytes: Buffer, sizes: number[]): Promise<string> {
  const hash = new WorkerSha256();
  for (let offset = 0, i = 0; offset < bytes.length; i++) {
    const size = sizes[i % sizes.length] ?? 1;
    await hash.update(bytes.subarray(offset, offset + size));
    offset += size;
  }
  return hash.digestHex();
}

describe('WorkerSha256', () => {
  it('matches node:crypto for odd chunk sizes, one byte, empty input, and one chunk of 20 MiB', async () => {
    const bytes = randomBytes(20 * MiB + 12_345);
    assert.equal(await hashInChunks(bytes, [65_536, 1, 1_000_003, 7, 3 * MiB]), sha256(bytes));
    assert.equal(await hashInChunks(bytes, [bytes.length]), sha256(bytes));
    assert.equal(await hashInChunks(bytes.subarray(0, 1), [1]), sha256(bytes.subarray(0, 1)));
    assert.equal(await new WorkerSha256().digestHex(), sha256(Buffer.alloc(0)));
  });

  it('keeps interleaved hashes apart, and an abandoned one does not disturb the others', async () => {
    const first = randomBytes(9 * MiB);
    const second = randomBytes(5 * MiB + 3);
    const abandoned = new WorkerSha256();
    await abandoned.update(randomBytes(3 * MiB));
    const [a, b] = await Promise.all([hashInChunks(first, [65_536]), hashInChunks(second, [100_000, MiB])]);
    abandoned.abort();
    assert.equal(a, sha256(first));
    assert.equal(b, sha256(second));
  });

  it('lets the caller reuse its buffer as soon as update returns', async () => {
    const bytes = randomBytes(3 * MiB);
    const scratch = Buffer.alloc(64 * 1024);
    const hash = new WorkerSha256();
    for (let offset = 0; offset < bytes.length; offset += scratch.length) {
      bytes.copy(scratch, 0, offset, offset + scratch.length);
      await hash.update(scratch);
      scratch.fill(0xff);
    }
    assert.equal(await hash.digestHex(), sha256(bytes));
  });

  it('hashes shared memory in place, in call order among copied updates, and lets it be reused once hashed', async () => {
    const bytes = randomBytes(6 * MiB + 5);
    const shared = Buffer.from(new SharedArrayBuffer(MiB));
    const hash = new WorkerSha256();
    let offset = 0;
    for (let turn = 0; offset < bytes.length; turn++) {
      const size = Math.min(turn % 2 === 0 ? MiB : 100_003, bytes.length - offset);
      const chunk = bytes.subarray(offset, offset + size);
      if (turn % 2 === 0) {
        chunk.copy(shared);
        await hash.updateShared(shared.subarray(0, size));
        shared.fill(0xff);
      } else {
        await hash.update(chunk);
      }
      offset += size;
    }
    assert.equal(await hash.digestHex(), sha256(bytes));
  });

  it('rejects the shared updates still waiting when the hash is abandoned', async () => {
    const shared = Buffer.from(new SharedArrayBuffer(4 * MiB));
    const hash = new WorkerSha256();
    const waiting = hash.updateShared(shared);
    hash.abort();
    await assert.rejects(waiting, /aborted/);
    await assert.rejects(hash.updateShared(shared), /ended/);
  });
});
