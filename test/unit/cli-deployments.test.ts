import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiError } from '../../src/cli/client.ts';
import {
  type DeployFlags,
  deploymentRequestOf,
  describeRollback,
  describeStrategy,
  describeTarget,
  formatMinutes,
  parseBatchSize,
  parseDuration,
  renderPlan,
  rollbackUnderWay,
  sampleIds,
} from '../../src/cli/deployment-format.ts';
import {
  batchBar,
  changedLines,
  type DeploymentView,
  renderDeployment,
  summarizeCounts,
} from '../../src/cli/deployment-status.ts';
import { followDeployment, type Output, StatusDisplay } from '../../src/cli/deployment-watch.ts';
import { CliError } from '../../src/cli/errors.ts';
import { summarizeOtaRecord } from '../../src/cli/operator.ts';
import { describeOta } from '../../src/cli/ota-format.ts';
import {
  type Batch,
  type DeploymentPlan,
  type DeploymentSettings,
  deploymentSettingsOf,
} from '../../src/server/deployments/schemas.ts';
import {
  type DeviceCounts,
  emptyDeviceCounts,
  emptyExcludedCounts,
  emptyRollbackCounts,
  emptyWaitingCounts,
  type RollbackCounts,
} from '../../src/server/model/deployment.ts';
import { eventually } from '../helpers/raw-device.ts';

const counts = (some: Partial<DeviceCounts>): DeviceCounts => ({ ...emptyDeviceCounts(), ...some });
const rollbackCounts = (some: Partial<RollbackCounts>): RollbackCounts => ({ ...emptyRollbackCounts(), ...some });
/** A batch as the API shows it, not baking. */
const batch = (
  index: number,
  kind: Batch['kind'],
  size: number,
  state: Batch['state'],
  some: Partial<DeviceCounts>,
  more: Partial<Pick<Batch, 'bake_failed' | 'promoted'>> = {},
): Batch => ({
  index,
  kind,
  size,
  state,
  counts: counts(some),
  waiting: emptyWaitingCounts(),
  bake_failed: 0,
  bake_ends_at: null,
  promoted: false,
  ...more,
});

/** Asserts a usage error: a CliError with exit code 2 whose one line matches. */
function assertUsage(run: () => unknown, message: RegExp): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(error instanceof CliError, String(error));
    assert.equal(error.exitCode, 2);
    assert.match(error.message, message);
    assert.doesNotMatch(error.message, /\n/);
    return true;
  });
}

describe('parseDuration', () => {
  const cases: [string, number][] = [
    ['30s', 0.5],
    ['10m', 10],
    ['1h', 60],
    ['1h30m', 90],
    ['2m30s', 2.5],
    ['1.5h', 90],
    ['0', 0],
    ['15', 15],
    [' 45s ', 0.75],
  ];
  for (const [text, minutes] of cases) {
    it(`reads ${JSON.stringify(text)} as ${minutes} minutes`, () => {
      assert.equal(parseDuration('--bake', text), minutes);
    });
  }
  for (const text of ['', '10x', 'm', '1m1h', '-5m', '10 m', 'ten']) {
    it(`refuses ${JSON.stringify(text)} with one line naming the flag`, () => {
      assertUsage(() => parseDuration('--bake', text), /^--bake must be a duration such as 30s, 10m, 1h/);
    });
  }
});

describe('formatMinutes', () => {
  const cases: [number, string][] = [
    [0, '0s'],
    [0.5, '30s'],
    [10, '10m'],
    [60, '1h'],
    [90, '1h30m'],
    [2.5, '2m30s'],
    [1 / 6, '10s'],
  ];
  for (const [minutes, text] of cases) {
    it(`writes ${minutes} minutes as ${text}, which reads back the same`, () => {
      assert.equal(formatMinutes(minutes), text);
      assert.ok(Math.abs(parseDuration('--bake', text) - minutes) < 1e-9);
    });
  }
});

describe('parseBatchSize', () => {
  const cases: [string, number | string][] = [
    ['50', 50],
    ['1', 1],
    ['10%', '10%'],
    ['100%', '100%'],
  ];
  for (const [text, size] of cases) {
    it(`reads ${text} as ${JSON.stringify(size)}`, () => assert.equal(parseBatchSize(text), size));
  }
  for (const text of ['0', '0%', '101%', '5.5', '-3', 'half', '10 %']) {
    it(`refuses ${JSON.stringify(text)}`, () => assertUsage(() => parseBatchSize(text), /^--batch-size must be/));
  }
});

