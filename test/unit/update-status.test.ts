/** The server's per-device update state machine: pure data, checked table-driven. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  canTransition,
  isActive,
  otaStatusOf,
  statusesLeadingTo,
  UPDATE_STATUSES,
  type UpdateStatus,
} from '../../src/server/model/update-status.ts';

const allowed: [UpdateStatus, UpdateStatus][] = [
  ['queued', 'dispatched'],
  ['queued', 'cancelled'],
  ['queued', 'failed'],
  ['queued', 'skipped'],
  ['dispatched', 'queued'],
  ['dispatched', 'in_progress'],
  ['dispatched', 'completed'],
  ['dispatched', 'failed'],
  ['dispatched', 'timed_out'],
  ['dispatched', 'cancelled'],
  // At dispatch the device no longer fits (its version or model changed): never sent.
  ['dispatched', 'skipped'],
  ['in_progress', 'in_progress'],
  ['in_progress', 'completed'],
  ['in_progress', 'failed'],
  ['in_progress', 'timed_out'],
  ['in_progress', 'cancelled'],
];

describe('update status transitions', () => {
  for (const from of UPDATE_STATUSES) {
    for (const to of UPDATE_STATUSES) {
      const expected = allowed.some(([a, b]) => a === from && b === to);
      it(`${from} → ${to} is ${expected ? 'allowed' : 'refused'}`, () => {
        assert.equal(canTransition(from, to), expected);
      });
    }
  }

  it('never leaves a finished update: completed, failed, timed_out, cancelled, skipped lead nowhere', () => {
    for (const done of ['completed', 'failed', 'timed_out', 'cancelled', 'skipped'] as const) {
      assert.deepEqual(
        UPDATE_STATUSES.filter((to) => canTransition(done, to)),
        [],
      );
      assert.equal(isActive(done), false);
    }
  });

  it('names the statuses a conditional UPDATE may start from', () => {
    assert.deepEqual(statusesLeadingTo('completed'), ['dispatched', 'in_progress']);
    assert.deepEqual(statusesLeadingTo('queued'), ['dispatched']);
    assert.deepEqual(statusesLeadingTo('timed_out'), ['dispatched', 'in_progress']);
  });
});

describe("the seed's OTA status", () => {
  const table: [UpdateStatus | undefined, string][] = [
    [undefined, 'idle'],
    ['queued', 'updating'],
    ['dispatched', 'updating'],
    ['in_progress', 'updating'],
    ['completed', 'completed'],
    ['skipped', 'idle'],
    ['failed', 'failed'],
    ['timed_out', 'failed'],
    ['cancelled', 'idle'],
  ];
  for (const [status, expected] of table) {
    it(`${status ?? 'no update'} shows as ${expected}`, () =>
      assert.equal(otaStatusOf(status && { status, kind: 'update', error_code: null }), expected));
  }

  it('a version change it observed: failed when the device fell back, idle when it was re-flashed', () => {
    assert.equal(otaStatusOf({ status: 'completed', kind: 'observed', error_code: 'reverted' }), 'failed');
    assert.equal(otaStatusOf({ status: 'completed', kind: 'observed', error_code: 'reflashed' }), 'idle');
  });
});
