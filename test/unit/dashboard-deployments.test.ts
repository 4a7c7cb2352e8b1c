/**
 * The pure half of the dashboard's deployment pages: the create form's body (checked against the
 * server's own schema and cross-field rules, so the form never sends what the API refuses), an
 * event applied to the shown deployment (the controls it carries included: the page keeps no rule
 * of its own), the batches listed, a batch's words, and the chart's running totals.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Compile } from 'typebox/compile';
import {
  applyDeploymentEvent,
  type DeploymentForm,
  describeProgress,
  emptyForm,
  FormError,
  formatCountdown,
  requestOf,
  runningTotals,
  visibleBatches,
} from '../../src/dashboard/components/deployment-model.ts';
import { type Batch, CreateDeploymentBody, checkDeploymentRequest } from '../../src/server/deployments/schemas.ts';
import {
  type BatchState,
  type Control,
  type DeploymentState,
  type DeviceCounts,
  emptyDeviceCounts,
  emptyRollbackCounts,
  emptyWaitingCounts,
} from '../../src/server/model/deployment.ts';
import type { DeploymentEvent } from '../../src/server/model/deployment-schemas.ts';

const counts = (some: Partial<DeviceCounts>): DeviceCounts => ({ ...emptyDeviceCounts(), ...some });
const form = (some: Partial<DeploymentForm>): DeploymentForm => ({ ...emptyForm(), version: '2.0.0', ...some });
const schema = Compile(CreateDeploymentBody);

/** The body the form sends, after the server's schema and rules accepted it. */
function accepted(some: Partial<DeploymentForm>) {
  const body = requestOf(form(some));
  assert.ok(schema.Check(body), JSON.stringify([...schema.Errors(body)]));
  checkDeploymentRequest(body);
  return body;
}

describe('requestOf (the create form → POST /api/v1/deployments)', () => {
  it('sends a canary by percent to the whole fleet, leaving empty fields to the server defaults', () => {
    assert.deepEqual(accepted({}), {
      version: '2.0.0',
      target: { all: true },
      strategy: 'canary',
      canary_percent: 10,
      rest_strategy: 'all_at_once',
      on_failure: 'pause',
    });
  });

  it('sends a canary by count with a rolling rest, and every gate and limit typed in', () => {
    const startAt = '2030-01-31T02:00';
    assert.deepEqual(
      accepted({
        wholeFleet: false,
        tags: 'site-a, edge',
        models: 'rpi4',
        strategy: 'canary',
        canarySize: '3',
        canaryUnit: 'devices',
        restStrategy: 'rolling',
        batchSize: '25',
        batchUnit: 'percent',
        thresholdPercent: '5',
        minSample: '3',
        bakeMinutes: '0.05',
        onFailure: 'rollback',
        maxPerMinute: '100',
        deviceTimeoutMinutes: '15',
        retries: '2',
        startAt,
        force: true,
        dynamic: true,
      }),
      {
        version: '2.0.0',
        target: { tags: ['site-a', 'edge'], models: ['rpi4'] },
        strategy: 'canary',
        canary_count: 3,
        rest_strategy: 'rolling',
        batch_size: '25%',
        failure_threshold_percent: 5,
        min_sample: 3,
        bake_minutes: 0.05,
        on_failure: 'rollback',
        max_per_minute: 100,
        device_timeout_minutes: 15,
        max_retries: 2,
        start_at: new Date(startAt).toISOString(),
        force: true,
        dynamic: true,
      },
    );
  });

  it('sends rolling batches by count and all at once without any canary or batch field', () => {
    const rolling = accepted({ strategy: 'rolling', batchSize: '50', batchUnit: 'devices', canarySize: '10' });
    assert.equal(rolling.batch_size, 50);
    assert.equal(rolling.canary_percent, undefined);
    assert.equal(rolling.rest_strategy, undefined);
    const atOnce = accepted({ strategy: 'all_at_once', batchSize: '50' });
    assert.deepEqual(Object.keys(atOnce).sort(), ['on_failure', 'strategy', 'target', 'version']);
  });

  it('splits device ids on commas, spaces and new lines', () => {
    const body = accepted({ wholeFleet: false, deviceIds: 'gw-1, gw-2\ngw-3  gw-4' });
    assert.deepEqual(body.target, { device_ids: ['gw-1', 'gw-2', 'gw-3', 'gw-4'] });
  });

  it('refuses, with a sentence, what it cannot turn into a request', () => {
    const cases: [Partial<DeploymentForm>, RegExp][] = [
      [{ wholeFleet: false }, /^Choose the devices/],
      [{ canarySize: '' }, /^A canary needs its size/],
      [{ strategy: 'rolling', batchSize: ' ' }, /^Rolling batches need a batch size/],
      [{ thresholdPercent: 'ten' }, /^The failure threshold must be a number \(got "ten"\)/],
      [{ startAt: 'tomorrow' }, /^The start time is not a date and time/],
    ];
    for (const [some, message] of cases) {
      assert.throws(
        () => requestOf(form(some)),
        (error: unknown) => error instanceof FormError && message.test(error.message),
        JSON.stringify(some),
      );
    }
  });
});

