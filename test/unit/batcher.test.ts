/** The Batcher coalesces unrelated callers' inputs: one bad input must fail only its own caller. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Batcher } from '../../src/server/infra/batcher.ts';

/** A flush like a SQL statement: the whole call fails when any input is bad. */
function statementLike(isBad: (item: string) => boolean) {
  const calls: string[][] = [];
  const flush = async (items: string[]) => {
    calls.push(items);
    const bad = items.find(isBad);
    if (bad !== undefined) throw new Error(`invalid input ${JSON.stringify(bad)}`);
    return items.map((item) => item.toUpperCase());
  };
  return { calls, flush };
}

describe('Batcher', () => {
  it('answers every caller of a batch from one flush, in order', async () => {
    const { calls, flush } = statementLike(() => false);
    const batcher = new Batcher(flush, { maxSize: 100, maxDelayMs: 5 });
    const results = await Promise.all(['a', 'b', 'c'].map((item) => batcher.add(item)));
    assert.deepEqual(results, ['A', 'B', 'C']);
    assert.equal(calls.length, 1);
  });

  it('rejects only the bad input of a failed batch; the others get their outputs', async () => {
    const { calls, flush } = statementLike((item) => item.includes('\u0000'));
    const batcher = new Batcher(flush, { maxSize: 1000, maxDelayMs: 5 });
    const items = Array.from({ length: 64 }, (_, index) => (index === 37 ? 'bad\u0000' : `ok${index}`));
    const settled = await Promise.allSettled(items.map((item) => batcher.add(item)));
    for (const [index, result] of settled.entries()) {
      if (index === 37) {
        assert.equal(result.status, 'rejected');
        assert.match(String((result as PromiseRejectedResult).reason), /invalid input/);
      } else {
        assert.deepEqual(result, { status: 'fulfilled', value: `OK${index}` });
      }
    }
    // Halving finds one culprit among 64 in about 2·log2(64) statements, not 64.
    assert.ok(calls.length <= 1 + 2 * Math.log2(64), `${calls.length} flushes`);
  });

  it('isolates several bad inputs, and the batch after a failure is unaffected', async () => {
    const { flush } = statementLike((item) => item.startsWith('bad'));
    const batcher = new Batcher(flush, { maxSize: 1000, maxDelayMs: 5 });
    const items = ['bad1', 'a', 'b', 'bad2', 'c', 'bad3'];
    const settled = await Promise.allSettled(items.map((item) => batcher.add(item)));
    assert.deepEqual(
      settled.map((result) => result.status),
      ['rejected', 'fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'rejected'],
    );
    assert.equal(await batcher.add('later'), 'LATER');
  });

  it('rejects every caller with the error when every input fails alone (the database is down)', async () => {
    const down = new Error('connection refused');
    const batcher = new Batcher<string, string>(
      async () => {
        throw down;
      },
      { maxSize: 1000, maxDelayMs: 5 },
    );
    const settled = await Promise.allSettled(['a', 'b', 'c'].map((item) => batcher.add(item)));
    for (const result of settled) assert.deepEqual(result, { status: 'rejected', reason: down });
  });

  it('flushes at maxSize without waiting for the window', async () => {
    const { calls, flush } = statementLike(() => false);
    const batcher = new Batcher(flush, { maxSize: 2, maxDelayMs: 60_000 });
    assert.deepEqual(await Promise.all([batcher.add('x'), batcher.add('y')]), ['X', 'Y']);
    assert.equal(calls.length, 1);
  });
  it('with maxInFlight 1, runs one flush at a time and gives the inputs that came meanwhile to the next', async () => {
    let running = 0;
    let most = 0;
    const sizes: number[] = [];
    let release: (() => void) | undefined;
    const batcher = new Batcher(
      async (items: number[]) => {
        running += 1;
        most = Math.max(most, running);
        sizes.push(items.length);
        await new Promise<void>((resolve) => {
          release = resolve;
        });
        running -= 1;
        return items.map((item) => item * 2);
      },
      { maxSize: 3, maxDelayMs: 1, maxInFlight: 1 },
    );
    const first = batcher.add(1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.deepEqual(sizes, [1]);
    // Seven more while the first flush runs: none starts until it ends, then they go at most 3 at a time.
    const rest = [2, 3, 4, 5, 6, 7, 8].map((item) => batcher.add(item));
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.deepEqual(sizes, [1]);
    while (sizes.length < 4) {
      release?.();
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    release?.();
    assert.deepEqual(await Promise.all([first, ...rest]), [2, 4, 6, 8, 10, 12, 14, 16]);
    assert.deepEqual(sizes, [1, 3, 3, 1]);
    assert.equal(most, 1);
  });
});
