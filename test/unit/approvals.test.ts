/**
 * Approvals' pure rules: who a key's person is (the two-person rule), when a policy asks for
 * approval (min_devices OR tags), that the scheduler leaves a deployment awaiting approval alone
 * while it still holds its devices, and how the CLI tells a policy and a deployment's approval.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describePolicy } from '../../src/cli/approvals.ts';
import { approvalLines } from '../../src/cli/deployment-status.ts';
import { nextAction, tallyOf } from '../../src/server/deployments/gate.ts';
import {
  type ApprovalPolicy,
  type ApprovalSubject,
  approvalReason,
  describeActor,
  isOtherPerson,
  personOf,
} from '../../src/server/model/approval.ts';
import { emptyDeviceCounts, isEnded, OPEN_STATES } from '../../src/server/model/deployment.ts';

describe('persons behind keys', () => {
  const alice = { key_id: 'key_a', key_name: 'laptop', owner: 'alice@example.com' };
  it('takes the owner, trimmed and in any letter case, as one person', () => {
    assert.equal(personOf(alice), personOf({ key_id: 'key_b', owner: '  Alice@Example.COM ' }));
    assert.equal(isOtherPerson(alice, { key_id: 'key_b', owner: 'ALICE@example.com' }), false);
  });
  it('takes a key without an owner as a person of its own, never the same key twice', () => {
    assert.equal(isOtherPerson({ key_id: 'key_a', owner: null }, { key_id: 'key_b', owner: null }), true);
    assert.equal(isOtherPerson({ key_id: 'key_a', owner: null }, { key_id: 'key_a', owner: null }), false);
    assert.equal(isOtherPerson({ key_id: 'key_a', owner: null }, { key_id: 'key_a', owner: 'bob' }), false);
    assert.equal(isOtherPerson(alice, { key_id: 'key_c', owner: 'bob' }), true);
    assert.notEqual(personOf({ key_id: 'alice', owner: null }), personOf({ key_id: 'x', owner: 'alice' }));
  });
  it('names the owner and the key', () => {
    assert.equal(describeActor(alice), 'alice@example.com (key laptop)');
    assert.equal(describeActor({ key_id: 'key_z', key_name: null, owner: null }), 'key key_z');
  });
});

describe('when a policy asks for approval', () => {
  const subject = (some: Partial<ApprovalSubject>): ApprovalSubject => ({
    devices: 1,
    targetTags: [],
    deviceTags: [],
    ...some,
  });
  const cases: [string, ApprovalPolicy, Partial<ApprovalSubject>, boolean][] = [
    ['not required', { required: false, min_devices: 1 }, { devices: 100 }, false],
    ['required, no condition', { required: true }, { devices: 0 }, true],
    ['below min_devices', { required: true, min_devices: 10 }, { devices: 9 }, false],
    ['at min_devices', { required: true, min_devices: 10 }, { devices: 10 }, true],
    ['a tag the target selects', { required: true, tags: ['prod'] }, { targetTags: ['prod', 'eu'] }, true],
    ['a tag a device carries', { required: true, tags: ['prod'] }, { deviceTags: ['prod'] }, true],
    ['no listed tag', { required: true, tags: ['prod'] }, { targetTags: ['lab'] }, false],
    [
      'both given, small but tagged (OR)',
      { required: true, min_devices: 10, tags: ['prod'] },
      { deviceTags: ['prod'] },
      true,
    ],
    ['both given, large, untagged (OR)', { required: true, min_devices: 10, tags: ['prod'] }, { devices: 50 }, true],
    ['both given, neither', { required: true, min_devices: 10, tags: ['prod'] }, { devices: 2 }, false],
  ];
  for (const [name, policy, some, required] of cases) {
    it(`${name}: ${required ? 'required' : 'not required'}`, () =>
      assert.equal(approvalReason(policy, subject(some)) !== null, required));
  }
  it('says why', () =>
    assert.equal(
      approvalReason({ required: true, min_devices: 3, tags: ['prod'] }, subject({ devices: 5, deviceTags: ['prod'] })),
      'it takes 5 devices (approval from 3); it touches devices tagged prod',
    ));
});

describe('a deployment awaiting approval', () => {
  it('is open (it holds its devices) and not ended; the scheduler leaves it alone', () => {
    assert.ok((OPEN_STATES as readonly string[]).includes('awaiting_approval'));
    assert.equal(isEnded('awaiting_approval'), false);
    assert.equal(isEnded('rejected'), true);
    const action = nextAction({
      state: 'awaiting_approval',
      startAtMs: null,
      dynamic: false,
      settings: { failure_threshold_percent: 10, min_sample: 5, on_failure: 'pause' },
      batches: [{ state: 'pending', promoted: false, tally: tallyOf({ ...emptyDeviceCounts(), pending: 3 }) }],
      nowMs: Date.now(),
    });
    assert.deepEqual(action, { action: 'nothing', reason: 'awaiting_approval', wakeAtMs: null });
  });
});

describe('the CLI', () => {
  it('tells a policy', () => {
    assert.equal(describePolicy({ required: false }), 'approval: not required');
    assert.equal(
      describePolicy({ required: true, min_devices: 50, tags: ['prod', 'eu'] }),
      'approval: required when it takes at least 50 devices, or it touches devices tagged prod or eu, by an admin key of another person than the creator',
    );
  });
  const creator = { key_id: 'key_a', key_name: 'ci', owner: 'alice' };
  it('tells who created it and that it awaits approval, with the command to approve', () => {
    const lines = approvalLines({
      id: 'dep_1',
      status: 'awaiting_approval',
      created_by: creator,
      approval: {
        reason: 'the organization requires approval',
        decision: null,
        decided_by: null,
        decided_at: null,
        comment: null,
      },
    });
    assert.equal(lines[0], '  created by alice (key ci)');
    assert.match(
      lines[1]!,
      /^ {2}awaiting approval \(the organization requires approval\): .*deployments approve dep_1/,
    );
  });
  it('tells who decided, when, and the comment', () => {
    const lines = approvalLines({
      id: 'dep_1',
      status: 'rejected',
      created_by: creator,
      approval: {
        reason: 'x',
        decision: 'rejected',
        decided_by: { key_id: 'key_b', key_name: null, owner: 'bob' },
        decided_at: '2030-01-01T00:00:00.000Z',
        comment: 'not now',
      },
    });
    assert.equal(lines[1], '  rejected by bob (key key_b) at 2030-01-01T00:00:00.000Z: "not now"');
  });
});
