/**
 * The deployment as shown and judged, from its rows (view.ts), and when a `deployment` event is
 * due (announce.ts): pure, without a database.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { eventsFor } from '../../src/server/deployments/announce.ts';
import type { BatchRow, DeploymentRow, DeviceStateRow } from '../../src/server/deployments/repo.ts';
import { deploymentSettingsOf } from '../../src/server/deployments/schemas.ts';
import { retryAtMs, timelineBucketSeconds, viewOf } from '../../src/server/deployments/view.ts';

const NOW = Date.parse('2030-01-01T00:10:00Z');
const minutesAgo = (minutes: number) => new Date(NOW - minutes * 60_000);

function deploymentRow(overrides: Partial<DeploymentRow> = {}, settings = {}): DeploymentRow {
  return {
    id: 'dep_1',
    organization_id: 'org_1',
    version: '1.1.0',
    target: { all: true },
    dynamic: false,
    settings: {
      ...deploymentSettingsOf({ version: '1.1.0', target: { all: true }, strategy: 'canary', canary_count: 1 }),
      min_sample: 1,
      failure_threshold_percent: 0,
      bake_minutes: 5,
      ...settings,
    },
    start_at: null,
    paused: false,
    cancelled_at: null,
    aborted_at: null,
    abort_reason: null,
    rolled_back_at: null,
    finished_at: null,
    announced: null,
    created_at: minutesAgo(20),
    started_at: minutesAgo(20),
    ...overrides,
  };
}

const batches = (started: boolean[]): BatchRow[] =>
  started.map((isStarted, index) => ({
    batch_index: index,
    kind: index === 0 ? 'canary' : 'batch',
    started_at: isStarted ? minutesAgo(15) : null,
    promoted: false,
  }));

function device(batch: number, overrides: Partial<DeviceStateRow> = {}): DeviceStateRow {
  return {
    device_id: `d${batch}-${Math.random()}`,
    batch_index: batch,
    from_version: '1.0.0',
    bake_failed_at: null,
    bake_failure: null,
    status: null,
    update_id: null,
    finished_at: null,
    error_code: null,
    error_message: null,
    failures: 0,
    online: true,
    current_version: '1.0.0',
    ...overrides,
  };
}

describe('viewOf: status, batch states and counts derived from the rows', () => {
  const cases: {
    name: string;
    row?: Partial<DeploymentRow>;
    devices: DeviceStateRow[];
    started: boolean[];
    status: string;
    states: string[];
  }[] = [
    {
      name: 'a canary still baking holds the rest back',
      devices: [device(0, { status: 'completed', finished_at: minutesAgo(1) }), device(1)],
      started: [true, false],
      status: 'running',
      states: ['baking', 'pending'],
    },
    {
      name: 'a canary that baked its whole bake passed',
      devices: [device(0, { status: 'completed', finished_at: minutesAgo(6) }), device(1)],
      started: [true, false],
      status: 'running',
      states: ['passed', 'pending'],
    },
    {
      name: 'a device that failed within its bake fails the canary',
      devices: [
        device(0, { status: 'completed', finished_at: minutesAgo(6), bake_failed_at: minutesAgo(5) }),
        device(1),
      ],
      started: [true, false],
      status: 'running',
      states: ['failed', 'pending'],
    },
    {
      name: 'every batch passed: completed',
      devices: [
        device(0, { status: 'completed', finished_at: minutesAgo(9) }),
        device(1, { status: 'completed', finished_at: minutesAgo(6) }),
      ],
      started: [true, true],
      status: 'completed',
      states: ['passed', 'passed'],
    },
    {
      name: 'rolled back wins over the batches',
      row: { aborted_at: minutesAgo(1), rolled_back_at: minutesAgo(1) },
      devices: [device(0, { status: 'failed', finished_at: minutesAgo(2) }), device(1)],
      started: [true, false],
      status: 'rolled_back',
      states: ['failed', 'pending'],
    },
    {
      name: 'a start ahead is scheduled',
      row: { start_at: new Date(NOW + 60_000), started_at: null },
      devices: [device(0), device(1)],
      started: [false, false],
      status: 'scheduled',
      states: ['pending', 'pending'],
    },
  ];
  for (const testCase of cases) {
    it(testCase.name, () => {
      const view = viewOf(deploymentRow(testCase.row), batches(testCase.started), testCase.devices, NOW, 1000);
      assert.equal(view.status, testCase.status);
      assert.deepEqual(
        view.batches.map((batch) => batch.state),
        testCase.states,
      );
      assert.equal(view.total, testCase.devices.length);
    });
  }

  it('counts a device without an update row as pending, and the others by their row', () => {
    const view = viewOf(
      deploymentRow(),
      batches([true, true]),
      [device(0, { status: 'in_progress' }), device(1), device(1, { status: 'failed', finished_at: minutesAgo(1) })],
      NOW,
      1000,
    );
    assert.deepEqual([view.counts.in_progress, view.counts.pending, view.counts.failed], [1, 1, 1]);
    assert.deepEqual([view.batches[1]!.counts.pending, view.batches[1]!.counts.failed], [1, 1]);
  });
});

describe("viewOf: when a baking batch's bake ends", () => {
  const bakeEndsAt = (devices: DeviceStateRow[], settings = {}, promoted = false) =>
    viewOf(
      deploymentRow({}, settings),
      batches([true, false]).map((batch) => ({ ...batch, promoted: promoted && batch.batch_index === 0 })),
      [...devices, device(1)],
      NOW,
      1000,
    ).batches.map((batch) => [batch.state, batch.bake_ends_at]);

  it("baking: the last committed device's commit + bake_minutes, what the gate waits for", () => {
    assert.deepEqual(
      bakeEndsAt([
        device(0, { status: 'completed', finished_at: minutesAgo(4) }),
        device(0, { status: 'completed', finished_at: minutesAgo(2) }),
        device(0, { status: 'completed', finished_at: minutesAgo(3) }),
      ]),
      [
        ['baking', new Date(NOW + 3 * 60_000).toISOString()],
        ['pending', null],
      ],
    );
  });

  it('a device that failed its bake no longer holds the bake open', () => {
    assert.deepEqual(
      bakeEndsAt(
        [
          device(0, { status: 'completed', finished_at: minutesAgo(4) }),
          device(0, { status: 'completed', finished_at: minutesAgo(1), bake_failed_at: minutesAgo(0.5) }),
        ],
        { failure_threshold_percent: 100 },
      )[0],
      ['baking', new Date(NOW + 60_000).toISOString()],
    );
  });

  it('null while devices are still in flight, once passed, and for a promoted batch', () => {
    const committed = device(0, { status: 'completed', finished_at: minutesAgo(1) });
    assert.deepEqual(bakeEndsAt([committed, device(0, { status: 'in_progress' })])[0], ['running', null]);
    assert.deepEqual(bakeEndsAt([device(0, { status: 'completed', finished_at: minutesAgo(6) })])[0], ['passed', null]);
    assert.deepEqual(bakeEndsAt([committed], {}, true)[0], ['passed', null]);
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

describe('retryAtMs: when a failed device is tried again', () => {
  const finished = new Date(NOW);
  const cases = [
    { name: 'not failed: never', status: 'completed' as const, failures: 0, maxRetries: 3, expected: null },
    {
      name: 'first failure with one retry: after the base',
      status: 'failed' as const,
      failures: 1,
      maxRetries: 1,
      expected: NOW + 1000,
    },
    {
      name: 'second timeout with two retries: twice the base',
      status: 'timed_out' as const,
      failures: 2,
      maxRetries: 2,
      expected: NOW + 2000,
    },
    { name: 'retries used up: never', status: 'failed' as const, failures: 2, maxRetries: 1, expected: null },
  ];
  for (const { name, status, failures, maxRetries, expected } of cases) {
    it(name, () => {
      assert.equal(retryAtMs({ status, failures, finished_at: finished }, maxRetries, 1000), expected);
    });
  }
});

describe('eventsFor: a deployment event only when something changed', () => {
  const row = deploymentRow();
  const view = viewOf(row, batches([true, false]), [device(0, { status: 'queued' }), device(1)], NOW, 1000);
  const at = new Date(NOW).toISOString();
  const announced = { status: view.status, states: view.batches.map((b) => b.state), counts: view.counts };

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

  it('announces changed counts without a batch', () => {
    const events = eventsFor(row, view, { ...announced, counts: { ...view.counts, queued: 0 } }, at);
    assert.deepEqual(
      events.map((event) => event.batch),
      [null],
    );
  });
});