describe('deploymentRequestOf', () => {
  const cases: { name: string; flags: DeployFlags; body: Record<string, unknown> }[] = [
    {
      name: 'tags alone: all at once, nothing else sent',
      flags: { tags: 'eu, lab' },
      body: { version: '1.1.0', target: { tags: ['eu', 'lab'] }, strategy: 'all_at_once' },
    },
    {
      name: 'the example of the issue: canary 5% with a bake, a threshold and rollback',
      flags: {
        tags: 'eu',
        strategy: 'canary',
        canaryPercent: '5',
        bake: '10m',
        threshold: '10',
        onFailure: 'rollback',
      },
      body: {
        version: '1.1.0',
        target: { tags: ['eu'] },
        strategy: 'canary',
        canary_percent: 5,
        bake_minutes: 10,
        failure_threshold_percent: 10,
        on_failure: 'rollback',
      },
    },
    {
      name: 'a batch size alone means rolling',
      flags: { all: true, batchSize: '10%' },
      body: { version: '1.1.0', target: { all: true }, strategy: 'rolling', batch_size: '10%' },
    },
    {
      name: 'a canary count with a batch size means a rolling rest',
      flags: { models: 'gw-1', canaryCount: '3', batchSize: '50' },
      body: {
        version: '1.1.0',
        target: { models: ['gw-1'] },
        strategy: 'canary',
        rest_strategy: 'rolling',
        canary_count: 3,
        batch_size: 50,
      },
    },
    {
      name: 'every selector and limit, a fractional bake, a UTC start',
      flags: {
        devices: 'a,b',
        currentVersions: '1.0.0',
        dynamic: true,
        bake: '30s',
        minSample: '5',
        maxPerMinute: '100',
        deviceTimeout: '1h',
        retries: '0',
        startAt: '2030-01-31T03:00:00+01:00',
        force: true,
        dryRun: true,
      },
      body: {
        version: '1.1.0',
        target: { device_ids: ['a', 'b'], current_versions: ['1.0.0'] },
        strategy: 'all_at_once',
        dynamic: true,
        bake_minutes: 0.5,
        min_sample: 5,
        max_per_minute: 100,
        device_timeout_minutes: 60,
        max_retries: 0,
        start_at: '2030-01-31T02:00:00.000Z',
        force: true,
        dry_run: true,
      },
    },
  ];
  for (const { name, flags, body } of cases) {
    it(name, () => assert.deepEqual(deploymentRequestOf('1.1.0', flags), body));
  }

  const refused: [string, DeployFlags, RegExp][] = [
    ['no target', { strategy: 'canary' }, /^choose the devices: --devices/],
    [
      'an unknown strategy',
      { all: true, strategy: 'blue_green' },
      /^--strategy must be one of all_at_once, rolling, canary/,
    ],
    ['an unknown rest', { all: true, canaryCount: '1', rest: 'later' }, /^--rest must be one of rolling, all_at_once/],
    [
      'an unknown failure action',
      { all: true, onFailure: 'panic' },
      /^--on-failure must be one of pause, abort, rollback/,
    ],
    ['a threshold over 100', { all: true, threshold: '150' }, /^--threshold must be a percentage from 0 to 100/],
    ['a min sample of 0', { all: true, minSample: '0' }, /^--min-sample must be a whole number from 1/],
    ['negative retries', { all: true, retries: '-1' }, /^--retries must be a whole number from 0/],
    [
      'a device timeout without a unit that means nothing',
      { all: true, deviceTimeout: 'soon' },
      /^--device-timeout must be a duration/,
    ],
    ['a start that is no date', { all: true, startAt: 'tomorrow' }, /^--start-at must be a date and time/],
  ];
  for (const [name, flags, message] of refused) {
    it(`refuses ${name} with one line`, () => assertUsage(() => deploymentRequestOf('1.1.0', flags), message));
  }
});

