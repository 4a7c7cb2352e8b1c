/**
 * The store frees a stored body chunk at once only when it came from the marked body and spans
 * its whole ArrayBuffer; every other buffer (a slice, a small chunk, a caller's own bytes, a
 * chunk after the marking was undone) is left alone.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { disposeChunksOnceStored, freeStoredChunks } from '../../src/server/infra/blobstore/body-chunks.ts';

/** Chunks as Node's HTTP parser hands them over: each in an ArrayBuffer of its own. */
function ownChunk(bytes: number): Buffer {
  return Buffer.from(new Uint8Array(randomBytes(bytes)).buffer);
}

async function emitted(source: PassThrough, chunks: Buffer[]): Promise<void> {
  for (const chunk of chunks) source.write(chunk);
  // 'data' listeners run as the stream flows: wait until every chunk went through.
  await new Promise((resolve) => setImmediate(resolve));
}

describe('freeStoredChunks', () => {
  it('detaches a marked chunk that spans its ArrayBuffer, and nothing else', async () => {
    const body = new PassThrough();
    const stopMarking = disposeChunksOnceStored(body);
    const whole = ownChunk(64 * 1024);
    const sliced = ownChunk(64 * 1024);
    const small = ownChunk(1024);
    await emitted(body, [whole, sliced, small]);
    const callers = ownChunk(64 * 1024);

    freeStoredChunks([whole, sliced.subarray(100), small, callers]);
    assert.equal(whole.buffer.byteLength, 0, 'the marked whole chunk is freed');
    assert.equal(whole.length, 0);
    assert.equal(sliced.length, 64 * 1024, 'a slice leaves its chunk alone');
    assert.equal(small.length, 1024, 'a small chunk may share a pool: left alone');
    assert.equal(callers.length, 64 * 1024, 'bytes the body never emitted are left alone');

    // A chunk listed twice, or freed twice, is freed once and does not throw.
    const twice = ownChunk(32 * 1024);
    await emitted(body, [twice]);
    freeStoredChunks([twice, twice]);
    freeStoredChunks([twice]);
    assert.equal(twice.length, 0);

    stopMarking();
    const late = ownChunk(64 * 1024);
    await emitted(body, [late]);
    freeStoredChunks([late]);
    assert.equal(late.length, 64 * 1024, 'no chunk is marked after the undo');
  });
});
