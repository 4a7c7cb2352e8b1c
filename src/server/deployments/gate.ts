/**
 * The rollout's decisions, pure: a batch's tally from its counters, its gate, the state it
 * should be in, what the deployment does next, and how many devices may be queued now. The
 * scheduler feeds it the counters kept on write (migration 007), so a pass costs O(batches);
 * the same counters after a restart give the same decisions.
 */
import {
  type BatchState,
  type DeploymentState,
  type DeviceCounts,
  failedOf,
  IN_FLIGHT_DEVICE_STATES,
  isEnded,
} from '../model/deployment.ts';
import type { DeploymentSettings, OnFailure } from './schemas.ts';

/** A batch's devices by what the gate makes of them. */
export interface BatchTally {
  size: number;
  /** Not started, queued, sent, updating, or waiting for a retry. */
  pending: number;
  /** Committed, bake not over. */
  baking: number;
  /** Committed and baked. */
  succeeded: number;
  /** No attempt left, or failed within the bake. */
  failed: number;
  skipped: number;
  cancelled: number;
  /** When the last baking device's bake ends (ms); null when none is baking. */
  bakeEndsAtMs: number | null;
}

export function emptyTally(): BatchTally {
  return { size: 0, pending: 0, baking: 0, succeeded: 0, failed: 0, skipped: 0, cancelled: 0, bakeEndsAtMs: null };
}

/** The tally of a batch from its counters (and, while some bake, when the last bake ends). */
export function tallyOf(counts: DeviceCounts, bakeEndsAtMs: number | null = null): BatchTally {
  const pending = IN_FLIGHT_DEVICE_STATES.reduce((sum, state) => sum + counts[state], 0);
  const tally: BatchTally = {
    size: 0,
    pending,
    baking: counts.baking,
    succeeded: counts.completed,
    failed: failedOf(counts),
    skipped: counts.skipped,
    cancelled: counts.cancelled,
    bakeEndsAtMs: counts.baking > 0 ? bakeEndsAtMs : null,
  };
  tally.size = tally.pending + tally.baking + tally.succeeded + tally.failed + tally.skipped + tally.cancelled;
  return tally;
}

export type GateSettings = Pick<DeploymentSettings, 'failure_threshold_percent' | 'min_sample'>;

export type GateVerdict = 'wait' | 'pass' | 'fail';

/**
 * - `threshold_crossed`: more than failure_threshold_percent of the judged devices failed;
 * - `in_flight`: devices still updating (or waiting for a retry, or for their sample);
 * - `baking`: every device has a verdict or is baking, and a bake is not over;
 * - `passed`: every device has a verdict, the failures stayed within the threshold.
 */
export type GateReason = 'threshold_crossed' | 'in_flight' | 'baking' | 'passed';

export interface GateDecision {
  verdict: GateVerdict;
  reason: GateReason;
  /** Devices with a verdict: succeeded (baked) or failed. */
  judged: number;
  /** Of them, failed. */
  failed: number;
  /** When waiting on a bake: when it is over (ms), so the engine can wake up then. */
  wakeAtMs: number | null;
}

/**
 * More than `thresholdPercent` failed: the threshold is the highest failure rate tolerated, so
 * exactly at it still passes, 0 tolerates no failure, and 100 never stops. In integers where
 * the inputs are, so 1 of 10 is not 10.000000000000002% of 10.
 */
export function thresholdCrossed(failed: number, judged: number, thresholdPercent: number): boolean {
  return judged > 0 && failed * 100 > thresholdPercent * judged;
}

/**
 * The number of verdicts needed before the failure rate is judged: min_sample, or every device
 * that can have a verdict when the batch is smaller. A batch smaller than min_sample (a canary
 * of 3 with min_sample 10) is judged once all its devices have a verdict: it never reaches the
 * sample, and a gate that never judged would wave a failed canary through.
 */
export function sampleNeeded(tally: BatchTally, minSample: number): number {
  return Math.min(minSample, tally.size - tally.skipped - tally.cancelled);
}

/**
 * A batch's gate. It fails as soon as the threshold is crossed with the sample reached, even
 * while devices are still in flight or baking; it passes when no device is in flight or
 * baking and the threshold was not crossed; otherwise it waits. Skipped and cancelled devices
 * have no verdict, so a batch of only those passes.
 */
export function gateDecision(tally: BatchTally, settings: GateSettings): GateDecision {
  const judged = tally.succeeded + tally.failed;
  const decision = (verdict: GateVerdict, reason: GateReason, wakeAtMs: number | null = null): GateDecision => ({
    verdict,
    reason,
    judged,
    failed: tally.failed,
    wakeAtMs,
  });
  if (
    judged >= sampleNeeded(tally, settings.min_sample) &&
    thresholdCrossed(tally.failed, judged, settings.failure_threshold_percent)
  ) {
    return decision('fail', 'threshold_crossed');
  }
  if (tally.pending > 0) return decision('wait', 'in_flight');
  if (tally.baking > 0) return decision('wait', 'baking', tally.bakeEndsAtMs);
  return decision('pass', 'passed');
}

/** A batch as the scheduler sees it: its stored state, the operator's promotion and its counters' tally. */
export interface GatedBatch {
  state: BatchState;
  /**
   * The operator let the rollout go past this batch's gate: `promote` (start the next batch
   * now, skipping the bake), or `resume` of a deployment its failed gate paused (the operator
   * accepts the failures). A promoted batch is no longer gated.
   */
  promoted: boolean;
  tally: BatchTally;
}