describe('batchBar', () => {
  const cases: [string, Partial<DeviceCounts>, number, number, string][] = [
    ['nothing started', { pending: 10 }, 10, 10, '..........'],
    ['all completed', { completed: 10 }, 10, 10, '##########'],
    [
      'mixed, in order done, failed, cancelled, on the way, pending',
      { completed: 4, failed: 2, cancelled: 1, in_progress: 1, queued: 1, pending: 1 },
      10,
      10,
      '####xx->>.',
    ],
    ['timed out counts as failed', { completed: 1, timed_out: 1 }, 2, 4, '##xx'],
    [
      'baking after completed, retrying on the way',
      { completed: 2, baking: 2, failed: 2, retrying: 2, pending: 2 },
      10,
      10,
      '##==xx>>..',
    ],
    ['rounding keeps the width', { completed: 1, failed: 1, pending: 1 }, 3, 10, '###xxxx...'],
    ['a dynamic deployment past its size scales to the count', { completed: 20 }, 10, 10, '##########'],
    ['an empty batch', {}, 0, 5, '.....'],
  ];
  for (const [name, some, size, width, bar] of cases) {
    it(`${name}: ${bar}`, () => {
      const drawn = batchBar(counts(some), size, width);
      assert.equal(drawn, bar);
      assert.equal(drawn.length, width);
    });
  }
});

describe('summarizeCounts, sampleIds', () => {
  it('lists the non-zero counts in the order of a device life, the bake failures among the failed', () => {
    assert.equal(
      summarizeCounts(counts({ pending: 67, completed: 40, in_progress: 10, retrying: 1, baking: 5, failed: 3 }), 2),
      '67 pending, 10 in progress, 1 retrying, 5 baking, 40 completed, 3 failed (2 in the bake)',
    );
    assert.equal(summarizeCounts(counts({})), 'no devices');
  });
  const samples: [string[], number, string][] = [
    [['a', 'b'], 2, 'a, b'],
    [['a', 'b', 'c', 'd', 'e', 'f', 'g'], 7, 'a, b, c, d, e … (+2)'],
    [['a', 'b', 'c', 'd', 'e', 'f'], 120, 'a, b, c, d, e … (+115)'],
  ];
  for (const [ids, count, text] of samples) {
    it(`shows ${count} devices as ${text}`, () => assert.equal(sampleIds(ids, count), text));
  }
});

/** The server's defaults (deploymentSettingsOf), with some settings changed. */
const settings = (some: Partial<DeploymentSettings>): DeploymentSettings => ({
  ...deploymentSettingsOf({ version: '1.1.0', target: { all: true }, strategy: 'all_at_once' }),
  ...some,
});

describe('describeStrategy', () => {
  const cases: [Partial<DeploymentSettings>, string][] = [
    [{}, 'all at once'],
    [{ strategy: 'rolling', batch_size: '10%' }, 'rolling by 10%'],
    [{ strategy: 'canary', canary_percent: 5, rest_strategy: 'all_at_once' }, 'canary 5%, then all at once'],
    [
      { strategy: 'canary', canary_count: 3, rest_strategy: 'rolling', batch_size: 50 },
      'canary 3 device(s), then rolling by 50',
    ],
  ];
  for (const [some, text] of cases) {
    it(text, () => assert.equal(describeStrategy(settings(some)), text));
  }
});

/** The plan's samples of left-out devices: none, but those given. */
const excludedSamples = (some: Partial<DeploymentPlan['excluded']>): DeploymentPlan['excluded'] => ({
  ...(Object.fromEntries(
    Object.keys(emptyExcludedCounts()).map((reason) => [reason, { count: 0, device_ids: [] as string[] }]),
  ) as DeploymentPlan['excluded']),
  ...some,
});

