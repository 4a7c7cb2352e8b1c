/** The kept bytes of downloaded blobs: bounded, shared between concurrent readers, forgotten when changed or idle. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { HotBlobs } from '../../src/server/infra/blobstore/hot-blobs.ts';

const bytes = (size: number, fill: number) => Buffer.alloc(size, fill);

describe('HotBlobs', () => {
  it('loads a blob once for readers that ask at once, then answers from memory', async () => {
    const hot = new HotBlobs({ maxBlobBytes: 100, maxTotalBytes: 1000, idleMs: 60_000 });
    let loads = 0;
    const load = async () => {
      loads += 1;
      await sleep(10);
      return bytes(50, 1);
    };
    const answers = await Promise.all(Array.from({ length: 20 }, () => hot.get('a', load)));
    assert.equal(loads, 1);
    assert.ok(answers.every((answer) => answer === answers[0]));
    assert.equal(hot.peek('a'), answers[0]);
    assert.equal(hot.totalBytes, 50);
    hot.close();
  });

  it('keeps no blob over its size limit, and drops the least recently read beyond the total', async () => {
    const hot = new HotBlobs({ maxBlobBytes: 100, maxTotalBytes: 250, idleMs: 60_000 });
    assert.equal(hot.fits(101), false);
    await hot.get('big', async () => bytes(101, 9));
    assert.equal(hot.peek('big'), undefined);
    for (const key of ['a', 'b']) await hot.get(key, async () => bytes(100, 1));
    hot.peek('a'); // read: b is now the oldest
    await hot.get('c', async () => bytes(100, 2));
    assert.ok(hot.peek('a'));
    assert.equal(hot.peek('b'), undefined);
    assert.ok(hot.peek('c'));
    assert.equal(hot.totalBytes, 200);
    hot.close();
  });

  it('forgets a blob that changed, even while it was loading', async () => {
    const hot = new HotBlobs({ maxBlobBytes: 100, maxTotalBytes: 1000, idleMs: 60_000 });
    await hot.get('a', async () => bytes(10, 1));
    hot.forget('a');
    assert.equal(hot.peek('a'), undefined);
    const loading = hot.get('a', async () => {
      await sleep(10);
      return bytes(10, 2);
    });
    hot.forget('a'); // replaced while the old bytes were being read
    assert.equal((await loading)[0], 2, 'the reader that asked still gets what was read');
    assert.equal(hot.peek('a'), undefined, 'but it is not kept');
    assert.equal(hot.totalBytes, 0);
    hot.close();
  });

  it('drops what nobody read for idleMs', async () => {
    const hot = new HotBlobs({ maxBlobBytes: 100, maxTotalBytes: 1000, idleMs: 40 });
    await hot.get('a', async () => bytes(10, 1));
    await sleep(150);
    assert.equal(hot.peek('a'), undefined);
    assert.equal(hot.totalBytes, 0);
    hot.close();
  });

  it('does not keep a blob whose load failed', async () => {
    const hot = new HotBlobs({ maxBlobBytes: 100, maxTotalBytes: 1000, idleMs: 60_000 });
    await assert.rejects(
      hot.get('a', async () => {
        throw new Error('EIO');
      }),
      /EIO/,
    );
    assert.equal((await hot.get('a', async () => bytes(5, 3)))[0], 3);
    hot.close();
  });
});
