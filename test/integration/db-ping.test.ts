/**
 * Db.ping, what /readyz asks of the database: on PostgreSQL a statement that succeeded within
 * the last two seconds answers for it, so a readiness check does not queue behind a pool that a
 * rollout keeps busy (a load balancer would take a working replica out); with nothing recent it
 * runs a statement (which a database that is gone fails).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { openDb } from '../../src/server/infra/db.ts';
import { backendsUnderTest, TEST_DATABASE_URL } from '../helpers/server.ts';

const onPostgres = (await backendsUnderTest()).some((backend) => backend.db === 'postgres');

describe('Db.ping on PostgreSQL', { skip: !onPostgres && 'PostgreSQL is not reachable' }, () => {
  it('answers at once after a recent statement while the pool is busy, and runs one when nothing is recent', async () => {
    const db = await openDb({ databaseUrl: TEST_DATABASE_URL, poolSize: 1 });
    try {
      await db.query('SELECT 1');
      // The pool's only connection is held for 3 s.
      const busy = db.query('SELECT pg_sleep(3)');
      const answered = await Promise.race([db.ping().then(() => 'ping'), busy.then(() => 'busy')]);
      assert.equal(answered, 'ping', 'the recent statement answered; ping did not wait for the pool');
      await busy;
      await sleep(2100);
      // Nothing recent: ping runs a statement, which waits for the held connection.
      const heldAgain = db.query('SELECT pg_sleep(1)');
      const order: string[] = [];
      await Promise.all([heldAgain.then(() => order.push('held')), db.ping().then(() => order.push('ping'))]);
      assert.deepEqual(order, ['held', 'ping'], 'ping ran a statement of its own, after the held one');
    } finally {
      await db.close();
    }
  });
});
