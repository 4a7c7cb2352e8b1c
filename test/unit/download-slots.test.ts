/**
 * The local store's download slots: a freed slot goes to the first request in line, the line is
 * bounded in length and in wait, and a request that leaves the line frees its place. The route
 * that uses them is tested over HTTP in test/integration/download-limit.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DownloadSlots, downloadSpreadMs } from '../../src/server/firmware/download-slots.ts';

const stays = () => {};

describe('DownloadSlots', () => {
  it('hands a freed slot to the first in line, in the order they came', async () => {
    const slots = new DownloadSlots({ limit: 1, queue: 10, waitMs: 60_000 });
    const first = await slots.acquire(stays);
    assert.ok(first);
    const order: string[] = [];
    const second = slots.acquire(stays).then((release) => {
      order.push('second');
      return release;
    });
    const third = slots.acquire(stays).then((release) => {
      order.push('third');
      return release;
    });
    assert.equal(slots.waiting, 2);
    first();
    first(); // a second call of the same release frees nothing more
    const releaseSecond = await second;
    assert.ok(releaseSecond);
    assert.deepEqual(order, ['second']);
    assert.equal(slots.taken, 1, 'the slot passed on, still taken');
    releaseSecond();
    const releaseThird = await third;
    assert.ok(releaseThird);
    releaseThird();
    assert.equal(slots.taken, 0);
    assert.equal(slots.waiting, 0);
  });

  it('answers busy (undefined) beyond the line, and after the longest wait', async () => {
    const slots = new DownloadSlots({ limit: 1, queue: 1, waitMs: 30 });
    const held = await slots.acquire(stays);
    assert.ok(held);
    const waiting = slots.acquire(stays);
    assert.equal(await slots.acquire(stays), undefined, 'the line is full');
    assert.equal(await waiting, undefined, 'waited past waitMs');
    assert.equal(slots.waiting, 0);
    held();
    assert.equal(slots.taken, 0);
  });

  it('frees the place of a request that left the line, and answers everyone in line busy on close', async () => {
    const slots = new DownloadSlots({ limit: 1, queue: 1, waitMs: 60_000 });
    const held = await slots.acquire(stays);
    assert.ok(held);
    let leave: (() => void) | undefined;
    const gone = slots.acquire((callback) => {
      leave = callback;
    });
    leave?.();
    assert.equal(await gone, undefined);
    assert.equal(slots.waiting, 0);
    const next = slots.acquire(stays);
    assert.equal(slots.waiting, 1, 'the place left is taken by the next');
    slots.close();
    assert.equal(await next, undefined);
    held();
    assert.equal(slots.taken, 0);
  });

  it('serves at once while slots are free and nobody waits', async () => {
    const slots = new DownloadSlots({ limit: 2, queue: 0, waitMs: 0 });
    const a = await slots.acquire(stays);
    const b = await slots.acquire(stays);
    assert.ok(a && b);
    assert.equal(await slots.acquire(stays), undefined, 'no line: busy at once');
    a();
    const c = await slots.acquire(stays);
    assert.ok(c);
    b();
    c();
    assert.equal(slots.taken, 0);
  });

  it('spreads the refused over the time the line takes to drain', async () => {
    const slots = new DownloadSlots({ limit: 10, queue: 20, waitMs: 60_000 });
    assert.equal(slots.retryAfterSeconds(Date.now(), 0.999), 1, 'nobody in line: come back in a second');
    const releases = await Promise.all(Array.from({ length: 10 }, () => slots.acquire(stays)));
    const line = Array.from({ length: 20 }, () => slots.acquire(stays));
    // No completion seen yet: a download is taken to last a second, 10 slots → 10 a second; the
    // line of 20 drains in 2 s: returns 1 to 3 s away.
    assert.equal(slots.retryAfterSeconds(Date.now(), 0), 1);
    assert.equal(slots.retryAfterSeconds(Date.now(), 0.5), 2);
    assert.equal(slots.retryAfterSeconds(Date.now(), 0.999), 3);
    for (const release of releases) release?.();
    // Each one in line gives its slot back as soon as it has it, letting the next in (waiting for
    // all before any gave one back held the last ten until waitMs: a minute of the suite).
    await Promise.all(line.map(async (entry) => (await entry)?.()));
    assert.equal(slots.taken, 0);
  });

  it('never sends the refused away for more than 10 s, however slow the line', async () => {
    const slots = new DownloadSlots({ limit: 1, queue: 100, waitMs: 60_000 });
    const held = await slots.acquire(stays);
    const line = Array.from({ length: 100 }, () => slots.acquire(stays));
    // 100 in line at a guessed 1 a second: 100 s to drain.
    assert.equal(slots.retryAfterSeconds(Date.now(), 0.999), 10);
    slots.close();
    await Promise.all(line);
    held?.();
  });

  it('measures the completion rate: a line that drains faster than the first guess gets earlier returns', async () => {
    const slots = new DownloadSlots({ limit: 10, queue: 20, waitMs: 60_000 });
    for (let round = 0; round < 3; round++) {
      for (const release of await Promise.all(Array.from({ length: 10 }, () => slots.acquire(stays)))) release?.();
    }
    const held = await Promise.all(Array.from({ length: 10 }, () => slots.acquire(stays)));
    const line = Array.from({ length: 20 }, () => slots.acquire(stays));
    // 30 completions within the last second: the line of 20 drains in under a second, so the
    // latest return is 2 s away (the guess of 10 a second would say 3 s).
    assert.equal(slots.retryAfterSeconds(Date.now(), 0.999), 2);
    slots.close();
    await Promise.all(line);
    for (const release of held) release?.();
  });

  it("asks a rollout beyond the slots and the line to spread its starts at the slots' rate", () => {
    const slots = { limit: 256, queue: 2048 };
    assert.equal(downloadSpreadMs(1, slots), 0, 'a single update starts at once');
    assert.equal(downloadSpreadMs(2304, slots), 0, 'the slots and the line hold them all');
    assert.equal(downloadSpreadMs(10_000, slots), 30_063, '7,696 beyond, 256 a second');
    assert.equal(downloadSpreadMs(10_000_000, slots), 600_000, 'never past the protocol maximum');
  });
});
