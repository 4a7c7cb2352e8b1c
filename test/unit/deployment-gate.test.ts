/** The rollout's decisions, pure: a batch's tally from its counters, its gate, the state it should be in, the next action, the rate. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  type BatchTally,
  batchStateFor,
  type DeploymentSituation,
  dispatchAllowance,
  emptyTally,
  type GatedBatch,
  type GateReason,
  type GateVerdict,
  gateDecision,
  nextAction,
  tallyOf,
} from '../../src/server/deployments/gate.ts';
import { type BatchState, type DeviceCounts, emptyDeviceCounts } from '../../src/server/model/deployment.ts';

const NOW = Date.parse('2030-01-01T12:00:00Z');
const MINUTE = 60_000;

/** A tally whose size is the sum of its outcomes. */
const tally = (counts: Partial<Omit<BatchTally, 'size'>>): BatchTally => {
  const filled = { ...emptyTally(), ...counts };
  filled.size = filled.pending + filled.baking + filled.succeeded + filled.failed + filled.skipped + filled.cancelled;
  return filled;
};

describe("a batch's tally from its counters", () => {
  const counts = (overrides: Partial<DeviceCounts>): DeviceCounts => ({ ...emptyDeviceCounts(), ...overrides });

  it('counts what is not started, queued (or sent), updating or waiting for a retry as pending', () => {
    const tallied = tallyOf(counts({ pending: 1, queued: 5, in_progress: 4, retrying: 5 }));
    assert.equal(tallied.pending, 15);
    assert.equal(tallied.size, 15);
  });

  it('counts baked devices as succeeded, failed and timed out ones (bake failures included) as failed', () => {
    const tallied = tallyOf(counts({ completed: 7, failed: 2, timed_out: 1, skipped: 3, cancelled: 4 }));
    assert.deepEqual(
      [tallied.succeeded, tallied.failed, tallied.skipped, tallied.cancelled, tallied.size],
      [7, 3, 3, 4, 17],
    );
  });

  it('keeps when the last bake ends only while devices bake', () => {
    assert.equal(tallyOf(counts({ baking: 2 }), NOW + MINUTE).bakeEndsAtMs, NOW + MINUTE);
    assert.equal(tallyOf(counts({ completed: 2 }), NOW + MINUTE).bakeEndsAtMs, null);
  });
});

