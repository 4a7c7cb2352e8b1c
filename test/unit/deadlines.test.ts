/** Deadlines: many waiting commands on a few shared timers, none expired early or twice. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { Deadlines, type Waiting } from '../../src/server/tunnel/deadlines.ts';

interface Item extends Waiting {
  name: string;
  addedAt: number;
}

const item = (name: string): Item => ({ name, addedAt: Date.now(), deadlineAt: undefined });

describe('Deadlines', () => {
  it('expires each item once, never before its wait, at most a bucket late', async () => {
    const expired: { name: string; afterMs: number }[] = [];
    const deadlines = new Deadlines<Item>((it) => expired.push({ name: it.name, afterMs: Date.now() - it.addedAt }));
    const many = Array.from({ length: 1000 }, (_, i) => item(`m${i}`));
    for (const one of many) deadlines.add(one, 150);
    const later = item('later');
    deadlines.add(later, 400);
    await delay(700);
    assert.equal(expired.length, 1001);
    assert.equal(new Set(expired.map((e) => e.name)).size, 1001, 'each once');
    for (const { name, afterMs } of expired) {
      const wait = name === 'later' ? 400 : 150;
      assert.ok(afterMs >= wait - 1, `${name} expired after ${afterMs} ms, before its ${wait} ms`);
    }
    assert.equal(expired.at(-1)?.name, 'later');
    assert.equal(later.deadlineAt, undefined);
  });

  it('does not expire an item removed in time, and an emptied bucket keeps no timer running', async () => {
    const expired: string[] = [];
    const deadlines = new Deadlines<Item>((it) => expired.push(it.name));
    const answered = item('answered');
    const silent = item('silent');
    deadlines.add(answered, 100);
    deadlines.add(silent, 100);
    deadlines.remove(answered);
    deadlines.remove(answered); // twice: nothing happens
    await delay(300);
    assert.deepEqual(expired, ['silent']);

    // A process whose only timer belonged to a bucket emptied by remove() exits at once: the
    // child would hang for the whole wait if the timer were left running.
    const { spawnSync } = await import('node:child_process');
    const script = `
      import { Deadlines } from ${JSON.stringify(new URL('../../src/server/tunnel/deadlines.ts', import.meta.url).href)};
      const deadlines = new Deadlines(() => { throw new Error('expired'); });
      const waiting = { deadlineAt: undefined };
      deadlines.add(waiting, 60_000);
      deadlines.remove(waiting);
    `;
    const started = Date.now();
    const child = spawnSync(process.execPath, [...process.execArgv, '--input-type=module', '-e', script], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(child.status, 0, child.stderr);
    assert.ok(Date.now() - started < 20_000, 'the child exited without waiting for the removed deadline');
  });
});
