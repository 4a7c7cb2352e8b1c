/**
 * Whose a version change is that a device reports as it connects: its current update's (a trial
 * boot, the update's own fall-back) or one to record (a fall-back after a crash, a re-flash).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { UpdateStatus } from '../../src/server/model/update-status.ts';
import { changeIsTheUpdates } from '../../src/server/updates/engine.ts';

const connectedAtMs = Date.parse('2026-12-05T12:00:00Z');
const before = new Date(connectedAtMs - 60_000);
const after = new Date(connectedAtMs + 50);

const update = (status: UpdateStatus, dispatchedAt: Date | null, finishedAt: Date | null = null) => ({
  id: 'upd_1',
  status,
  dispatched_at: dispatchedAt,
  finished_at: finishedAt,
});

describe('a version change reported on connect', () => {
  it('is the update the device names as under way, whatever its status on the server', () => {
    for (const status of ['queued', 'dispatched', 'in_progress', 'failed'] as const) {
      assert.equal(changeIsTheUpdates(update(status, after), { update_id: 'upd_1' }, connectedAtMs), true, status);
    }
  });

  it('is an update taken up over an earlier tunnel, from an agent that names none', () => {
    assert.equal(changeIsTheUpdates(update('in_progress', before), {}, connectedAtMs), true);
  });

  it('is such an update that ended after the tunnel opened: its result arrived before the report was handled', () => {
    // A trial boot that failed its health check: the agent falls back, reconnects, says what it
    // runs and reports the failure at once; the report may be handled second.
    assert.equal(changeIsTheUpdates(update('failed', before, after), {}, connectedAtMs), true);
    assert.equal(changeIsTheUpdates(update('completed', before, after), {}, connectedAtMs), true);
  });

  it('is recorded when the latest update ended before the tunnel opened', () => {
    assert.equal(changeIsTheUpdates(update('completed', before, before), {}, connectedAtMs), false);
    assert.equal(changeIsTheUpdates(update('failed', before, before), {}, connectedAtMs), false);
  });

  it('is recorded while an update only waits for the device: queued, or sent and not taken up', () => {
    assert.equal(changeIsTheUpdates(update('queued', null), {}, connectedAtMs), false);
    assert.equal(changeIsTheUpdates(update('dispatched', before), {}, connectedAtMs), false);
  });

  it('is recorded when the update reached the device over this tunnel, after its report (a rollback sent the moment it returned)', () => {
    // Under load the rollback can be dispatched, taken up and reported in progress before the
    // device's own report of its fall-back is handled: the fall-back must still be on record.
    assert.equal(changeIsTheUpdates(update('in_progress', after), {}, connectedAtMs), false);
    assert.equal(changeIsTheUpdates(update('in_progress', after), { update_id: 'upd_0' }, connectedAtMs), false);
    assert.equal(changeIsTheUpdates(update('completed', after, after), {}, connectedAtMs), false);
  });
});