describe("a batch's gate", () => {
  const threshold10 = { failure_threshold_percent: 10, min_sample: 5 };
  const cases: [
    string,
    Partial<BatchTally>,
    { failure_threshold_percent: number; min_sample: number },
    GateVerdict,
    GateReason,
  ][] = [
    ['an empty batch passes', {}, threshold10, 'pass', 'passed'],
    [
      'only skipped and cancelled devices: passes, nothing to judge',
      { skipped: 3, cancelled: 1 },
      threshold10,
      'pass',
      'passed',
    ],
    ['nothing reported yet: waits', { pending: 10 }, threshold10, 'wait', 'in_flight'],
    ['all succeeded: passes', { succeeded: 10 }, threshold10, 'pass', 'passed'],
    [
      '1 of 2 failing with min_sample 5 in a batch of 10: no verdict yet',
      { failed: 1, succeeded: 1, pending: 8 },
      threshold10,
      'wait',
      'in_flight',
    ],
    [
      '4 of 4 failing, still below min_sample 5: no verdict yet',
      { failed: 4, pending: 6 },
      threshold10,
      'wait',
      'in_flight',
    ],
    [
      'the sample reached with the threshold crossed: fails at once, devices still in flight',
      { failed: 2, succeeded: 3, pending: 5 },
      threshold10,
      'fail',
      'threshold_crossed',
    ],
    [
      'the sample reached under the threshold: waits for the rest',
      { succeeded: 5, pending: 5 },
      threshold10,
      'wait',
      'in_flight',
    ],
    [
      'a batch of 2 smaller than min_sample 5, 1 failed: judged whole, fails',
      { failed: 1, succeeded: 1 },
      threshold10,
      'fail',
      'threshold_crossed',
    ],
    [
      'a canary of 1 device that failed, min_sample 5: fails (never waved through)',
      { failed: 1 },
      threshold10,
      'fail',
      'threshold_crossed',
    ],
    ['exactly at the threshold (1 of 10 at 10%): passes', { failed: 1, succeeded: 9 }, threshold10, 'pass', 'passed'],
    [
      'just above the threshold (2 of 10 at 10%): fails',
      { failed: 2, succeeded: 8 },
      threshold10,
      'fail',
      'threshold_crossed',
    ],
    [
      'exactly at a fractional threshold (1 of 8 at 12.5%): passes',
      { failed: 1, succeeded: 7 },
      { failure_threshold_percent: 12.5, min_sample: 1 },
      'pass',
      'passed',
    ],
    [
      'threshold 0: the first failure with the sample reached fails',
      { failed: 1, succeeded: 4, pending: 5 },
      { failure_threshold_percent: 0, min_sample: 5 },
      'fail',
      'threshold_crossed',
    ],
    [
      'threshold 100: never fails, even all failed',
      { failed: 10 },
      { failure_threshold_percent: 100, min_sample: 1 },
      'pass',
      'passed',
    ],
    [
      'skipped and cancelled devices neither fail nor succeed: 1 of 2 judged at 50%',
      { failed: 1, succeeded: 1, skipped: 8 },
      { failure_threshold_percent: 50, min_sample: 5 },
      'pass',
      'passed',
    ],
    [
      'every device committed, bake not over: waits',
      { succeeded: 2, baking: 8, bakeEndsAtMs: NOW + MINUTE },
      threshold10,
      'wait',
      'baking',
    ],
    [
      'a baking device is not yet a success: 1 failed, 1 baked, 8 baking at min_sample 2 fails',
      { failed: 1, succeeded: 1, baking: 8, bakeEndsAtMs: NOW + MINUTE },
      { failure_threshold_percent: 10, min_sample: 2 },
      'fail',
      'threshold_crossed',
    ],
  ];
  for (const [name, counts, settings, verdict, reason] of cases) {
    it(name, () => {
      const decision = gateDecision(tally(counts), settings);
      assert.deepEqual([decision.verdict, decision.reason], [verdict, reason]);
    });
  }

  it('reports the judged and failed devices and when the bake ends', () => {
    const decision = gateDecision(tally({ failed: 1, succeeded: 3, baking: 2, bakeEndsAtMs: NOW + MINUTE }), {
      failure_threshold_percent: 50,
      min_sample: 1,
    });
    assert.deepEqual(decision, { verdict: 'wait', reason: 'baking', judged: 4, failed: 1, wakeAtMs: NOW + MINUTE });
    assert.equal(gateDecision(tally({ pending: 3 }), { failure_threshold_percent: 10, min_sample: 1 }).judged, 0);
  });
});