const batch = (index: number, state: BatchState, size = 2): Batch => ({
  index,
  kind: index === 0 ? 'canary' : 'batch',
  size,
  state,
  counts: emptyDeviceCounts(),
  waiting: emptyWaitingCounts(),
  bake_failed: 0,
  bake_ends_at: null,
  promoted: false,
});

describe('applyDeploymentEvent', () => {
  const shown = {
    id: 'd1',
    status: 'running' as DeploymentState,
    total: 4,
    counts: counts({ pending: 2, in_progress: 2 }),
    bake_failed: 0,
    rollback: null,
    controls: ['pause', 'cancel', 'promote', 'rollback'] as Control[],
    stop_reason: null as string | null,
    batches: [batch(0, 'running'), batch(1, 'pending')],
  };
  const event = (some: Partial<DeploymentEvent>): DeploymentEvent => ({
    organization_id: 'o',
    deployment_id: 'd1',
    version: '2.0.0',
    status: 'running',
    previous_status: 'running',
    batch: null,
    total: 4,
    counts: counts({ pending: 2, completed: 2 }),
    bake_failed: 0,
    rollback: null,
    controls: ['pause', 'cancel', 'promote', 'rollback'],
    stop_reason: null,
    at: new Date().toISOString(),
    ...some,
  });

  it('takes the status, the counts and the changed batch at once, leaving the other batches as they were', () => {
    const batchCounts = counts({ baking: 2 });
    const bakeEndsAt = new Date(Date.now() + 30_000).toISOString();
    const changed = { index: 0, kind: 'canary', size: 2, state: 'baking', previous_state: 'running' } as const;
    const next = applyDeploymentEvent(
      shown,
      event({ batch: { ...changed, counts: batchCounts, bake_failed: 0, bake_ends_at: bakeEndsAt } }),
    );
    assert.equal(next.status, 'running');
    assert.deepEqual(next.counts, counts({ pending: 2, completed: 2 }));
    assert.equal(next.batches[0]!.state, 'baking');
    assert.deepEqual(next.batches[0]!.counts, batchCounts);
    assert.equal(next.batches[0]!.bake_ends_at, bakeEndsAt);
    assert.equal(next.batches[1], shown.batches[1]);
  });

  it('takes what a gate that tripped says: the failed batch, its bake failures, the rollback, the stop reason and the controls left', () => {
    const rollback = { ...emptyRollbackCounts(), queued: 1, completed: 1 };
    const stopReason = 'batch 0 (canary): 2 failed of 2 with a verdict (100.0%, of 2 in the batch), …';
    const next = applyDeploymentEvent(
      shown,
      event({
        status: 'rolled_back',
        counts: counts({ completed: 0, failed: 2, cancelled: 2 }),
        bake_failed: 2,
        rollback,
        controls: [],
        stop_reason: stopReason,
        batch: {
          index: 0,
          kind: 'canary',
          size: 2,
          state: 'failed',
          previous_state: 'baking',
          counts: counts({ failed: 2 }),
          bake_failed: 2,
          bake_ends_at: null,
        },
      }),
    );
    assert.equal(next.status, 'rolled_back');
    assert.deepEqual(next.controls, [], 'a rolled-back deployment offers nothing, as the server says');
    assert.equal(next.bake_failed, 2);
    assert.deepEqual(next.rollback, rollback);
    assert.equal(next.stop_reason, stopReason);
    assert.deepEqual([next.batches[0]!.state, next.batches[0]!.bake_failed], ['failed', 2]);
  });

  it("ignores another deployment's event", () => {
    assert.equal(applyDeploymentEvent(shown, event({ deployment_id: 'd2', status: 'paused' })), shown);
  });
});

