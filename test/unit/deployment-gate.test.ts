/** The rollout's decisions, pure: a batch's gate (counts → verdict), the next action, derived statuses, retries and rate. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  batchStates,
  type DeploymentState,
  dispatchAllowance,
  type GatedBatch,
  type GateReason,
  type GateVerdict,
  gateDecision,
  nextAction,
  retryDelayMs,
  shouldRetry,
} from '../../src/server/deployments/gate.ts';
import type { BatchState, DeploymentStatus } from '../../src/server/deployments/schemas.ts';
import {
  type BatchDevice,
  type BatchTally,
  batchStateOf,
  type DeploymentFlags,
  type DeviceOutcome,
  deploymentStatusOf,
  deviceOutcome,
  emptyTally,
  tallyBatch,
} from '../../src/server/deployments/status.ts';

const NOW = Date.parse('2030-01-01T12:00:00Z');
const MINUTE = 60_000;

/** A tally whose size is the sum of its outcomes. */
const tally = (counts: Partial<Omit<BatchTally, 'size'>>): BatchTally => {
  const filled = { ...emptyTally(), ...counts };
  filled.size = filled.pending + filled.baking + filled.succeeded + filled.failed + filled.skipped + filled.cancelled;
  return filled;
};

describe("a device's outcome for the gate", () => {
  const device = (overrides: Partial<BatchDevice>): BatchDevice => ({
    status: 'completed',
    committedAtMs: NOW - 10 * MINUTE,
    failedDuringBake: false,
    willRetry: false,
    ...overrides,
  });
  const bake = 10 * MINUTE;
  const cases: [string, Partial<BatchDevice>, number, DeviceOutcome][] = [
    ['its batch has not started', { status: null }, bake, 'pending'],
    ['queued', { status: 'queued' }, bake, 'pending'],
    ['dispatched', { status: 'dispatched' }, bake, 'pending'],
    ['in progress', { status: 'in_progress' }, bake, 'pending'],
    ['committed exactly one bake ago', {}, bake, 'succeeded'],
    ['committed less than a bake ago', { committedAtMs: NOW - bake + 1 }, bake, 'baking'],
    ['committed, no bake', { committedAtMs: NOW }, 0, 'succeeded'],
    [
      'committed, then reverted within the bake',
      { committedAtMs: NOW - MINUTE, failedDuringBake: true },
      bake,
      'failed',
    ],
    ['committed, commit time unknown: bakes from now', { committedAtMs: null }, bake, 'baking'],
    ['failed, a retry to come', { status: 'failed', willRetry: true }, bake, 'pending'],
    ['failed, no retry left', { status: 'failed' }, bake, 'failed'],
    ['timed out, a retry to come', { status: 'timed_out', willRetry: true }, bake, 'pending'],
    ['timed out, no retry left', { status: 'timed_out' }, bake, 'failed'],
    ['skipped (already on the version)', { status: 'skipped' }, bake, 'skipped'],
    ['cancelled', { status: 'cancelled' }, bake, 'cancelled'],
  ];
  for (const [name, overrides, bakeMs, expected] of cases) {
    it(`${name}: ${expected}`, () => assert.equal(deviceOutcome(device(overrides), bakeMs, NOW), expected));
  }

  it('tallies a batch and says when its last bake ends', () => {
    const devices: BatchDevice[] = [
      device({ status: 'in_progress' }),
      device({ committedAtMs: NOW - 20 * MINUTE }),
      device({ committedAtMs: NOW - 2 * MINUTE }),
      device({ committedAtMs: NOW - 5 * MINUTE }),
      device({ status: 'failed' }),
      device({ status: 'skipped' }),
    ];
    assert.deepEqual(tallyBatch(devices, bake, NOW), {
      size: 6,
      pending: 1,
      baking: 2,
      succeeded: 1,
      failed: 1,
      skipped: 1,
      cancelled: 0,
      bakeEndsAtMs: NOW + 8 * MINUTE,
    });
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

  it('reports the failure rate of the judged devices and when the bake ends', () => {
    const decision = gateDecision(tally({ failed: 1, succeeded: 3, baking: 2, bakeEndsAtMs: NOW + MINUTE }), {
      failure_threshold_percent: 50,
      min_sample: 1,
    });
    assert.deepEqual(decision, {
      verdict: 'wait',
      reason: 'baking',
      judged: 4,
      failurePercent: 25,
      wakeAtMs: NOW + MINUTE,
    });
    assert.equal(
      gateDecision(tally({ pending: 3 }), { failure_threshold_percent: 10, min_sample: 1 }).failurePercent,
      null,
    );
  });
});

describe('the next action of a deployment', () => {
  const flags = (overrides: Partial<DeploymentFlags> = {}): DeploymentFlags => ({
    startAtMs: null,
    paused: false,
    cancelled: false,
    aborted: false,
    rolledBack: false,
    dynamic: false,
    ...overrides,
  });
  const batch = (counts: Partial<BatchTally>, overrides: Partial<GatedBatch> = {}): GatedBatch => ({
    started: true,
    promoted: false,
    tally: tally(counts),
    ...overrides,
  });
  const notStarted = (size: number): GatedBatch => batch({ pending: size }, { started: false });
  const state = (batches: GatedBatch[], overrides: Partial<DeploymentState> = {}): DeploymentState => ({
    flags: flags(),
    finished: false,
    settings: { failure_threshold_percent: 10, min_sample: 5, on_failure: 'rollback' },
    batches,
    nowMs: NOW,
    ...overrides,
  });
  const baking = { succeeded: 1, baking: 4, bakeEndsAtMs: NOW + 3 * MINUTE };
  const failing = { failed: 3, succeeded: 2 };

  const cases: [string, DeploymentState, ReturnType<typeof nextAction>][] = [
    [
      'cancelled: nothing',
      state([notStarted(5)], { flags: flags({ cancelled: true }) }),
      { action: 'nothing', reason: 'finished', wakeAtMs: null },
    ],
    [
      'completed already: nothing',
      state([batch({ succeeded: 5 })], { finished: true }),
      { action: 'nothing', reason: 'finished', wakeAtMs: null },
    ],
    [
      'rolled back, even with a failing gate: nothing',
      state([batch(failing)], { flags: flags({ aborted: true, rolledBack: true }) }),
      { action: 'nothing', reason: 'finished', wakeAtMs: null },
    ],
    [
      'start_at ahead: nothing until then',
      state([notStarted(5)], { flags: flags({ startAtMs: NOW + MINUTE }) }),
      { action: 'nothing', reason: 'scheduled', wakeAtMs: NOW + MINUTE },
    ],
    [
      'start_at reached: starts the first batch',
      state([notStarted(5), notStarted(5)], { flags: flags({ startAtMs: NOW }) }),
      { action: 'start_batch', index: 0 },
    ],
    ['no device at all: completes', state([]), { action: 'complete' }],
    [
      'no device yet, dynamic: keeps waiting for devices',
      state([], { flags: flags({ dynamic: true }) }),
      { action: 'nothing', reason: 'dynamic', wakeAtMs: null },
    ],
    [
      'the canary in flight: waits for its reports',
      state([batch({ pending: 3, succeeded: 2 }), notStarted(95)]),
      { action: 'nothing', reason: 'in_flight', wakeAtMs: null },
    ],
    [
      'the canary baking: waits until its bake ends',
      state([batch(baking), notStarted(95)]),
      { action: 'nothing', reason: 'baking', wakeAtMs: NOW + 3 * MINUTE },
    ],
    [
      'the canary passed: starts the next batch',
      state([batch({ succeeded: 5 }), notStarted(95)]),
      { action: 'start_batch', index: 1 },
    ],
    [
      'the canary promoted while baking: starts the next batch now (promote skips the bake)',
      state([batch(baking, { promoted: true }), notStarted(95)]),
      { action: 'start_batch', index: 1 },
    ],
    [
      'a rolling batch passed: the one after it starts, not a later one',
      state([batch({ succeeded: 5 }), batch({ succeeded: 5 }), notStarted(5), notStarted(5)]),
      { action: 'start_batch', index: 2 },
    ],
    [
      'the last batch passed while an earlier promoted one is still in flight: waits',
      state([batch({ pending: 1, succeeded: 4 }, { promoted: true }), batch({ succeeded: 95 })]),
      { action: 'nothing', reason: 'in_flight', wakeAtMs: null },
    ],
    [
      'every batch passed: completes',
      state([batch({ succeeded: 5 }), batch({ succeeded: 94, failed: 1 })]),
      { action: 'complete' },
    ],
    [
      'every batch passed, dynamic: keeps running for devices that come to match',
      state([batch({ succeeded: 5 })], { flags: flags({ dynamic: true }) }),
      { action: 'nothing', reason: 'dynamic', wakeAtMs: null },
    ],
    [
      'the last batch baking: no completion before the bake ends',
      state([batch({ succeeded: 5 }), batch(baking)]),
      { action: 'nothing', reason: 'baking', wakeAtMs: NOW + 3 * MINUTE },
    ],
    [
      'operator pause: nothing, not even the next batch',
      state([batch({ succeeded: 5 }), notStarted(95)], { flags: flags({ paused: true }) }),
      { action: 'nothing', reason: 'paused', wakeAtMs: null },
    ],
  ];
  for (const [name, input, expected] of cases) {
    it(name, () => assert.deepEqual(nextAction(input), expected));
  }

  it('applies on_failure as soon as a started batch crosses the threshold, naming the batch', () => {
    const action = nextAction(state([batch({ succeeded: 5 }), batch({ ...failing, pending: 40 }), notStarted(50)]));
    assert.equal(action.action, 'apply_on_failure');
    assert.ok(action.action === 'apply_on_failure');
    assert.equal(action.onFailure, 'rollback');
    assert.equal(action.batchIndex, 1);
    assert.equal(action.gate.reason, 'threshold_crossed');
    assert.equal(action.gate.failurePercent, 60);
  });

  it('applies an abort or rollback even while the operator paused the deployment', () => {
    const action = nextAction(state([batch(failing), notStarted(95)], { flags: flags({ paused: true }) }));
    assert.equal(action.action, 'apply_on_failure');
  });

  it('does not pause again a deployment its failed gate already paused', () => {
    const input = state([batch(failing), notStarted(95)], {
      flags: flags({ paused: true }),
      settings: { failure_threshold_percent: 10, min_sample: 5, on_failure: 'pause' },
    });
    assert.deepEqual(nextAction(input), { action: 'nothing', reason: 'paused', wakeAtMs: null });
  });

  it('goes on past a failed batch once the operator resumed (the batch is promoted)', () => {
    const input = state([batch(failing, { promoted: true }), notStarted(95)], {
      settings: { failure_threshold_percent: 10, min_sample: 5, on_failure: 'pause' },
    });
    assert.deepEqual(nextAction(input), { action: 'start_batch', index: 1 });
  });

  it("lists every batch's state for the deployment's status", () => {
    const input = state([batch({ succeeded: 5 }), batch(baking, { promoted: true }), batch(failing), notStarted(5)]);
    assert.deepEqual(batchStates(input.batches, input.settings), ['passed', 'passed', 'failed', 'pending']);
    assert.equal(deploymentStatusOf(input.flags, batchStates(input.batches, input.settings), NOW), 'running');
  });

  it('does not judge a canary of 1 of 2 failing below min_sample: the canary waits', () => {
    const input = state([batch({ failed: 1, succeeded: 1, pending: 8 }), notStarted(90)]);
    assert.deepEqual(nextAction(input), { action: 'nothing', reason: 'in_flight', wakeAtMs: null });
  });
});

describe('derived statuses', () => {
  const flags = (overrides: Partial<DeploymentFlags> = {}): DeploymentFlags => ({
    startAtMs: null,
    paused: false,
    cancelled: false,
    aborted: false,
    rolledBack: false,
    dynamic: false,
    ...overrides,
  });
  const statusCases: [string, Partial<DeploymentFlags>, BatchState[], DeploymentStatus][] = [
    ['start_at ahead', { startAtMs: NOW + 1 }, ['pending'], 'scheduled'],
    ['start_at reached, nothing started yet', { startAtMs: NOW }, ['pending'], 'running'],
    ['a batch running', {}, ['passed', 'running'], 'running'],
    ['the last batch baking', {}, ['passed', 'baking'], 'running'],
    ['a batch failing, on_failure not applied yet', {}, ['failed', 'pending'], 'running'],
    ['every batch passed', {}, ['passed', 'passed'], 'completed'],
    ['no batch (no device)', {}, [], 'completed'],
    ['every batch passed, dynamic', { dynamic: true }, ['passed'], 'running'],
    ['paused', { paused: true }, ['passed', 'pending'], 'paused'],
    ['paused before its start', { paused: true, startAtMs: NOW + 1 }, ['pending'], 'paused'],
    ['aborted by its gate', { aborted: true }, ['failed', 'pending'], 'failed'],
    ['rolled back after the abort', { aborted: true, rolledBack: true }, ['failed', 'pending'], 'rolled_back'],
    ['cancelled', { cancelled: true }, ['running', 'pending'], 'cancelled'],
    ['cancelled while paused', { cancelled: true, paused: true }, ['passed', 'pending'], 'cancelled'],
    ['rolled back by the operator after completing', { rolledBack: true }, ['passed'], 'rolled_back'],
  ];
  for (const [name, overrides, states, expected] of statusCases) {
    it(`deployment: ${name} → ${expected}`, () =>
      assert.equal(deploymentStatusOf(flags(overrides), states, NOW), expected));
  }

  const batchCases: [string, { started: boolean; promoted: boolean }, Partial<BatchTally>, GateVerdict, BatchState][] =
    [
      ['not started', { started: false, promoted: false }, { pending: 5 }, 'wait', 'pending'],
      ['devices in flight', { started: true, promoted: false }, { pending: 2, succeeded: 3 }, 'wait', 'running'],
      ['all committed, baking', { started: true, promoted: false }, { baking: 5 }, 'wait', 'baking'],
      ['gate passed', { started: true, promoted: false }, { succeeded: 5 }, 'pass', 'passed'],
      [
        'gate failed, devices still in flight',
        { started: true, promoted: false },
        { failed: 3, pending: 2 },
        'fail',
        'failed',
      ],
      ['promoted while baking', { started: true, promoted: true }, { baking: 5 }, 'wait', 'passed'],
      [
        'promoted with devices in flight',
        { started: true, promoted: true },
        { pending: 1, baking: 4 },
        'wait',
        'running',
      ],
      ['promoted after its gate failed', { started: true, promoted: true }, { failed: 5 }, 'fail', 'passed'],
    ];
  for (const [name, flagsOf, counts, verdict, expected] of batchCases) {
    it(`batch: ${name} → ${expected}`, () =>
      assert.equal(batchStateOf({ ...flagsOf, tally: tally(counts) }, verdict), expected));
  }
});

describe('retries and dispatch rate', () => {
  const retryCases: [number, number, boolean][] = [
    [1, 0, false],
    [1, 1, true],
    [2, 1, false],
    [3, 3, true],
    [4, 3, false],
  ];
  for (const [failures, maxRetries, expected] of retryCases) {
    it(`failure ${failures} with max_retries ${maxRetries}: ${expected ? 'retried' : 'final'}`, () =>
      assert.equal(shouldRetry(failures, maxRetries), expected));
  }

  const delayCases: [number, number][] = [
    [0, 30_000],
    [1, 30_000],
    [2, 60_000],
    [3, 120_000],
    [5, 480_000],
    [6, 600_000],
    [1000, 600_000],
  ];
  for (const [attempt, expected] of delayCases) {
    it(`retry after failure ${attempt} waits ${expected / 1000} s (doubling, capped at 10 min)`, () =>
      assert.equal(retryDelayMs(attempt), expected));
  }

  it('takes its own base and cap', () => {
    assert.equal(retryDelayMs(3, 100, 250), 250);
    assert.equal(retryDelayMs(2, 100, 250), 200);
  });

  const allowanceCases: [number | null, number, number][] = [
    [null, 5000, Number.POSITIVE_INFINITY],
    [10, 0, 10],
    [10, 3, 7],
    [10, 10, 0],
    [10, 12, 0],
  ];
  for (const [max, dispatched, expected] of allowanceCases) {
    it(`max_per_minute ${max}, ${dispatched} dispatched in the last minute: ${expected} more now`, () =>
      assert.equal(dispatchAllowance(max, dispatched), expected));
  }
});