describe('the next action of a deployment', () => {
  const batch = (counts: Partial<BatchTally>, overrides: Partial<GatedBatch> = {}): GatedBatch => ({
    state: 'running',
    promoted: false,
    tally: tally(counts),
    ...overrides,
  });
  const notStarted = (size: number): GatedBatch => batch({ pending: size }, { state: 'pending' });
  const situation = (batches: GatedBatch[], overrides: Partial<DeploymentSituation> = {}): DeploymentSituation => ({
    state: 'running',
    startAtMs: null,
    dynamic: false,
    settings: { failure_threshold_percent: 10, min_sample: 5, on_failure: 'rollback' },
    batches,
    nowMs: NOW,
    ...overrides,
  });
  const baking = { succeeded: 1, baking: 4, bakeEndsAtMs: NOW + 3 * MINUTE };
  const failing = { failed: 3, succeeded: 2 };
  const passed = (counts: Partial<BatchTally>) => batch(counts, { state: 'passed' });

  const cases: [string, DeploymentSituation, ReturnType<typeof nextAction>][] = [
    [
      'cancelled: nothing',
      situation([notStarted(5)], { state: 'cancelled' }),
      { action: 'nothing', reason: 'ended', wakeAtMs: null },
    ],
    [
      'completed already: nothing',
      situation([passed({ succeeded: 5 })], { state: 'completed' }),
      { action: 'nothing', reason: 'ended', wakeAtMs: null },
    ],
    [
      'rolled back, even with a failed batch: nothing',
      situation([batch(failing, { state: 'failed' })], { state: 'rolled_back' }),
      { action: 'nothing', reason: 'ended', wakeAtMs: null },
    ],
    [
      'scheduled, start_at ahead: nothing until then',
      situation([notStarted(5)], { state: 'scheduled', startAtMs: NOW + MINUTE }),
      { action: 'nothing', reason: 'scheduled', wakeAtMs: NOW + MINUTE },
    ],
    [
      'scheduled, start_at reached: starts',
      situation([notStarted(5)], { state: 'scheduled', startAtMs: NOW }),
      { action: 'start' },
    ],
    [
      'running, no batch started: starts the first',
      situation([notStarted(5), notStarted(5)]),
      { action: 'start_batch', index: 0 },
    ],
    ['no device at all: completes', situation([]), { action: 'complete' }],
    [
      'no device yet, dynamic: keeps waiting for devices',
      situation([], { dynamic: true }),
      { action: 'nothing', reason: 'dynamic', wakeAtMs: null },
    ],
    [
      'the canary in flight: waits for its reports',
      situation([batch({ pending: 3, succeeded: 2 }), notStarted(95)]),
      { action: 'nothing', reason: 'in_flight', wakeAtMs: null },
    ],
    [
      'the canary baking: waits until its bake ends',
      situation([batch(baking, { state: 'baking' }), notStarted(95)]),
      { action: 'nothing', reason: 'baking', wakeAtMs: NOW + 3 * MINUTE },
    ],
    [
      'the canary passed: starts the next batch',
      situation([passed({ succeeded: 5 }), notStarted(95)]),
      { action: 'start_batch', index: 1 },
    ],
    [
      'the canary promoted while baking: starts the next batch now (promote skips the bake)',
      situation([batch(baking, { state: 'baking', promoted: true }), notStarted(95)]),
      { action: 'start_batch', index: 1 },
    ],
    [
      'a rolling batch passed: the one after it starts, not a later one',
      situation([passed({ succeeded: 5 }), passed({ succeeded: 5 }), notStarted(5), notStarted(5)]),
      { action: 'start_batch', index: 2 },
    ],
    [
      'the last batch passed while an earlier promoted one is still in flight: waits',
      situation([batch({ pending: 1, succeeded: 4 }, { promoted: true }), passed({ succeeded: 95 })]),
      { action: 'nothing', reason: 'in_flight', wakeAtMs: null },
    ],
    [
      'every batch passed: completes',
      situation([passed({ succeeded: 5 }), passed({ succeeded: 94, failed: 1 })]),
      { action: 'complete' },
    ],
    [
      'a batch failed and accepted by the operator, the rest passed: completes',
      situation([batch(failing, { state: 'failed', promoted: true }), passed({ succeeded: 95 })]),
      { action: 'complete' },
    ],
    [
      'every batch passed, dynamic: keeps running for devices that come to match',
      situation([passed({ succeeded: 5 })], { dynamic: true }),
      { action: 'nothing', reason: 'dynamic', wakeAtMs: null },
    ],
    [
      'the last batch baking: no completion before the bake ends',
      situation([passed({ succeeded: 5 }), batch(baking, { state: 'baking' })]),
      { action: 'nothing', reason: 'baking', wakeAtMs: NOW + 3 * MINUTE },
    ],
    [
      'paused: nothing, not even the next batch',
      situation([passed({ succeeded: 5 }), notStarted(95)], { state: 'paused' }),
      { action: 'nothing', reason: 'paused', wakeAtMs: null },
    ],
  ];
  for (const [name, input, expected] of cases) {
    it(name, () => assert.deepEqual(nextAction(input), expected));
  }

  it('applies on_failure to a failed batch, naming it, with the counts its gate used', () => {
    const action = nextAction(
      situation([passed({ succeeded: 5 }), batch({ ...failing, pending: 40 }, { state: 'failed' }), notStarted(50)]),
    );
    assert.ok(action.action === 'apply_on_failure');
    assert.equal(action.onFailure, 'rollback');
    assert.equal(action.batchIndex, 1);
    assert.deepEqual([action.gate.failed, action.gate.judged], [3, 5]);
  });

  it('applies an abort or rollback even while the operator paused the deployment', () => {
    const action = nextAction(situation([batch(failing, { state: 'failed' }), notStarted(95)], { state: 'paused' }));
    assert.equal(action.action, 'apply_on_failure');
  });

  it('does not pause again a deployment its failed gate already paused', () => {
    const input = situation([batch(failing, { state: 'failed' }), notStarted(95)], {
      state: 'paused',
      settings: { failure_threshold_percent: 10, min_sample: 5, on_failure: 'pause' },
    });
    assert.deepEqual(nextAction(input), { action: 'nothing', reason: 'paused', wakeAtMs: null });
  });

  it('goes on past a failed batch once the operator resumed (the batch is promoted)', () => {
    const input = situation([batch(failing, { state: 'failed', promoted: true }), notStarted(95)], {
      settings: { failure_threshold_percent: 10, min_sample: 5, on_failure: 'pause' },
    });
    assert.deepEqual(nextAction(input), { action: 'start_batch', index: 1 });
  });

  it('does not judge a canary of 1 of 2 failing below min_sample: the canary waits', () => {
    const input = situation([batch({ failed: 1, succeeded: 1, pending: 8 }), notStarted(90)]);
    assert.deepEqual(nextAction(input), { action: 'nothing', reason: 'in_flight', wakeAtMs: null });
  });
});

