/**
 * Whose a version change is that a device reports as it connects: its active update's (a trial
 * boot, the update's own fall-back) or one to record (a fall-back after a crash, a re-flash).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { changeIsTheUpdates } from '../../src/server/updates/engine.ts';

const connectedAtMs = Date.parse('2026-12-05T12:00:00Z');
const before = new Date(connectedAtMs - 60_000);
const after = new Date(connectedAtMs + 50);

describe('a version change reported on connect', () => {
  it('is the update the device names as under way, whatever its status on the server', () => {
    for (const status of ['queued', 'dispatched', 'in_progress'] as const) {
      assert.equal(
        changeIsTheUpdates({ id: 'upd_1', status, dispatched_at: after }, { update_id: 'upd_1' }, connectedAtMs),
        true,
        status,
      );
    }
  });

  it('is an update taken up over an earlier tunnel, from an agent that names none', () => {
    assert.equal(
      changeIsTheUpdates({ id: 'upd_1', status: 'in_progress', dispatched_at: before }, {}, connectedAtMs),
      true,
    );
  });

  it('is recorded while an update only waits for the device: queued, or sent and not taken up', () => {
    assert.equal(changeIsTheUpdates({ id: 'upd_1', status: 'queued', dispatched_at: null }, {}, connectedAtMs), false);
    assert.equal(
      changeIsTheUpdates({ id: 'upd_1', status: 'dispatched', dispatched_at: before }, {}, connectedAtMs),
      false,
    );
  });

  it('is recorded when the update reached the device over this tunnel, after its report (a rollback sent the moment it returned)', () => {
    // Under load the rollback can be dispatched, taken up and reported in progress before the
    // device's own report of its fall-back is handled: the fall-back must still be on record.
    assert.equal(
      changeIsTheUpdates({ id: 'upd_1', status: 'in_progress', dispatched_at: after }, {}, connectedAtMs),
      false,
    );
    assert.equal(
      changeIsTheUpdates(
        { id: 'upd_1', status: 'in_progress', dispatched_at: after },
        { update_id: 'upd_0' },
        connectedAtMs,
      ),
      false,
    );
  });
});