describe('visibleBatches', () => {
  it('lists every batch of a short deployment', () => {
    const batches = [batch(0, 'passed'), batch(1, 'running'), batch(2, 'pending')];
    assert.deepEqual(visibleBatches(batches), {
      earlier: { batches: 0, devices: 0 },
      shown: batches,
      later: { batches: 0, devices: 0 },
    });
  });

  it('lists the current batch of a thousand with a few around it, and counts the rest', () => {
    const batches = Array.from({ length: 1000 }, (_, index) =>
      batch(index, index < 500 ? 'passed' : index === 500 ? 'running' : 'pending', 1),
    );
    const { earlier, shown, later } = visibleBatches(batches);
    assert.deepEqual(
      shown.map((item) => item.index),
      Array.from({ length: 24 }, (_, index) => 480 + index),
    );
    assert.deepEqual(earlier, { batches: 480, devices: 480 });
    assert.deepEqual(later, { batches: 496, devices: 496 });
  });
});

describe('the words and numbers the page shows', () => {
  it('describes a batch as completed, baking, failed (bake failures among them) and in progress of its size', () => {
    assert.equal(
      describeProgress(
        counts({ completed: 3, baking: 2, failed: 1, timed_out: 1, queued: 1, in_progress: 1, retrying: 1 }),
        10,
        1,
      ),
      '3 completed · 2 baking · 2 failed (1 in the bake) · 3 in progress of 10',
    );
    assert.equal(describeProgress(counts({}), 5), '0 completed of 5');
  });

  it('never shows a canary that failed its bake as all completed', () => {
    // Two of two committed, then reverted in the bake: the server counts them failed, and so do the words.
    assert.equal(describeProgress(counts({ failed: 2 }), 2, 2), '0 completed · 2 failed (2 in the bake) of 2');
  });

  it('counts a bake down as m:ss, never below zero', () => {
    assert.equal(formatCountdown(10_000 + 83_500, 10_000), '1:24');
    assert.equal(formatCountdown(10_000, 20_000), '0:00');
  });

  const timeline = {
    bucket_seconds: 10,
    points: [
      { at: '2030-01-01T00:00:10.000Z', completed: 2, failed: 0 },
      // Buckets without any change are left out by the API.
      { at: '2030-01-01T00:00:30.000Z', completed: 3, failed: 1 },
    ],
  };
  const minutesAndSeconds = (totals: ReturnType<typeof runningTotals>) =>
    totals.map((point) => [new Date(point.atMs).toISOString().slice(14, 19), point.completed, point.failed]);

  it('adds the per-bucket counts of the timeline up into running totals', () => {
    assert.deepEqual(minutesAndSeconds(runningTotals(timeline)), [
      ['00:10', 0, 0],
      ['00:20', 2, 0],
      ['00:40', 5, 1],
    ]);
  });

  it('starts the totals at the deployment start and holds the last ones until now', () => {
    const span = { fromMs: Date.parse('2030-01-01T00:00:02Z'), toMs: Date.parse('2030-01-01T00:01:00Z') };
    assert.deepEqual(minutesAndSeconds(runningTotals(timeline, span)), [
      ['00:02', 0, 0],
      ['00:20', 2, 0],
      ['00:40', 5, 1],
      ['01:00', 5, 1],
    ]);
  });
});