describe('the state a batch should be in', () => {
  const cases: [string, BatchState, boolean, Partial<BatchTally>, GateVerdict, BatchState][] = [
    ['not started', 'pending', false, { pending: 5 }, 'wait', 'pending'],
    ['devices in flight', 'running', false, { pending: 2, succeeded: 3 }, 'wait', 'running'],
    ['all committed, baking', 'running', false, { baking: 5 }, 'wait', 'baking'],
    ['gate passed', 'baking', false, { succeeded: 5 }, 'pass', 'passed'],
    ['gate failed, devices still in flight', 'running', false, { failed: 3, pending: 2 }, 'fail', 'failed'],
    ['failed stays failed when later devices succeed', 'failed', false, { failed: 3, succeeded: 97 }, 'pass', 'failed'],
    ['failed stays failed when the operator accepts it', 'failed', true, { failed: 5 }, 'fail', 'failed'],
    ['promoted while baking', 'baking', true, { baking: 5 }, 'wait', 'passed'],
    ['promoted with devices in flight', 'running', true, { pending: 1, baking: 4 }, 'wait', 'running'],
    ['passed, a device added (dynamic)', 'passed', false, { pending: 1, succeeded: 5 }, 'wait', 'running'],
    ['passed, nothing added', 'passed', false, { succeeded: 5 }, 'pass', 'passed'],
  ];
  for (const [name, state, promoted, counts, verdict, expected] of cases) {
    it(`${name}: ${expected}`, () =>
      assert.equal(batchStateFor({ state, promoted, tally: tally(counts) }, verdict), expected));
  }
});

describe('the dispatch rate', () => {
  const allowanceCases: [number | null, number, number][] = [
    [null, 5000, Number.POSITIVE_INFINITY],
    [10, 0, 10],
    [10, 3, 7],
    [10, 10, 0],
    [10, 12, 0],
  ];
  for (const [max, queued, expected] of allowanceCases) {
    it(`max_per_minute ${max}, ${queued} queued in the last minute: ${expected} more now`, () =>
      assert.equal(dispatchAllowance(max, queued), expected));
  }
});
