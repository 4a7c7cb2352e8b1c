/**
 * A deployment as shown and judged, pure: the view from its batches and the counters kept on
 * write, the `deployment` events of a change, and the timeline's bucket width.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { eventsFor } from '../../src/server/deployments/lifecycle.ts';
import type { BatchRow } from '../../src/server/deployments/repo.ts';
import { countersOf, timelineBucketSeconds, viewOf } from '../../src/server/deployments/view.ts';
import type { BatchState } from '../../src/server/model/deployment.ts';

const NOW = Date.parse('2030-01-01T12:00:00Z');

const batchRow = (index: number, state: BatchState, overrides: Partial<BatchRow> = {}): BatchRow => ({
  batch_index: index,
  kind: index === 0 ? 'canary' : 'batch',
  state,
  promoted: false,
  started_at: state === 'pending' ? null : new Date(NOW),
  ...overrides,
});

/** Counter rows as deployment_counts holds them. */
const rows = (entries: [number, string, number][]) =>
  entries.map(([batch_index, bucket, n]) => ({ batch_index, bucket, n }));

describe('viewOf: the deployment from its counters', () => {
  const counters = countersOf(
    rows([
      [0, 'completed', 8],
      [0, 'failed', 3],
      [0, 'bake_failed', 2],
      [0, 'baking', 1],
      [1, 'cancelled', 40],
      [-1, 'skipped', 7],
      [-1, 'skipped/busy', 4],
      [-1, 'skipped/incompatible', 3],
      [0, 'rollback/completed', 6],
      [0, 'rollback/skipped', 2],
    ]),
  );
  const view = viewOf(
    { state: 'rolled_back' },
    [batchRow(0, 'failed'), batchRow(1, 'pending')],
    counters,
    new Map([[0, new Date(NOW + 60_000)]]),
  );

  it('counts each batch and the deployment from the batches; the devices left out apart', () => {
    assert.deepEqual(
      view.batches.map((batch) => [batch.size, batch.counts.completed, batch.counts.failed, batch.counts.cancelled]),
      [
        [12, 8, 3, 0],
        [40, 0, 0, 40],
      ],
    );
    assert.equal(view.total, 52);
    assert.equal(view.counts.skipped, 0, 'the left-out devices are not in the batches');
    assert.deepEqual([view.excluded.busy, view.excluded.incompatible, view.excluded.already_on_version], [4, 3, 0]);
  });

  it('counts the bake failures among the failures, and says how many there are', () => {
    assert.equal(view.bake_failed, 2);
    assert.equal(view.batches[0]?.bake_failed, 2);
  });

  it("shows the rollback's rows by status next to the forward counts", () => {
    assert.equal(view.rollback?.completed, 6);
    assert.equal(view.rollback?.skipped, 2);
    assert.equal(view.rollback?.queued, 0);
  });

  it('shows a failed batch as failed, whatever came after, and answers the controls of its state', () => {
    assert.equal(view.batches[0]?.state, 'failed');
    assert.deepEqual(view.controls, []);
  });

  it('says when a baking batch ends its bake, and nothing for the others', () => {
    const baking = viewOf(
      { state: 'running' },
      [batchRow(0, 'baking'), batchRow(1, 'running')],
      countersOf(rows([[0, 'baking', 3]])),
      new Map([
        [0, new Date(NOW + 60_000)],
        [1, new Date(NOW + 90_000)],
      ]),
    );
    assert.deepEqual(
      baking.batches.map((batch) => batch.bake_ends_at),
      [new Date(NOW + 60_000).toISOString(), null],
    );
    assert.equal(baking.gated[0]?.tally.bakeEndsAtMs, NOW + 60_000);
  });

  it('has no rollback before one, and an empty one as soon as it is rolled back', () => {
    assert.equal(viewOf({ state: 'running' }, [batchRow(0, 'running')], countersOf([])).rollback, null);
    assert.equal(viewOf({ state: 'rolled_back' }, [batchRow(0, 'running')], countersOf([])).rollback?.completed, 0);
  });
});

describe('eventsFor: a deployment event only when something changed', () => {
  const row = { id: 'dep_1', organization_id: 'org_1', version: '1.1.0', stop_reason: null };
  const view = viewOf(
    { state: 'running' },
    [batchRow(0, 'running'), batchRow(1, 'pending')],
    countersOf(
      rows([
        [0, 'queued', 1],
        [1, 'pending', 1],
      ]),
    ),
  );
  const at = new Date(NOW).toISOString();
  const announced = {
    status: view.status,
    states: view.batches.map((b) => b.state),
    counts: view.counts,
    rollback: view.rollback,
  };

  it('announces a new deployment once, and nothing when nothing changed', () => {
    assert.equal(eventsFor(row, view, null, at).length, 1);
    assert.deepEqual(eventsFor(row, view, announced, at), []);
  });

  it('ignores the key order of the stored counts (jsonb reorders them)', () => {
    const reordered = Object.fromEntries(Object.entries(view.counts).reverse()) as typeof view.counts;
    assert.deepEqual(eventsFor(row, view, { ...announced, counts: reordered }, at), []);
  });

  it('names each batch whose state changed, with its previous state', () => {
    const events = eventsFor(row, view, { ...announced, states: ['pending', 'pending'] }, at);
    assert.deepEqual(
      events.map((event) => [event.batch?.index, event.batch?.state, event.batch?.previous_state]),
      [[0, 'running', 'pending']],
    );
  });

  it('announces changed counts without a batch, with the controls that apply', () => {
    const events = eventsFor(row, view, { ...announced, counts: { ...view.counts, queued: 0 } }, at);
    assert.deepEqual(
      events.map((event) => [event.batch, event.controls]),
      [[null, ['pause', 'cancel', 'promote', 'rollback']]],
    );
  });
});

describe('timelineBucketSeconds: round buckets, at most 120 over the span', () => {
  const cases: [string, number, number][] = [
    ['nothing yet', 0, 5],
    ['a few seconds', 8_000, 5],
    ['just under ten minutes', 10 * 60_000 - 1, 5],
    ['ten minutes (the end would open a 121st bucket)', 10 * 60_000, 10],
    ['an hour', 3600_000, 60],
    ['a day', 86_400_000, 900],
    ['a week', 7 * 86_400_000, 7200],
    ['four months', 120 * 86_400_000, 2 * 86_400],
  ];
  for (const [name, spanMs, expected] of cases) {
    it(`${name}: ${expected} s`, () => {
      const seconds = timelineBucketSeconds(spanMs);
      assert.equal(seconds, expected);
      assert.ok(Math.floor(spanMs / 1000 / seconds) < 120, 'the outcome at the very end is in bucket 119 at most');
    });
  }
});
