/**
 * The agent's OTA state machine as plain data and pure functions: which phase may follow which,
 * how far along a phase is, and — the heart of the reconcile loop — what the next step is,
 * given only what was persisted and what the bootloader did at this start. The same planner
 * drives a fresh update and the recovery after a power cut, so both follow one path.
 */
import type { OtaFailureCode, OtaPhase } from '../protocol/tunnel.ts';

export const transitions: Readonly<Record<OtaPhase, readonly OtaPhase[]>> = {
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

export function canTransition(from: OtaPhase, to: OtaPhase): boolean {
  return from === to || transitions[from].includes(to);
}

/** A phase change the table forbids: a bug, refused before it is persisted or reported. */
export class IllegalPhaseChangeError extends Error {
  constructor(
    readonly from: OtaPhase,
    readonly to: OtaPhase,
  ) {
    super(`the OTA phase table forbids ${from} → ${to}`);
    this.name = 'IllegalPhaseChangeError';
  }
}

/** Throws IllegalPhaseChangeError unless the table allows `from` → `to` (staying put is allowed). */
export function assertTransition(from: OtaPhase, to: OtaPhase): void {
  if (!canTransition(from, to)) throw new IllegalPhaseChangeError(from, to);
}

export function isTerminal(phase: OtaPhase): boolean {
  return phase === 'completed' || phase === 'failed';
}

/** Cancelling is allowed while nothing on the device has been touched yet. */
export function isCancellable(phase: OtaPhase): boolean {
  return phase === 'queued' || phase === 'downloading' || phase === 'verifying';
}

/** The share of the whole update done when a phase begins; the download fills the first 90 %. */
const phaseStartPercent: Record<OtaPhase, number> = {
  queued: 0,
  downloading: 0,
  verifying: 90,
  installing: 92,
  rebooting: 95,
  health_checking: 97,
  committing: 99,
  reverting: 99,
  completed: 100,
  failed: 100,
};

/** Overall progress 0–100 of an update, so the operator's bar never goes backwards between phases. */
export function overallProgress(phase: OtaPhase, bytesDownloaded: number, size: number): number {
  if (phase !== 'downloading') return phaseStartPercent[phase];
  if (size <= 0) return 0;
  return Math.min(90, Math.floor((Math.min(bytesDownloaded, size) / size) * 90));
}

/**
 * What the bootloader decided at the latest (re)start, relative to the job's install:
 * - `not_rebooted`: the image was installed in this run and no boot happened since;
 * - `normal`: no slot was pending, the device runs its committed version;
 * - `trial`: the newly installed slot is running on trial and awaits confirmation;
 * - `reverted`: the pending slot used up its boot attempts and the previous one runs again.
 */
export type BootObservation = 'not_rebooted' | 'normal' | 'trial' | 'reverted';

export interface PlanInput {
  phase: OtaPhase;
  cancelRequested: boolean;
  boot: BootObservation;
  runningVersion: string;
  targetVersion: string;
  /** Set once a failure was decided after install, while the revert is still under way. */
  failure?: { code: OtaFailureCode; message: string };
}

export type OtaStep =
  | { kind: 'authorize' }
  | { kind: 'download' }
  | { kind: 'verify' }
  | { kind: 'install' }
  | { kind: 'reboot' }
  | { kind: 'confirm' }
  | { kind: 'commit' }
  | { kind: 'revert'; code: OtaFailureCode; message: string }
  | { kind: 'finish'; status: 'completed' }
  | { kind: 'finish'; status: 'failed'; code: OtaFailureCode; message: string };

const cancelled: OtaStep = { kind: 'finish', status: 'failed', code: 'cancelled', message: 'cancelled by the server' };

/** The next step of a job; calling it again after the step's persisted effect gives the one after. */
export function planNextStep(input: PlanInput): OtaStep {
  const { phase, boot } = input;
  if (input.cancelRequested && isCancellable(phase)) return cancelled;
  switch (phase) {
    case 'queued':
      return { kind: 'authorize' };
    case 'downloading':
      return { kind: 'download' };
    case 'verifying':
      return { kind: 'verify' };
    case 'installing':
      // The slot was marked pending just before the cut, so the bootloader already tried it.
      if (boot === 'trial') return { kind: 'confirm' };
      if (boot === 'reverted') return bootFailed('the new version did not come up within its boot attempts');
      return { kind: 'install' };
    case 'rebooting':
    case 'health_checking':
    case 'committing':
      // A cut while committing: the decision to commit was taken, but the commit did not land,
      // so the slot is on trial again. Back to health_checking would go against the table: the
      // commit runs again (it is idempotent), once this new boot has proved itself too.
      if (phase === 'committing' && (boot === 'trial' || boot === 'not_rebooted')) return { kind: 'commit' };
      if (boot === 'trial') return { kind: 'confirm' };
      if (boot === 'not_rebooted') return phase === 'rebooting' ? { kind: 'reboot' } : { kind: 'confirm' };
      if (boot === 'reverted') return bootFailed('the new version did not come up within its boot attempts');
      // A normal boot after install: either the commit landed just before the cut, or the slot was abandoned.
      if (input.failure) return { kind: 'finish', status: 'failed', ...input.failure };
      if (input.runningVersion === input.targetVersion) return { kind: 'finish', status: 'completed' };
      return bootFailed(`the device came back on ${input.runningVersion}, not ${input.targetVersion}`);
    case 'reverting': {
      const failure = input.failure ?? { code: 'boot_failed' as const, message: 'reverted to the previous version' };
      if (boot === 'trial') return { kind: 'revert', ...failure };
      return { kind: 'finish', status: 'failed', ...failure };
    }
    case 'completed':
      return { kind: 'finish', status: 'completed' };
    case 'failed':
      return { kind: 'finish', status: 'failed', ...(input.failure ?? { code: 'install_failed', message: 'failed' }) };
  }
}

function bootFailed(message: string): OtaStep {
  return { kind: 'finish', status: 'failed', code: 'boot_failed', message };
}
