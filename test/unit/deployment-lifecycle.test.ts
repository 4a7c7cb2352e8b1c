/**
 * The deployment's vocabulary as data, table-driven: the lifecycle and batch transitions the
 * guarded writes allow, "ended" defined once, the controls each state offers, and the words a
 * device's state and a gate's stop are told in.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  BATCH_STATES,
  type BatchState,
  batchStatesLeadingTo,
  canMoveBatch,
  canMoveDeployment,
  controlsFor,
  DEPLOYMENT_STATES,
  type DeploymentState,
  deploymentStatesLeadingTo,
  describeStop,
  explainDevice,
  isEnded,
} from '../../src/server/model/deployment.ts';

describe('the deployment lifecycle', () => {
  const allowed: [DeploymentState, DeploymentState][] = [
    ['scheduled', 'running'],
    ['scheduled', 'paused'],
    ['scheduled', 'cancelled'],
    ['running', 'paused'],
    ['running', 'completed'],
    ['running', 'failed'],
    ['running', 'cancelled'],
    ['running', 'rolled_back'],
    ['paused', 'running'],
    ['paused', 'scheduled'],
    ['paused', 'failed'],
    ['paused', 'cancelled'],
    ['paused', 'rolled_back'],
    ['completed', 'rolled_back'],
    ['failed', 'rolled_back'],
    ['awaiting_approval', 'scheduled'],
    ['awaiting_approval', 'running'],
    ['awaiting_approval', 'cancelled'],
    ['awaiting_approval', 'rejected'],
  ];
  for (const from of DEPLOYMENT_STATES) {
    for (const to of DEPLOYMENT_STATES) {
      const expected = allowed.some(([a, b]) => a === from && b === to);
      it(`${from} → ${to}: ${expected ? 'allowed' : 'refused'}`, () =>
        assert.equal(canMoveDeployment(from, to), expected));
    }
  }

  it('lists what leads to a state: the WHERE of its guarded write', () => {
    assert.deepEqual(deploymentStatesLeadingTo('rolled_back'), ['running', 'paused', 'completed', 'failed']);
    assert.deepEqual(deploymentStatesLeadingTo('scheduled'), ['paused', 'awaiting_approval']);
    assert.deepEqual(deploymentStatesLeadingTo('rejected'), ['awaiting_approval']);
  });

  it('ends a deployment once it takes no device any more; cancelled, rolled back and rejected are final', () => {
    assert.deepEqual(
      DEPLOYMENT_STATES.filter((state) => isEnded(state)),
      ['completed', 'failed', 'cancelled', 'rolled_back', 'rejected'],
    );
    for (const state of ['cancelled', 'rolled_back', 'rejected'] as const) {
      assert.deepEqual(
        DEPLOYMENT_STATES.filter((to) => canMoveDeployment(state, to)),
        [],
      );
    }
  });
});

describe('the batch lifecycle', () => {
  const allowed: [BatchState, BatchState][] = [
    ['pending', 'running'],
    ['running', 'baking'],
    ['running', 'passed'],
    ['running', 'failed'],
    ['baking', 'running'],
    ['baking', 'passed'],
    ['baking', 'failed'],
    ['passed', 'running'],
  ];
  for (const from of BATCH_STATES) {
    for (const to of BATCH_STATES) {
      const expected = allowed.some(([a, b]) => a === from && b === to);
      it(`${from} → ${to}: ${expected ? 'allowed' : 'refused'}`, () => assert.equal(canMoveBatch(from, to), expected));
    }
  }

  it('keeps a failed batch failed', () => assert.deepEqual(batchStatesLeadingTo('failed'), ['running', 'baking']));
});

describe('the controls a deployment offers', () => {
  const batches = (...states: BatchState[]) => states.map((state) => ({ state }));
  const cases: [DeploymentState, BatchState[], string[]][] = [
    ['scheduled', ['pending', 'pending'], ['pause', 'cancel']],
    ['running', ['running', 'pending'], ['pause', 'cancel', 'promote', 'rollback']],
    ['running', ['passed', 'running'], ['pause', 'cancel', 'rollback']],
    ['running', ['pending'], ['pause', 'cancel', 'rollback']],
    ['paused', ['failed', 'pending'], ['resume', 'cancel', 'promote', 'rollback']],
    ['completed', ['passed'], ['rollback']],
    ['failed', ['failed', 'pending'], ['rollback']],
    ['cancelled', ['running', 'pending'], []],
    ['rolled_back', ['failed', 'pending'], []],
    ['awaiting_approval', ['pending', 'pending'], ['approve', 'reject', 'cancel']],
    ['rejected', ['pending'], []],
  ];
  for (const [state, states, expected] of cases) {
    it(`${state} with batches ${states.join(', ')}: ${expected.join(', ') || 'none'}`, () =>
      assert.deepEqual(controlsFor(state, batches(...states)), expected));
  }
});

describe('in words', () => {
  const device = {
    state: 'pending' as const,
    reason: null,
    detail: null,
    batch: 2,
    from_version: '1.0.0',
    current_version: '1.0.0',
    version: '2.0.0',
    rollback_status: null,
  };
  const cases: [string, Partial<Parameters<typeof explainDevice>[0]>, string][] = [
    ['waiting for its batch', {}, 'waiting for batch 2'],
    ['busy elsewhere', { state: 'skipped', reason: 'busy', detail: 'dep_x', batch: null }, 'skipped: busy in dep_x'],
    [
      'fell back during the bake',
      { state: 'failed', reason: 'bake_reverted', current_version: '1.0.0' },
      'reverted to 1.0.0 during the bake',
    ],
    ['failed with a code', { state: 'failed', reason: 'checksum_mismatch' }, 'failed (checksum_mismatch)'],
    [
      'completed and rolled back',
      { state: 'completed', current_version: '1.0.0', rollback_status: 'completed' },
      'completed on 2.0.0, now runs 1.0.0; rollback completed',
    ],
    [
      'already on the version',
      { state: 'skipped', reason: 'already_on_version', batch: null },
      'skipped: already on 2.0.0',
    ],
  ];
  for (const [name, overrides, expected] of cases) {
    it(`a device ${name}: "${expected}"`, () => assert.equal(explainDevice({ ...device, ...overrides }), expected));
  }

  it('states the rule and the counts a gate used, consistent with the batch', () => {
    assert.equal(
      describeStop({
        rule: 'failure_threshold',
        batch: 0,
        batch_kind: 'canary',
        failed: 3,
        judged: 12,
        size: 50,
        threshold_percent: 10,
        on_failure: 'rollback',
      }),
      'batch 0 (canary): 3 failed of 12 with a verdict (25.0%, of 50 in the batch), more than the 10% allowed; ' +
        'on_failure rollback',
    );
  });
});