/**
 * The state a started batch should be in now (the scheduler writes it when it differs, through
 * the guarded batch write): a failed batch stays failed; a promoted one passes once nothing of
 * it is in flight; otherwise the gate's verdict, or running while devices are in flight and
 * baking once they all bake. A passed batch runs again only when devices were added to it.
 */
export function batchStateFor(batch: GatedBatch, verdict: GateVerdict): BatchState {
  if (batch.state === 'pending' || batch.state === 'failed') return batch.state;
  if (batch.promoted) return batch.tally.pending > 0 ? 'running' : 'passed';
  if (batch.state === 'passed') return batch.tally.pending > 0 ? 'running' : 'passed';
  if (verdict === 'fail') return 'failed';
  if (verdict === 'pass') return 'passed';
  return batch.tally.pending > 0 ? 'running' : 'baking';
}

/** Behind the rollout: passed, or failed and accepted by the operator. */
function isSettledBatch(batch: GatedBatch): boolean {
  return batch.state === 'passed' || (batch.state === 'failed' && batch.promoted);
}

export interface DeploymentSituation {
  state: DeploymentState;
  /** Scheduled start (ms), null to start at once. */
  startAtMs: number | null;
  /** Takes devices that come to match while active: it never completes by itself (AWS IoT's continuous jobs). */
  dynamic: boolean;
  settings: GateSettings & Pick<DeploymentSettings, 'on_failure'>;
  /** Every batch, each in the state the scheduler just wrote (batchStateFor). */
  batches: readonly GatedBatch[];
  nowMs: number;
}

export type WaitReason = 'ended' | 'awaiting_approval' | 'scheduled' | 'paused' | 'in_flight' | 'baking' | 'dynamic';

export type NextAction =
  | { action: 'start' }
  | { action: 'start_batch'; index: number }
  | { action: 'apply_on_failure'; onFailure: OnFailure; batchIndex: number; gate: GateDecision }
  | { action: 'complete' }
  | { action: 'nothing'; reason: WaitReason; wakeAtMs: number | null };

const nothing = (reason: WaitReason, wakeAtMs: number | null = null): NextAction => ({
  action: 'nothing',
  reason,
  wakeAtMs,
});

/**
 * What the deployment does next, in this order:
 * 1. ended, or awaiting approval: nothing;
 * 2. scheduled: start once start_at is reached;
 * 3. a batch whose gate failed and that the operator has not promoted: apply on_failure. Also
 *    while paused by the operator, so an abort or rollback is not held back by a pause; but not
 *    again when the failure already paused it;
 * 4. paused: nothing;
 * 5. no batch started yet: start the first; none at all: complete;
 * 6. the last started batch is behind the rollout (passed, accepted) or promoted: start the
 *    next one, or complete once every batch is behind it (a dynamic deployment keeps waiting);
 * 7. otherwise wait for devices in flight or for a bake to end.
 */
export function nextAction(situation: DeploymentSituation): NextAction {
  const { state, settings, batches } = situation;
  if (isEnded(state)) return nothing('ended');
  if (state === 'awaiting_approval') return nothing('awaiting_approval');
  if (state === 'scheduled') {
    if (situation.startAtMs !== null && situation.startAtMs > situation.nowMs) {
      return nothing('scheduled', situation.startAtMs);
    }
    return { action: 'start' };
  }
  const failing = batches.findIndex((batch) => batch.state === 'failed' && !batch.promoted);
  if (failing >= 0) {
    if (state === 'paused' && settings.on_failure === 'pause') return nothing('paused');
    const gate = gateDecision(batches[failing]!.tally, settings);
    return { action: 'apply_on_failure', onFailure: settings.on_failure, batchIndex: failing, gate };
  }
  if (state === 'paused') return nothing('paused');

  const current = lastStarted(batches);
  if (current < 0) return batches.length > 0 ? { action: 'start_batch', index: 0 } : finish(situation);
  const batch = batches[current]!;
  if (batch.promoted || isSettledBatch(batch)) {
    if (current + 1 < batches.length) return { action: 'start_batch', index: current + 1 };
    if (batches.every(isSettledBatch)) return finish(situation);
  }
  return waitFor(batches, settings);
}

/** Batches start in order, so the last started one is the one whose gate holds the rollout. */
function lastStarted(batches: readonly GatedBatch[]): number {
  for (let index = batches.length - 1; index >= 0; index--) if (batches[index]!.state !== 'pending') return index;
  return -1;
}

function finish(situation: DeploymentSituation): NextAction {
  return situation.dynamic ? nothing('dynamic') : { action: 'complete' };
}

/** Waiting: on a bake (wake when the first one ends) or on devices in flight (their reports wake the engine). */
function waitFor(batches: readonly GatedBatch[], settings: GateSettings): NextAction {
  let wakeAtMs: number | null = null;
  for (const batch of batches) {
    if (batch.state === 'pending' || batch.promoted) continue;
    const bakeEnds = gateDecision(batch.tally, settings).wakeAtMs;
    if (bakeEnds != null) wakeAtMs = Math.min(wakeAtMs ?? bakeEnds, bakeEnds);
  }
  const inFlight = batches.some((batch) => batch.state !== 'pending' && batch.tally.pending > 0);
  return nothing(inFlight || wakeAtMs === null ? 'in_flight' : 'baking', wakeAtMs);
}

/**
 * How many devices may be queued now under `max_per_minute` (null: no limit, Infinity), given
 * how many were queued in the last sixty seconds: a sliding window, so a restart counting from
 * the rows' created_at keeps the rate.
 */
export function dispatchAllowance(maxPerMinute: number | null, queuedInLastMinute: number): number {
  if (maxPerMinute === null) return Number.POSITIVE_INFINITY;
  return Math.max(0, maxPerMinute - queuedInLastMinute);
}