describe('renderPlan', () => {
  it('shows the batches with sizes and first ids, who is left out by reason, and that nothing was created', () => {
    const plan: DeploymentPlan = {
      dry_run: true,
      version: '1.1.0',
      settings: settings({
        strategy: 'canary',
        canary_count: 2,
        rest_strategy: 'all_at_once',
        bake_minutes: 10,
        on_failure: 'rollback',
      }),
      start_at: null,
      total: 12,
      batches: [
        { index: 0, kind: 'canary', size: 2, device_ids: ['d01', 'd02'] },
        { index: 1, kind: 'batch', size: 10, device_ids: ['d03', 'd04', 'd05', 'd06', 'd07', 'd08'] },
      ],
      excluded: excludedSamples({
        already_on_version: { count: 1, device_ids: ['d20'] },
        newer_version: { count: 1, device_ids: ['d21'] },
        busy: { count: 2, device_ids: ['d30', 'd31'] },
        incompatible: { count: 1, device_ids: ['d40'] },
      }),
      not_found: { count: 1, device_ids: ['typo'] },
      offline: { count: 1, device_ids: ['d05'] },
      approval: { required: false, reason: null },
    };
    assert.equal(
      renderPlan(plan),
      [
        'dry run: 1.1.0 to 12 device(s), canary 2 device(s), then all at once',
        '  gate ≤10% failed (from 10), bake 10m, on failure rollback',
        '  #0 canary  2  d01, d02',
        '  #1 batch  10  d03, d04, d05, d06, d07 … (+5)',
        '  already_on_version  1  already on 1.1.0: d20',
        '  newer_version       1  they run a version newer than 1.1.0: d21',
        '  incompatible        1  model not supported by the firmware: d40',
        '  busy                2  held by another open deployment or update: d30, d31',
        '  not_found           1  listed, but no such device: typo',
        '  offline             1  in the batches; dispatched when they come online: d05',
        'nothing was created',
      ].join('\n'),
    );
  });

  it('says so when no device would be updated', () => {
    const text = renderPlan({
      dry_run: true,
      version: '2.0.0',
      settings: settings({}),
      start_at: '2030-01-31T02:00:00.000Z',
      total: 0,
      batches: [],
      excluded: excludedSamples({ already_on_version: { count: 3, device_ids: ['a', 'b', 'c'] } }),
      offline: { count: 0, device_ids: [] },
      approval: { required: true, reason: 'it touches devices tagged prod' },
    });
    assert.match(text, /^ {2}starts at 2030-01-31T02:00:00.000Z$/m);
    assert.match(text, /^ {2}needs approval: it touches devices tagged prod$/m);
    assert.match(text, /^ {2}no batch: no device would be updated$/m);
    assert.match(text, /^ {2}already_on_version +3 {2}already on 2\.0\.0: a, b, c$/m);
    assert.doesNotMatch(text, /not_found|offline/);
  });
});

describe('describeTarget, describeRollback', () => {
  const targets: [DeploymentView['target'], string][] = [
    [{ all: true }, 'the whole fleet'],
    [{ device_ids_count: 120, tags: ['eu'] }, '120 devices listed · tags eu'],
    [{ device_ids_count: 1 }, '1 device listed'],
    [{ models: ['a', 'b', 'c', 'd', 'e', 'f'] }, 'models a, b, c, d, e … (+1)'],
  ];
  for (const [target, text] of targets) {
    it(`describes ${JSON.stringify(target)} as ${text}`, () => assert.equal(describeTarget(target), text));
  }

  const rollbacks: [Partial<RollbackCounts>, string, boolean][] = [
    [{ completed: 2, skipped: 1 }, '2 completed, 1 skipped of 3, done', false],
    [{ completed: 1, queued: 1, in_progress: 1 }, '1 completed, 2 under way of 3', true],
    [{ completed: 3, failed: 1, timed_out: 1 }, '3 completed, 1 failed, 1 timed out of 5, done', false],
    [{}, 'nothing to roll back yet', false],
  ];
  for (const [some, text, underWay] of rollbacks) {
    it(`reads a rollback as ${text}`, () => {
      assert.equal(describeRollback(rollbackCounts(some)), text);
      assert.equal(rollbackUnderWay(rollbackCounts(some)), underWay);
    });
  }
  it('knows a deployment without a rollback has none under way', () => assert.equal(rollbackUnderWay(null), false));
});

/** A canary of 12 devices under way: its canary passed, its rest is updating. */
const deployment = (some: Partial<DeploymentView>): DeploymentView => ({
  id: 'dep1',
  version: '1.1.0',
  status: 'running',
  controls: ['pause', 'cancel', 'rollback'],
  target: { tags: ['eu'] },
  ...settings({ strategy: 'canary', canary_count: 2, rest_strategy: 'all_at_once', bake_minutes: 0.5 }),
  start_at: null,
  total: 12,
  counts: counts({ completed: 2, in_progress: 5, pending: 5 }),
  waiting: emptyWaitingCounts(),
  bake_failed: 0,
  excluded: emptyExcludedCounts(),
  rollback: null,
  batches: [
    batch(0, 'canary', 2, 'passed', { completed: 2 }),
    batch(1, 'batch', 10, 'running', { in_progress: 5, pending: 5 }),
  ],
  created_at: '2030-01-01T00:00:00.000Z',
  started_at: '2030-01-01T00:00:00.000Z',
  ended_at: null,
  stop_reason: null,
  stop: null,
  created_by: null,
  approval: null,
  ...some,
});

