/** Where a device sent away by a busy download server stands: its place in the queue, at the rate downloads finish. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DownloadQueue } from '../../src/server/firmware/download-queue.ts';

describe('DownloadQueue', () => {
  it('gives devices sent away together places one after the other, at the measured rate', () => {
    const queue = new DownloadQueue({ slots: 4, maxSeconds: 60 });
    const t0 = 1_000_000;
    // 100 finishes a second, measured.
    for (let i = 0; i < 20; i++) queue.finished(t0 + i * 10);
    const now = t0 + 200;
    assert.equal(Math.round(queue.ratePerSecond(now)), 100);
    const waits = Array.from({ length: 1000 }, () => queue.comeBackInSeconds(now));
    // 1,000 devices at 100 a second: the first come back within a second, the last after ten.
    assert.equal(waits[0], 1);
    assert.equal(waits[99], 1);
    assert.equal(waits[100], 2);
    assert.equal(waits.at(-1), 10);
    assert.deepEqual(
      waits,
      [...waits].sort((a, b) => a - b),
      'later arrivals never get earlier places',
    );
  });

  it('assumes a slot a second per slot until it has measured, and never waits past maxSeconds', () => {
    const queue = new DownloadQueue({ slots: 2, maxSeconds: 5 });
    const now = 5_000;
    assert.equal(queue.ratePerSecond(now), 2);
    const waits = Array.from({ length: 20 }, () => queue.comeBackInSeconds(now));
    assert.deepEqual(waits.slice(0, 4), [1, 1, 2, 2]);
    assert.equal(Math.max(...waits), 5);
  });

  it('forgets a rate measured long ago, and a place already passed', () => {
    const queue = new DownloadQueue({ slots: 3, maxSeconds: 60 });
    for (let i = 0; i < 10; i++) queue.finished(i);
    assert.ok(queue.ratePerSecond(100) > 100);
    assert.equal(queue.ratePerSecond(60_000), 3, 'nothing finished lately: back to the prior');
    queue.comeBackInSeconds(60_000);
    assert.equal(queue.comeBackInSeconds(120_000), 1, 'the queue of a minute ago is gone');
  });
});
