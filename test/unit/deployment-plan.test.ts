/** The fleet-deployment request rules and the pure planner: batches from a target list, who is left out and why. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Compile } from 'typebox/compile';
import {
  type BatchSettings,
  batchSizes,
  canarySizeOf,
  classifyTarget,
  classifyTargets,
  describePlan,
  planBatches,
  type TargetCandidate,
  type TargetClass,
} from '../../src/server/deployments/plan.ts';
import {
  type CreateDeploymentBody,
  CreateDeploymentBody as CreateDeploymentBodySchema,
  checkDeploymentRequest,
  DEPLOYMENT_DEFAULTS,
  deploymentSettingsOf,
  PLAN_SAMPLE_IDS,
} from '../../src/server/deployments/schemas.ts';
import { BadRequestError } from '../../src/server/infra/errors.ts';
import { DEVICE_STATES } from '../../src/server/model/deployment.ts';
import { DeviceCounts } from '../../src/server/model/deployment-schemas.ts';

const settings = (overrides: Partial<BatchSettings>): BatchSettings => ({
  strategy: 'all_at_once',
  batch_size: null,
  canary_percent: null,
  canary_count: null,
  rest_strategy: null,
  ...overrides,
});
const sizesOf = (total: number, overrides: Partial<BatchSettings>) =>
  batchSizes(total, settings(overrides)).map(({ kind, size }) => (kind === 'canary' ? `c${size}` : size));

describe('batch sizes', () => {
  const cases: [string, number, Partial<BatchSettings>, (number | string)[]][] = [
    ['no devices: no batch, whatever the strategy', 0, { strategy: 'canary', canary_percent: 10 }, []],
    ['no devices, rolling: no batch', 0, { strategy: 'rolling', batch_size: 5 }, []],
    ['all at once: one batch of everything', 7, { strategy: 'all_at_once' }, [7]],
    ['rolling by count: the last batch smaller', 7, { strategy: 'rolling', batch_size: 3 }, [3, 3, 1]],
    ['rolling by count larger than the fleet: one batch', 2, { strategy: 'rolling', batch_size: 10 }, [2]],
    ['rolling 10% of 25 rounds up to 3', 25, { strategy: 'rolling', batch_size: '10%' }, [3, 3, 3, 3, 3, 3, 3, 3, 1]],
    ['rolling 10% of 3 is still one device per batch', 3, { strategy: 'rolling', batch_size: '10%' }, [1, 1, 1]],
    ['rolling 50% of 10: two halves', 10, { strategy: 'rolling', batch_size: '50%' }, [5, 5]],
    ['rolling 100%: one batch', 4, { strategy: 'rolling', batch_size: '100%' }, [4]],
    [
      'canary 5% of 100, then the rest at once',
      100,
      { strategy: 'canary', canary_percent: 5, rest_strategy: 'all_at_once' },
      ['c5', 95],
    ],
    [
      'canary 5% of 30 rounds up to 2',
      30,
      { strategy: 'canary', canary_percent: 5, rest_strategy: 'all_at_once' },
      ['c2', 28],
    ],
    ['canary 1% of 10 is at least one device', 10, { strategy: 'canary', canary_percent: 1 }, ['c1', 9]],
    [
      'canary 33.3% of 1000 is 333, not 334 (float noise)',
      1000,
      { strategy: 'canary', canary_percent: 33.3 },
      ['c333', 667],
    ],
    ['canary 100% of 5 leaves one device for the rest', 5, { strategy: 'canary', canary_percent: 100 }, ['c4', 1]],
    ['canary 50% of 2: one and one', 2, { strategy: 'canary', canary_percent: 50 }, ['c1', 1]],
    ['canary of a single device: the canary is the fleet', 1, { strategy: 'canary', canary_percent: 5 }, ['c1']],
    ['canary count', 10, { strategy: 'canary', canary_count: 3 }, ['c3', 7]],
    ['canary count of the whole fleet still leaves one', 3, { strategy: 'canary', canary_count: 3 }, ['c2', 1]],
    [
      'canary with rest_strategy rolling by count',
      10,
      { strategy: 'canary', canary_count: 1, rest_strategy: 'rolling', batch_size: 4 },
      ['c1', 4, 4, 1],
    ],
    [
      'canary with rest_strategy rolling by percent: of the whole list, not of the rest',
      100,
      { strategy: 'canary', canary_percent: 10, rest_strategy: 'rolling', batch_size: '30%' },
      ['c10', 30, 30, 30],
    ],
  ];
  for (const [name, total, overrides, expected] of cases) {
    it(name, () => assert.deepEqual(sizesOf(total, overrides), expected));
  }

  it('adds up to the target list for every strategy and size', () => {
    const strategies: Partial<BatchSettings>[] = [
      { strategy: 'all_at_once' },
      { strategy: 'rolling', batch_size: 7 },
      { strategy: 'rolling', batch_size: '15%' },
      { strategy: 'canary', canary_percent: 2.5, rest_strategy: 'rolling', batch_size: '20%' },
      { strategy: 'canary', canary_count: 4, rest_strategy: 'all_at_once' },
    ];
    for (const overrides of strategies) {
      for (let total = 0; total <= 60; total++) {
        const sizes = batchSizes(total, settings(overrides)).map((batch) => batch.size);
        assert.equal(
          sizes.reduce((sum, size) => sum + size, 0),
          total,
          `${JSON.stringify(overrides)} × ${total}`,
        );
        assert.ok(
          sizes.every((size) => size >= 1),
          `no empty batch: ${JSON.stringify(overrides)} × ${total}`,
        );
      }
    }
  });

  it('never makes the canary the whole fleet once there are two devices', () => {
    for (let total = 2; total <= 50; total++) {
      for (const percent of [1, 50, 99, 100]) {
        assert.ok(canarySizeOf(settings({ strategy: 'canary', canary_percent: percent }), total) < total);
      }
    }
  });
});

describe('planning batches from a target list', () => {
  const ids = (count: number) => Array.from({ length: count }, (_, index) => `dev-${String(index).padStart(2, '0')}`);

  it('keeps the order given, so the operator can name the canary first', () => {
    const batches = planBatches(['b', 'a', 'c', 'd'], settings({ strategy: 'canary', canary_count: 1 }));
    assert.deepEqual(batches, [
      { index: 0, kind: 'canary', deviceIds: ['b'] },
      { index: 1, kind: 'batch', deviceIds: ['a', 'c', 'd'] },
    ]);
  });

  it('puts every device in exactly one batch, in order', () => {
    const devices = ids(23);
    const batches = planBatches(devices, settings({ strategy: 'rolling', batch_size: 5 }));
    assert.deepEqual(
      batches.map((batch) => batch.index),
      [0, 1, 2, 3, 4],
    );
    assert.deepEqual(
      batches.flatMap((batch) => batch.deviceIds),
      devices,
    );
  });

  it('counts a device listed twice once', () => {
    const batches = planBatches(['a', 'b', 'a'], settings({ strategy: 'all_at_once' }));
    assert.deepEqual(batches, [{ index: 0, kind: 'batch', deviceIds: ['a', 'b'] }]);
  });

  it('plans nothing for no device', () => {
    assert.deepEqual(planBatches([], settings({ strategy: 'canary', canary_percent: 10 })), []);
  });
});

describe('classifying the targeted devices', () => {
  const device = (overrides: Partial<TargetCandidate>): TargetCandidate => ({
    device_id: 'd1',
    model: 'rpi4',
    current_version: '1.0.0',
    online: true,
    held_by: null,
    ...overrides,
  });
  const rules = { version: '1.1.0', compatibleModels: ['rpi4'], force: false };
  const cases: [string, Partial<TargetCandidate>, Partial<typeof rules>, TargetClass][] = [
    ['an older version: eligible', {}, {}, 'eligible'],
    ['offline: still eligible (dispatched when it comes online)', { online: false }, {}, 'eligible'],
    ['already on the version: already_on_version', { current_version: '1.1.0' }, {}, 'already_on_version'],
    ['already on the version with force: eligible', { current_version: '1.1.0' }, { force: true }, 'eligible'],
    ['a newer version: newer_version (no silent downgrade)', { current_version: '2.0.0' }, {}, 'newer_version'],
    ['a newer version even with force: newer_version', { current_version: '2.0.0' }, { force: true }, 'newer_version'],
    ['another model: incompatible', { model: 'x86' }, {}, 'incompatible'],
    ['no model, firmware for some models: incompatible', { model: null }, {}, 'incompatible'],
    ['no model, firmware for every model: eligible', { model: null }, { compatibleModels: [] }, 'eligible'],
    ['held by another deployment: busy', { held_by: 'dep_1' }, {}, 'busy'],
    [
      'busy and already on the version: already_on_version, nothing to wait for',
      { held_by: 'dep_1', current_version: '1.1.0' },
      {},
      'already_on_version',
    ],
    ['busy and incompatible: incompatible, it never could', { held_by: 'upd_1', model: 'x86' }, {}, 'incompatible'],
  ];
  for (const [name, overrides, ruleOverrides, expected] of cases) {
    it(name, () => assert.equal(classifyTarget(device(overrides), { ...rules, ...ruleOverrides }), expected));
  }

  it('lists each device once by class, the offline eligible ones also as offline', () => {
    const result = classifyTargets(
      [
        device({ device_id: 'a' }),
        device({ device_id: 'b', online: false }),
        device({ device_id: 'c', current_version: '1.1.0' }),
        device({ device_id: 'd', model: 'x86', online: false }),
        device({ device_id: 'e', held_by: 'dep_1', online: false }),
        device({ device_id: 'f', current_version: '3.0.0' }),
      ],
      rules,
    );
    assert.deepEqual(result, {
      eligible: ['a', 'b'],
      excluded: {
        already_on_version: ['c'],
        newer_version: ['f'],
        incompatible: ['d'],
        busy: ['e'],
        version_changed: [],
        offline_timeout: [],
      },
      offline: ['b'],
    });
  });
});

describe('the dry-run plan', () => {
  it('batches the eligible devices and counts the others, listing the first ids', () => {
    const candidates: TargetCandidate[] = Array.from({ length: 60 }, (_, index) => ({
      device_id: `dev-${String(index).padStart(3, '0')}`,
      model: index % 10 === 9 ? 'x86' : 'rpi4',
      current_version: index < 5 ? '1.1.0' : '1.0.0',
      online: index % 2 === 0,
      held_by: index === 10 ? 'dep_other' : null,
    }));
    const body: CreateDeploymentBody = {
      version: '1.1.0',
      target: { all: true },
      strategy: 'canary',
      canary_count: 2,
    };
    const plan = describePlan(
      candidates,
      { version: '1.1.0', compatibleModels: ['rpi4'], force: false },
      deploymentSettingsOf(body),
      null,
      null,
    );
    // 60 − 6 incompatible (9, 19, …, 59) − 5 skipped (0–4) − 1 busy (10) = 48.
    assert.equal(plan.total, 48);
    assert.deepEqual(
      plan.batches.map((batch) => [batch.kind, batch.size]),
      [
        ['canary', 2],
        ['batch', 46],
      ],
    );
    assert.deepEqual(plan.batches[0]?.device_ids, ['dev-005', 'dev-006']);
    assert.equal(plan.batches[1]?.device_ids.length, PLAN_SAMPLE_IDS);
    assert.equal(plan.excluded.already_on_version.count, 5);
    assert.equal(plan.excluded.incompatible.count, 6);
    assert.deepEqual(plan.excluded.busy, { count: 1, device_ids: ['dev-010'] });
    assert.equal(plan.not_found, undefined);
    // The odd indexes are offline: 28 from 5 to 59, less the 6 incompatible ones.
    assert.equal(plan.offline.count, 22);
    assert.ok(plan.offline.device_ids.every((id) => Number(id.slice(4)) % 2 === 1));
  });
});

describe('the deployment request', () => {
  const validator = Compile(CreateDeploymentBodySchema);
  const base = { version: '1.1.0', target: { tags: ['lab'] }, strategy: 'all_at_once' };

  const schemaCases: [string, Record<string, unknown>, boolean][] = [
    ['the smallest request', {}, true],
    ['batch_size as a count', { strategy: 'rolling', batch_size: 5 }, true],
    ['batch_size as "10%"', { strategy: 'rolling', batch_size: '10%' }, true],
    ['batch_size "100%"', { strategy: 'rolling', batch_size: '100%' }, true],
    ['batch_size "0%"', { strategy: 'rolling', batch_size: '0%' }, false],
    ['batch_size "101%"', { strategy: 'rolling', batch_size: '101%' }, false],
    ['batch_size "5.5%"', { strategy: 'rolling', batch_size: '5.5%' }, false],
    ['batch_size 0', { strategy: 'rolling', batch_size: 0 }, false],
    ['batch_size 2.5', { strategy: 'rolling', batch_size: 2.5 }, false],
    ['canary_percent 0', { strategy: 'canary', canary_percent: 0 }, false],
    ['canary_percent 0.5', { strategy: 'canary', canary_percent: 0.5 }, true],
    ['canary_percent 100', { strategy: 'canary', canary_percent: 100 }, true],
    ['canary_percent 101', { strategy: 'canary', canary_percent: 101 }, false],
    ['canary_count 0', { strategy: 'canary', canary_count: 0 }, false],
    ['an unknown strategy', { strategy: 'big_bang' }, false],
    ['failure_threshold_percent 0 and 100', { failure_threshold_percent: 0, min_sample: 1 }, true],
    ['failure_threshold_percent above 100', { failure_threshold_percent: 100.5 }, false],
    ['min_sample 0', { min_sample: 0 }, false],
    ['a fractional bake (tests bake for seconds)', { bake_minutes: 0.05 }, true],
    ['a negative bake', { bake_minutes: -1 }, false],
    ['max_retries 10', { max_retries: 10 }, true],
    ['max_retries 11', { max_retries: 11 }, false],
    ['max_per_minute 0', { max_per_minute: 0 }, false],
    ['device_timeout_minutes 0', { device_timeout_minutes: 0 }, false],
    ['on_failure rollback', { on_failure: 'rollback' }, true],
    ['on_failure retry', { on_failure: 'retry' }, false],
    ['start_at as RFC 3339', { start_at: '2030-01-31T02:00:00Z' }, true],
    ['start_at as words', { start_at: 'tomorrow' }, false],
    ['a version that is not semver', { version: 'v1.1' }, false],
    ['an unknown field', { canary: true }, false],
    ['an empty target', { target: {} }, false],
    ['target all: false', { target: { all: false } }, false],
    ['an unknown target selector', { target: { group: 'x' } }, false],
    ['target tags listed twice', { target: { tags: ['a', 'a'] } }, false],
    ['target device ids that are not ids', { target: { device_ids: ['../etc'] } }, false],
    ['target models and current versions', { target: { models: ['rpi4'], current_versions: ['1.0.0'] } }, true],
  ];
  for (const [name, overrides, valid] of schemaCases) {
    it(`schema: ${name} is ${valid ? 'accepted' : 'refused'}`, () => {
      assert.equal(validator.Check({ ...base, ...overrides }), valid);
    });
  }

  const ruleCases: [string, Record<string, unknown>, string | null][] = [
    ['all_at_once alone', {}, null],
    ['all_at_once with batch_size', { batch_size: 5 }, 'invalid_strategy'],
    ['all_at_once with canary_percent', { canary_percent: 5 }, 'invalid_strategy'],
    ['rolling with batch_size', { strategy: 'rolling', batch_size: '10%' }, null],
    ['rolling without batch_size', { strategy: 'rolling' }, 'invalid_strategy'],
    [
      'rolling with rest_strategy',
      { strategy: 'rolling', batch_size: 2, rest_strategy: 'rolling' },
      'invalid_strategy',
    ],
    ['canary with canary_percent', { strategy: 'canary', canary_percent: 5 }, null],
    ['canary with canary_count', { strategy: 'canary', canary_count: 2 }, null],
    ['canary with neither', { strategy: 'canary' }, 'invalid_strategy'],
    ['canary with both', { strategy: 'canary', canary_percent: 5, canary_count: 2 }, 'invalid_strategy'],
    [
      'canary with rest_strategy rolling with batch_size',
      { strategy: 'canary', canary_count: 1, rest_strategy: 'rolling', batch_size: 5 },
      null,
    ],
    [
      'canary with rest_strategy rolling without batch_size',
      { strategy: 'canary', canary_count: 1, rest_strategy: 'rolling' },
      'invalid_strategy',
    ],
    [
      'canary with batch_size but no rest_strategy',
      { strategy: 'canary', canary_count: 1, batch_size: 5 },
      'invalid_strategy',
    ],
    [
      'canary with rest_strategy all_at_once with batch_size',
      { strategy: 'canary', canary_count: 1, rest_strategy: 'all_at_once', batch_size: 5 },
      'invalid_strategy',
    ],
    ['target all alone', { target: { all: true } }, null],
    ['target tags and models together', { target: { tags: ['lab'], models: ['rpi4'] } }, null],
    ['target all with tags', { target: { all: true, tags: ['lab'] } }, 'invalid_target'],
    ['target device ids listed twice', { target: { device_ids: ['a', 'b', 'a'] } }, 'invalid_target'],
  ];
  for (const [name, overrides, code] of ruleCases) {
    it(`rules: ${name} ${code ? `is ${code}` : 'is accepted'}`, () => {
      const body = { ...base, ...overrides } as CreateDeploymentBody;
      assert.ok(validator.Check(body), 'the schema accepts it: the rule is the one being tested');
      if (code === null) return assert.doesNotThrow(() => checkDeploymentRequest(body));
      assert.throws(
        () => checkDeploymentRequest(body),
        (error: unknown) => error instanceof BadRequestError && error.code === code && error.statusCode === 400,
      );
    });
  }

  it('fills in the documented defaults once', () => {
    const settings = deploymentSettingsOf({
      version: '1.1.0',
      target: { all: true },
      strategy: 'canary',
      canary_percent: 5,
    });
    assert.deepEqual(settings, {
      strategy: 'canary',
      batch_size: null,
      canary_percent: 5,
      canary_count: null,
      rest_strategy: 'all_at_once',
      failure_threshold_percent: DEPLOYMENT_DEFAULTS.failure_threshold_percent,
      min_sample: DEPLOYMENT_DEFAULTS.min_sample,
      bake_minutes: 0,
      on_failure: 'pause',
      max_per_minute: null,
      device_timeout_minutes: null,
      max_retries: 0,
      dynamic: false,
      force: false,
      force_after: null,

      maintenance_windows: null,
      max_concurrent_downloads: null,
      max_bytes_per_second: null,
    });
    assert.equal(
      deploymentSettingsOf({ ...base, strategy: 'all_at_once' } as CreateDeploymentBody).rest_strategy,
      null,
    );
  });

  it('counts every device status, pending included', () => {
    assert.deepEqual(Object.keys((DeviceCounts as unknown as { properties: object }).properties), [...DEVICE_STATES]);
  });
});
