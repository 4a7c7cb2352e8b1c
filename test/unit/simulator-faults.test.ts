/**
 * The simulator's fault planning and the pieces that make a simulated device fail: which device
 * gets which fault (exact shares, repeatable), which update a fault strikes, and how the sink,
 * installer, step hook and health verdict misbehave. The end-to-end outcomes against a real
 * server are in test/integration/simulator-faults.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  defaultFaultTuning,
  FAULTS,
  type Fault,
  type FaultPercentages,
  faultApplies,
  faultStepHook,
  planFaults,
  SimulatedInstaller,
  SimulatedSink,
  simulatedHealth,
  validateFaultPercentages,
} from '../../src/simulator/faults.ts';

const countOf = (plan: (Fault | null)[], fault: Fault | null) => plan.filter((f) => f === fault).length;

describe('fault plan', () => {
  const cases: { name: string; count: number; shares: FaultPercentages; expected: Partial<Record<Fault, number>> }[] = [
    {
      name: 'each new fault its exact share',
      count: 50,
      shares: { downloadError: 10, healthCheckFailure: 20, bakeOffline: 4, bakeRevert: 6 },
      expected: { downloadError: 5, healthCheckFailure: 10, bakeOffline: 2, bakeRevert: 3 },
    },
    {
      name: 'old and new faults together',
      count: 200,
      shares: { offline: 5, corrupt: 5, installFailure: 5, bootFailure: 5, downloadError: 5, bakeRevert: 5 },
      expected: { offline: 10, corrupt: 10, installFailure: 10, bootFailure: 10, downloadError: 10, bakeRevert: 10 },
    },
    {
      name: 'shares rounded to whole devices',
      count: 7,
      shares: { bakeOffline: 50, healthCheckFailure: 10 },
      expected: { bakeOffline: 4, healthCheckFailure: 1 },
    },
    {
      name: 'a whole fleet failing one way',
      count: 12,
      shares: { bakeRevert: 100 },
      expected: { bakeRevert: 12 },
    },
    { name: 'no fault at all', count: 9, shares: {}, expected: {} },
  ];
  for (const { name, count, shares, expected } of cases) {
    it(`gives ${name}, and the rest of the fleet none`, () => {
      const plan = planFaults(count, shares, 11);
      assert.equal(plan.length, count);
      let faulty = 0;
      for (const fault of FAULTS) {
        assert.equal(countOf(plan, fault), expected[fault] ?? 0, fault);
        faulty += expected[fault] ?? 0;
      }
      assert.equal(countOf(plan, null), count - faulty);
    });
  }

  it('is the same for the same seed and differs for another', () => {
    const shares = { downloadError: 20, healthCheckFailure: 20, bakeOffline: 20, bakeRevert: 20 };
    assert.deepEqual(planFaults(100, shares, 5), planFaults(100, shares, 5));
    assert.notDeepEqual(planFaults(100, shares, 6), planFaults(100, shares, 5));
  });

  it('leaves the devices of the older faults where they were when a new fault gets a share', () => {
    const before = planFaults(100, { corrupt: 10, bootFailure: 10, offline: 5 }, 9);
    const after = planFaults(100, { corrupt: 10, bootFailure: 10, offline: 5, bakeRevert: 10, downloadError: 10 }, 9);
    for (const fault of ['corrupt', 'bootFailure', 'offline'] as const) {
      const devicesOf = (plan: (Fault | null)[]) => plan.flatMap((f, index) => (f === fault ? [index] : []));
      assert.deepEqual(devicesOf(after), devicesOf(before), fault);
    }
  });
});

describe('fault shares', () => {
  const refused: { shares: FaultPercentages; why: RegExp }[] = [
    { shares: { bakeRevert: -1 }, why: /bakeRevert share must be a percentage/ },
    { shares: { downloadError: 101 }, why: /downloadError share/ },
    { shares: { healthCheckFailure: Number.NaN }, why: /healthCheckFailure share/ },
    { shares: { bakeOffline: 60, bakeRevert: 50 }, why: /add up to 110/ },
  ];
  for (const { shares, why } of refused) {
    it(`refuses ${JSON.stringify(shares)}`, () => {
      assert.throws(() => validateFaultPercentages(shares), why);
      assert.throws(() => planFaults(10, shares, 1), why);
    });
  }

  it('accepts shares that add up to exactly 100', () => {
    assert.doesNotThrow(() => validateFaultPercentages({ bakeOffline: 50, bakeRevert: 25, downloadError: 25 }));
  });
});

describe('which update a fault strikes', () => {
  const cases: { faultVersion: string | undefined; target: string | undefined; strikes: boolean }[] = [
    { faultVersion: undefined, target: '2.0.0', strikes: true },
    { faultVersion: undefined, target: '1.0.0', strikes: true },
    { faultVersion: '2.0.0', target: '2.0.0', strikes: true },
    { faultVersion: '2.0.0', target: '1.0.0', strikes: false },
    { faultVersion: '2.0.0', target: '2.0.1', strikes: false },
    { faultVersion: undefined, target: undefined, strikes: false },
    { faultVersion: '2.0.0', target: undefined, strikes: false },
  ];
  for (const { faultVersion, target, strikes } of cases) {
    it(`fault version ${faultVersion ?? 'unset'}, update to ${target ?? 'none'}: ${strikes ? 'strikes' : 'passes'}`, () => {
      assert.equal(faultApplies(faultVersion, target), strikes);
    });
  }
});

describe('simulated sink', () => {
  const chunk = () => Uint8Array.from([1, 2, 3, 4]);

  it('refuses every byte of an unreachable download, so the downloader sees no progress', async () => {
    const sink = new SimulatedSink('unreachable');
    await assert.rejects(sink.append(chunk()), /simulated download error/);
    await assert.rejects(sink.append(chunk()), /simulated download error/);
    assert.equal(await sink.offset(), 0);
    assert.equal(sink.received, 0);
  });

  it('flips one byte of a corrupt download and keeps the rest', async () => {
    const [clean, corrupt] = [new SimulatedSink(null), new SimulatedSink('corrupt')];
    for (const sink of [clean, corrupt]) {
      await sink.append(chunk());
      await sink.append(chunk());
    }
    assert.equal(await corrupt.offset(), 8);
    assert.notEqual(await corrupt.sha256(), await clean.sha256());
    assert.equal(corrupt.received, 8);
  });
});

describe('simulated installer', () => {
  const image = (version: string) => ({ version, sha256: 'a'.repeat(64), filePath: undefined });
  const onlyTo = (faulty: string) => (version: string) => version === faulty;

  it('fails the install of a struck version only', async () => {
    const installer = new SimulatedInstaller('1.0.0', 'installFailure', onlyTo('2.0.0'));
    await assert.rejects(installer.install(image('2.0.0')), /simulated install failure/);
    await installer.install(image('1.1.0'));
    assert.deepEqual(await installer.boot(), { kind: 'trial', version: '1.1.0', previousVersion: '1.0.0' });
  });

  it('falls back from a struck version at boot, and boots another one on trial', async () => {
    const installer = new SimulatedInstaller('1.0.0', 'bootFailure', onlyTo('2.0.0'));
    await installer.install(image('2.0.0'));
    assert.deepEqual(await installer.boot(), { kind: 'reverted', version: '1.0.0', abandonedVersion: '2.0.0' });
    await installer.install(image('1.1.0'));
    assert.equal((await installer.boot()).kind, 'trial');
  });

  it('falls back to the version committed before the latest one after a crash, once', async () => {
    const installer = new SimulatedInstaller('1.0.0', 'bakeRevert', onlyTo('2.0.0'));
    assert.equal(installer.fallBackToPrevious(), false, 'nothing committed before the factory version');
    await installer.install(image('2.0.0'));
    await installer.boot();
    await installer.commit();
    assert.equal(installer.currentVersion(), '2.0.0');
    assert.equal(installer.fallBackToPrevious(), true);
    assert.deepEqual(await installer.boot(), { kind: 'normal', version: '1.0.0' });
    assert.equal(installer.fallBackToPrevious(), false);
  });
});

describe('simulated step hook', () => {
  it('drops a download only while the fault strikes the update under way', async () => {
    let strikes = false;
    const hook = faultStepHook('downloadDrop', { ...defaultFaultTuning, dropAfterChunks: 1 }, () => strikes)!;
    await hook('download:chunk');
    strikes = true;
    assert.throws(() => hook('download:chunk'), /simulated connection drop/);
    await hook('download:chunk');
  });

  it('has nothing to do for faults that strike elsewhere', () => {
    for (const fault of ['downloadError', 'healthCheckFailure', 'bakeOffline', 'bakeRevert', null] as const) {
      assert.equal(
        faultStepHook(fault, defaultFaultTuning, () => true),
        undefined,
        String(fault),
      );
    }
  });
});

describe('simulated health', () => {
  const cases: { name: string; state: Parameters<typeof simulatedHealth>[0]; healthy: boolean; message: RegExp }[] = [
    {
      name: 'a device that never crashed',
      state: { crashedFrom: undefined, trialFails: false },
      healthy: true,
      message: /ok/,
    },
    {
      name: 'the trial of a version the fault strikes',
      state: { crashedFrom: undefined, trialFails: true },
      healthy: false,
      message: /health check failure/,
    },
    {
      name: 'a device a bake fault crashed, whatever runs now',
      state: { crashedFrom: '2.0.0', trialFails: false },
      healthy: false,
      message: /2\.0\.0 crashed during its bake/,
    },
  ];
  for (const { name, state, healthy, message } of cases) {
    it(`is ${healthy ? 'healthy' : 'unhealthy'} for ${name}`, () => {
      const verdict = simulatedHealth(state);
      assert.equal(verdict.healthy, healthy);
      assert.match(verdict.message, message);
    });
  }
});
