import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  type BootObservation,
  canTransition,
  isCancellable,
  overallProgress,
  type PlanInput,
  planNextStep,
} from '../../src/agent/ota-state-machine.ts';
import type { OtaPhase } from '../../src/protocol/tunnel.ts';

describe('OTA phase transitions', () => {
  const cases: Array<[OtaPhase, OtaPhase, boolean]> = [
    ['queued', 'downloading', true],
    ['queued', 'completed', true],
    ['downloading', 'verifying', true],
    ['downloading', 'installing', false],
    ['verifying', 'installing', true],
    ['installing', 'rebooting', true],
    ['rebooting', 'health_checking', true],
    ['health_checking', 'committing', true],
    ['health_checking', 'reverting', true],
    ['committing', 'completed', true],
    ['reverting', 'failed', true],
    ['reverting', 'completed', false],
    ['completed', 'downloading', false],
    ['failed', 'queued', false],
  ];
  for (const [from, to, allowed] of cases) {
    it(`${from} → ${to} is ${allowed ? 'allowed' : 'refused'}`, () => {
      assert.equal(canTransition(from, to), allowed);
    });
  }

  it('only lets an update be cancelled before anything on the device is touched', () => {
    const cancellable = (
      ['queued', 'downloading', 'verifying', 'installing', 'rebooting', 'health_checking', 'committing'] as const
    ).filter(isCancellable);
    assert.deepEqual(cancellable, ['queued', 'downloading', 'verifying']);
  });

  it('overall progress fills 0–90 with the download and never goes back in later phases', () => {
    assert.equal(overallProgress('downloading', 0, 1000), 0);
    assert.equal(overallProgress('downloading', 500, 1000), 45);
    assert.equal(overallProgress('downloading', 1000, 1000), 90);
    const later = (['verifying', 'installing', 'rebooting', 'health_checking', 'committing', 'completed'] as const).map(
      (phase) => overallProgress(phase, 1000, 1000),
    );
    assert.deepEqual(
      later,
      [...later].sort((a, b) => a - b),
    );
    assert.equal(later.at(-1), 100);
  });
});

describe('planNextStep: what the reconcile loop does next (also after a power cut)', () => {
  const base: PlanInput = {
    phase: 'queued',
    cancelRequested: false,
    boot: 'normal',
    runningVersion: '1.0.0',
    targetVersion: '2.0.0',
  };
  type Row = [string, Partial<PlanInput>, string];
  const rows: Row[] = [
    ['a new job is authorised first', { phase: 'queued' }, 'authorize'],
    ['a cut mid-download resumes the download', { phase: 'downloading' }, 'download'],
    ['a cut while verifying re-verifies', { phase: 'verifying' }, 'verify'],
    ['a cut mid-install (slot not yet pending) re-installs', { phase: 'installing', boot: 'normal' }, 'install'],
    [
      'a cut after the slot was marked pending boots it on trial',
      { phase: 'installing', boot: 'trial', runningVersion: '2.0.0' },
      'confirm',
    ],
    [
      'installing, but the pending slot used up its tries',
      { phase: 'installing', boot: 'reverted' },
      'finish:failed:boot_failed',
    ],
    ['installed in this run: reboot', { phase: 'rebooting', boot: 'not_rebooted' }, 'reboot'],
    [
      'rebooted into the trial image: confirm',
      { phase: 'rebooting', boot: 'trial', runningVersion: '2.0.0' },
      'confirm',
    ],
    [
      'cut during the health check: the next boot is still a trial',
      { phase: 'health_checking', boot: 'trial', runningVersion: '2.0.0' },
      'confirm',
    ],
    [
      'cut after the commit but before the result: completed',
      { phase: 'committing', boot: 'normal', runningVersion: '2.0.0' },
      'finish:completed',
    ],
    [
      'the bootloader fell back (tries exceeded)',
      { phase: 'rebooting', boot: 'reverted' },
      'finish:failed:boot_failed',
    ],
    [
      'back on the old version without a trial',
      { phase: 'health_checking', boot: 'normal', runningVersion: '1.0.0' },
      'finish:failed:boot_failed',
    ],
    [
      'cut mid-revert while still on trial: finish the revert',
      {
        phase: 'reverting',
        boot: 'trial',
        runningVersion: '2.0.0',
        failure: { code: 'health_check_failed', message: 'x' },
      },
      'revert:health_check_failed',
    ],
    [
      'cut after the revert: report the recorded failure',
      { phase: 'reverting', boot: 'normal', failure: { code: 'health_check_failed', message: 'x' } },
      'finish:failed:health_check_failed',
    ],
    [
      'a cancel persisted mid-download wins',
      { phase: 'downloading', cancelRequested: true },
      'finish:failed:cancelled',
    ],
    ['a cancel persisted while queued wins', { phase: 'queued', cancelRequested: true }, 'finish:failed:cancelled'],
    [
      'a cancel cannot stop an install already begun',
      { phase: 'installing', cancelRequested: true, boot: 'normal' },
      'install',
    ],
  ];
  for (const [behaviour, input, expected] of rows) {
    it(behaviour, () => {
      const step = planNextStep({ ...base, ...input });
      const rendered =
        step.kind === 'finish'
          ? step.status === 'completed'
            ? 'finish:completed'
            : `finish:failed:${step.code}`
          : step.kind === 'revert'
            ? `revert:${step.code}`
            : step.kind;
      assert.equal(rendered, expected);
    });
  }

  it('never plans an install, download or reboot once the new image has booted', () => {
    const afterInstall: OtaPhase[] = ['rebooting', 'health_checking', 'committing', 'reverting'];
    const boots: BootObservation[] = ['normal', 'trial', 'reverted'];
    for (const phase of afterInstall) {
      for (const boot of boots) {
        const step = planNextStep({ ...base, phase, boot });
        assert.ok(['confirm', 'revert', 'finish'].includes(step.kind), `${phase}/${boot} planned ${step.kind}`);
      }
    }
  });
});
