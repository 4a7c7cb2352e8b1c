import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  assertTransition,
  type BootObservation,
  canTransition,
  IllegalPhaseChangeError,
  isCancellable,
  type OtaStep,
  overallProgress,
  type PlanInput,
  planNextStep,
} from '../../src/agent/ota-state-machine.ts';
import type { OtaPhase } from '../../src/protocol/tunnel.ts';

const allPhases: OtaPhase[] = [
  'queued',
  'downloading',
  'verifying',
  'installing',
  'rebooting',
  'health_checking',
  'committing',
  'completed',
  'reverting',
  'failed',
];

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

  // The table as the spec writes it, apart from the code: every other change must be refused.
  const allowed: Record<OtaPhase, OtaPhase[]> = {
    queued: ['downloading', 'completed', 'failed'],
    downloading: ['verifying', 'failed'],
    verifying: ['installing', 'failed'],
    installing: ['rebooting', 'health_checking', 'failed'],
    rebooting: ['health_checking', 'reverting', 'completed', 'failed'],
    health_checking: ['committing', 'reverting', 'completed', 'failed'],
    committing: ['completed', 'reverting', 'failed'],
    reverting: ['failed'],
    completed: [],
    failed: [],
  };
  for (const from of allPhases) {
    for (const to of allPhases) {
      const legal = from === to || allowed[from].includes(to);
      it(`${legal ? 'lets' : 'refuses'} ${from} → ${to}`, () => {
        if (legal) {
          assertTransition(from, to);
          return;
        }
        assert.throws(
          () => assertTransition(from, to),
          (error: unknown) => error instanceof IllegalPhaseChangeError && error.from === from && error.to === to,
        );
      });
    }
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
      'cut while committing, the commit not landed: the trial boot proves itself again and the commit is re-run',
      { phase: 'committing', boot: 'trial', runningVersion: '2.0.0' },
      'commit',
    ],
    ['stopped while committing in this run: commit again', { phase: 'committing', boot: 'not_rebooted' }, 'commit'],
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
        assert.ok(
          ['confirm', 'commit', 'revert', 'finish'].includes(step.kind),
          `${phase}/${boot} planned ${step.kind}`,
        );
      }
    }
  });

  /** The phase the job is in while the handler runs a step (OtaHandler enters it first). */
  const phaseOfStep = (step: OtaStep, phase: OtaPhase): OtaPhase => {
    switch (step.kind) {
      case 'authorize':
        return 'queued';
      case 'download':
        return 'downloading';
      case 'verify':
        return 'verifying';
      case 'install':
        return 'installing';
      case 'reboot':
        return phase;
      case 'confirm':
        return 'health_checking';
      case 'commit':
        return 'committing';
      case 'revert':
        return 'reverting';
      case 'finish':
        return step.status;
    }
  };

  it('never plans a step whose phase change the table forbids, whatever was persisted and however it booted', () => {
    const boots: BootObservation[] = ['not_rebooted', 'normal', 'trial', 'reverted'];
    const failure = { code: 'health_check_failed' as const, message: 'unhealthy' };
    for (const phase of allPhases) {
      for (const boot of boots) {
        for (const runningVersion of ['1.0.0', '2.0.0']) {
          for (const extra of [{}, { failure }, { cancelRequested: true }]) {
            const input: PlanInput = { ...base, phase, boot, runningVersion, ...extra };
            const step = planNextStep(input);
            const to = phaseOfStep(step, phase);
            assert.ok(canTransition(phase, to), `${JSON.stringify(input)} planned ${step.kind}: ${phase} → ${to}`);
          }
        }
      }
    }
  });
});