const STOP_REASON =
  'batch 0 (canary): 2 failed of 4 with a verdict (50.0%, of 4 in the batch), more than the 10% allowed; ' +
  'on_failure rollback';

/** A canary of 4 that two devices failed in their bake: stopped and rolled back, the rest never touched. */
const rolledBack = deployment({
  status: 'rolled_back',
  controls: [],
  total: 14,
  counts: counts({ completed: 2, failed: 2, cancelled: 10 }),
  bake_failed: 2,
  excluded: { ...emptyExcludedCounts(), already_on_version: 2, busy: 1 },
  rollback: rollbackCounts({ completed: 2, skipped: 1, in_progress: 1 }),
  batches: [
    batch(0, 'canary', 4, 'failed', { completed: 2, failed: 2 }, { bake_failed: 2 }),
    batch(1, 'batch', 10, 'pending', { cancelled: 10 }),
  ],
  ended_at: '2030-01-01T00:05:00.000Z',
  stop_reason: STOP_REASON,
});

describe('renderDeployment', () => {
  it('draws the header, the target, the counts, the controls the server offers and one bar per batch', () => {
    const lines = renderDeployment(deployment({}), 70);
    assert.deepEqual(lines.slice(0, 5), [
      'deployment dep1: 1.1.0 to 12 device(s), canary 2 device(s), then all at once — running',
      '  target: tags eu',
      '  gate ≤10% failed (from 10), bake 30s, on failure pause',
      '  5 pending, 5 in progress, 2 completed',
      '  controls: pause, cancel, rollback',
    ]);
    assert.deepEqual(lines.slice(5), [
      `  #0 canary passed  [${'#'.repeat(16)}]  2/2`,
      `  #1 batch  running [${'>'.repeat(8)}${'.'.repeat(8)}]  0/10`,
    ]);
  });

  it('shows a rolled-back canary as failed: bake failures among the failed, the rollback, the stop reason', () => {
    const lines = renderDeployment(rolledBack, 100);
    assert.deepEqual(lines, [
      'deployment dep1: 1.1.0 to 14 device(s), canary 2 device(s), then all at once — rolled_back',
      '  target: tags eu',
      '  gate ≤10% failed (from 10), bake 30s, on failure pause',
      '  2 completed, 2 failed (2 in the bake), 10 cancelled',
      '  rollback: 2 completed, 1 skipped, 1 under way of 4',
      '  left out: 2 already_on_version, 1 busy',
      `  stopped: ${STOP_REASON}`,
      '  controls: none',
      `  #0 canary failed  [${'#'.repeat(20)}${'x'.repeat(20)}]  4/4   2 failed (2 in the bake)`,
      `  #1 batch  pending [${'-'.repeat(40)}] 10/10`,
    ]);
  });

  it('keeps a promoted failed batch failed, and offers only what the server answers', () => {
    const lines = renderDeployment(
      deployment({
        status: 'completed',
        controls: ['rollback'],
        batches: [batch(0, 'canary', 2, 'failed', { completed: 1, failed: 1 }, { promoted: true })],
      }),
    );
    assert.ok(lines.includes('  controls: rollback'));
    assert.match(lines.at(-1)!, /^ {2}#0 canary failed {2}\[#+x+\] 2\/2 {2}1 failed, promoted$/);
  });
});

describe('describeOta, summarizeOtaRecord', () => {
  const row = (kind: string, status: string, target: string, errorCode: string | null = null) => ({
    kind,
    status,
    target_version: target,
    error_code: errorCode,
  });
  const cases: [ReturnType<typeof row>, string][] = [
    [row('update', 'completed', '2.0.0'), 'completed to 2.0.0'],
    [row('update', 'in_progress', '2.0.0'), 'in progress to 2.0.0'],
    [row('rollback', 'failed', '1.0.0', 'download_failed'), 'failed rollback to 1.0.0'],
    // A device that fell back after committing 2.0.0: the row is the version it fell back to.
    [row('observed', 'completed', '1.0.0', 'reverted'), 'reverted to 1.0.0'],
    [row('observed', 'completed', '1.2.0', 'reflashed'), 'reflashed to 1.2.0'],
  ];
  for (const [facts, text] of cases) {
    it(`reads ${facts.kind} ${facts.status} ${facts.error_code ?? ''} as ${text}`, () =>
      assert.equal(describeOta(facts), text));
  }

  it('says a device that fell back reverted, never that it completed, and who holds a device', () => {
    const record = {
      ota_status: 'failed',
      current_version: '1.0.0',
      target_version: '1.0.0',
      update_kind: 'observed',
      update_status: 'completed',
      error: { code: 'reverted', message: 'the device fell back to 1.0.0 after committing 2.0.0' },
      held_by: null,
    };
    assert.equal(summarizeOtaRecord(record), 'reverted to 1.0.0');
    assert.equal(
      summarizeOtaRecord({
        ...record,
        ota_status: 'completed',
        current_version: '2.0.0',
        target_version: '2.0.0',
        update_kind: 'update',
        error: null,
        held_by: 'dep_9',
      }),
      'completed on 2.0.0; held by dep_9',
    );
  });
});

describe('changedLines', () => {
  const cases: [string, string[], string[], string[]][] = [
    ['everything the first time', [], ['a', 'b'], ['a', 'b']],
    ['nothing when nothing changed', ['a', 'b'], ['a', 'b'], []],
    ['only the changed batch line', ['h', 'b0', 'b1'], ['h', 'b0', 'b1*'], ['b1*']],
    ['a line that appeared', ['h'], ['h', 'stopped'], ['stopped']],
  ];
  for (const [name, previous, next, printed] of cases) {
    it(name, () => assert.deepEqual(changedLines(previous, next), printed));
  }
});

/** A stream that records what is written to it, as a terminal or as a log. */
function recorder(isTTY: boolean): Output & { text: () => string; writes: string[] } {
  const writes: string[] = [];
  return {
    isTTY,
    columns: 100,
    write: ((chunk: string) => {
      writes.push(chunk);
      return true;
    }) as Output['write'],
    writes,
    text: () => writes.join(''),
  };
}

const progressed = deployment({
  counts: counts({ completed: 7, pending: 5 }),
  batches: [
    batch(0, 'canary', 2, 'passed', { completed: 2 }),
    batch(1, 'batch', 10, 'running', { completed: 5, pending: 5 }),
  ],
});

describe('StatusDisplay', () => {
  it('on a terminal, redraws the block in place and only when it changed', () => {
    const out = recorder(true);
    const display = new StatusDisplay(out, false);
    display.show(deployment({}));
    assert.equal(out.writes.length, 1);
    assert.ok(out.writes[0]!.startsWith('\u001b[J'), 'the first drawing moves no cursor');
    display.show(deployment({}));
    assert.equal(out.writes.length, 1, 'the same state is not drawn again');
    display.show(progressed);
    assert.equal(out.writes.length, 2);
    assert.ok(out.writes[1]!.startsWith('\u001b[7F\u001b[J'), 'back up over the seven lines drawn, then clear');
    assert.ok(out.writes[1]!.endsWith(`${renderDeployment(progressed).join('\n')}\n`));
  });

  it('in a log, prints only the changed lines, each with the time', () => {
    const out = recorder(false);
    const display = new StatusDisplay(out, false);
    display.show(deployment({}));
    assert.equal(out.text().split('\n').filter(Boolean).length, 7);
    out.writes.length = 0;
    display.show(deployment({}));
    assert.equal(out.text(), '', 'nothing changed, nothing printed');
    display.show(progressed);
    const printed = out.text().trimEnd().split('\n');
    assert.equal(printed.length, 2, 'the counts line and the rest batch line');
    assert.match(printed[0]!, /^\d\d:\d\d:\d\d {3}5 pending, 7 completed$/);
    assert.match(printed[1]!, /^\d\d:\d\d:\d\d {3}#1 batch {2}running \[#+\.+\] {2}5\/10$/);
    assert.ok(!out.text().includes('\u001b['));
  });

  it('with --json, prints the deployment as one JSON line per change', () => {
    const out = recorder(true);
    const display = new StatusDisplay(out, true);
    display.show(deployment({}));
    display.show(deployment({}));
    display.show(progressed);
    assert.deepEqual(
      out.writes.map((line) => (JSON.parse(line) as DeploymentView).counts.completed),
      [2, 7],
    );
  });
});

describe('followDeployment', () => {
  type Event = { event: string; data: Record<string, unknown> };
  /** An API whose reads answer `states` in turn and whose event stream the test feeds. */
  function fakeApi(states: DeploymentView[]) {
    const queue: Event[] = [];
    let wake: (() => void) | undefined;
    let reads = 0;
    const api = {
      call: async <T>(method: string, urlPath: string): Promise<T> => {
        assert.equal(`${method} ${urlPath}`, 'GET /api/v1/deployments/dep1');
        return states[Math.min(reads++, states.length - 1)] as T;
      },
      async *events(signal: AbortSignal, onOpen?: () => void): AsyncGenerator<Event> {
        onOpen?.();
        while (!signal.aborted) {
          const next = queue.shift();
          if (next) yield next;
          else
            await new Promise<void>((resolve) => {
              wake = resolve;
              signal.addEventListener('abort', () => resolve(), { once: true });
            });
        }
      },
    };
    const push = (...events: Event[]) => {
      queue.push(...events);
      wake?.();
    };
    return { api: api as unknown as Parameters<typeof followDeployment>[0], push, reads: () => reads };
  }
  const ota = (deploymentId: string | null): Event => ({
    event: 'ota',
    data: { device_id: 'd1', deployment_id: deploymentId },
  });

  it('re-reads once per burst of events about its deployment, ignores the others, and ends when completed', async () => {
    const running = deployment({});
    const { api, push, reads } = fakeApi([running, running, deployment({ status: 'completed' })]);
    const out = recorder(false);
    const following = followDeployment(api, 'dep1', { out });
    await eventually(async () => reads() === 1, 2000, 'the first read');
    push(...Array.from({ length: 30 }, () => ota('dep1')), {
      event: 'ota_bulk',
      data: { deployment_id: 'dep1', status: 'queued', previous_status: null, count: 500 },
    });
    await sleep(500);
    assert.equal(reads(), 2, 'thirty-one events, one read');
    push(ota('other'), ota(null), { event: 'device', data: { device_id: 'd1', online: false } });
    await sleep(400);
    assert.equal(reads(), 2, 'events of other deployments and devices read nothing');
    push({ event: 'deployment', data: { deployment_id: 'dep1' } });
    await following;
    assert.equal(reads(), 3);
    assert.match(out.text(), /— completed$/m);
  });

  it('reads again while the server is unreachable (a restart), but not after an API error', async () => {
    const answers: (DeploymentView | Error)[] = [
      new CliError('cannot connect to http://127.0.0.1:1: connection refused'),
      deployment({ status: 'completed' }),
    ];
    let reads = 0;
    const api = {
      call: async <T>() => {
        const answer = answers[reads++]!;
        if (answer instanceof Error) throw answer;
        return answer as T;
      },
      events: fakeApi([]).api.events,
    };
    await followDeployment(api, 'dep1', { out: recorder(false) });
    assert.equal(reads, 2);

    const missing = new ApiError(404, 'deployment_not_found', 'no deployment dep1');
    answers.splice(0, answers.length, missing, deployment({ status: 'completed' }));
    reads = 0;
    await assert.rejects(followDeployment(api, 'dep1', { out: recorder(false) }), missing);
    assert.equal(reads, 1);
  });

  it('ends with a one-line error (exit 1) when the deployment ends other than completed, with its rollback', async () => {
    const { api } = fakeApi([rolledBack]);
    await assert.rejects(followDeployment(api, 'dep1', { out: recorder(false) }), (error: unknown) => {
      assert.ok(error instanceof CliError);
      assert.equal(error.exitCode, 1);
      assert.equal(
        error.message,
        `deployment dep1 ended rolled_back: ${STOP_REASON}; rollback: 2 completed, 1 skipped, 1 under way of 4`,
      );
      return true;
    });
  });

  it('follows a scheduled or paused deployment, which has not ended', async () => {
    const { api, push, reads } = fakeApi([
      deployment({ status: 'scheduled' }),
      deployment({ status: 'paused' }),
      deployment({ status: 'cancelled', controls: [] }),
    ]);
    const following = followDeployment(api, 'dep1', { out: recorder(false) });
    for (const expected of [1, 2]) {
      await eventually(async () => reads() === expected, 2000, `read ${expected}`);
      push({ event: 'deployment', data: { deployment_id: 'dep1' } });
    }
    await assert.rejects(following, /ended cancelled$/);
  });
});
