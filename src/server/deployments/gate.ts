/**
 * The rollout's decisions, pure: whether a batch passed its gate, what the deployment does
 * next, when a failed device is retried and how many devices may be dispatched now. The engine
 * recomputes all of them from the database on every pass, so a restart mid-rollout or
 * mid-bake decides exactly what it would have decided without the restart.
 */
import type { BatchState, DeploymentSettings, OnFailure } from './schemas.ts';
import { type BatchTally, batchStateOf, type DeploymentFlags } from './status.ts';

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
  /** Failed among the judged, in percent; null before any device was judged. */
  failurePercent: number | null;
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
  const failurePercent = judged > 0 ? (tally.failed * 100) / judged : null;
  const decision = (verdict: GateVerdict, reason: GateReason, wakeAtMs: number | null = null): GateDecision => ({
    verdict,
    reason,
    judged,
    failurePercent,
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

/** A batch as the engine sees it. */
export interface GatedBatch {
  started: boolean;
  /**
   * The operator let the rollout go past this batch's gate: `promote` (start the next batch
   * now, skipping the bake), or `resume` of a deployment its failed gate paused (the operator
   * accepts the failures). A promoted batch is no longer gated.
   */
  promoted: boolean;
  tally: BatchTally;
}

export interface DeploymentState {
  flags: DeploymentFlags;
  /** finished_at is recorded: `complete` was applied. */
  finished: boolean;
  settings: GateSettings & Pick<DeploymentSettings, 'on_failure'>;
  batches: readonly GatedBatch[];
  nowMs: number;
}

export type WaitReason = 'finished' | 'scheduled' | 'paused' | 'in_flight' | 'baking' | 'dynamic';

export type NextAction =
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
 * 1. ended (rolled back, cancelled, failed, finished): nothing;
 * 2. start_at ahead: nothing until then;
 * 3. any started, unpromoted batch whose gate fails (batches already passed included, since
 *    crossing the threshold at any time counts): apply on_failure. Also while paused by the
 *    operator, so an abort or rollback is not held back by a pause; but not again when the
 *    failure already paused it;
 * 4. paused: nothing;
 * 5. no batch started yet: start the first; none at all: complete;
 * 6. the last started batch passed, or was promoted: start the next one, or complete after
 *    the last once every batch passed (a dynamic deployment keeps waiting for devices);
 * 7. otherwise wait for devices in flight or for a bake to end.
 */
export function nextAction(state: DeploymentState): NextAction {
  const { flags, settings, batches } = state;
  if (flags.rolledBack || flags.cancelled || flags.aborted || state.finished) return nothing('finished');
  if (flags.startAtMs !== null && flags.startAtMs > state.nowMs) return nothing('scheduled', flags.startAtMs);

  const gates = batches.map((batch) => gateDecision(batch.tally, settings));
  const failing = batches.findIndex(
    (batch, index) => batch.started && !batch.promoted && gates[index]?.verdict === 'fail',
  );
  if (failing >= 0) {
    if (flags.paused && settings.on_failure === 'pause') return nothing('paused');
    return { action: 'apply_on_failure', onFailure: settings.on_failure, batchIndex: failing, gate: gates[failing]! };
  }
  if (flags.paused) return nothing('paused');

  const current = lastStarted(batches);
  if (current < 0) return batches.length > 0 ? { action: 'start_batch', index: 0 } : finish(flags);
  const batch = batches[current]!;
  const gate = gates[current]!;
  if (batch.promoted || gate.verdict === 'pass') {
    if (current + 1 < batches.length) return { action: 'start_batch', index: current + 1 };
    if (batchStates(batches, settings).every((each) => each === 'passed')) return finish(flags);
  }
  return waitFor(batches, gates);
}

/** Every batch's state (what the deployment shows, and what deploymentStatusOf reads). */
export function batchStates(batches: readonly GatedBatch[], settings: GateSettings): BatchState[] {
  return batches.map((batch) => batchStateOf(batch, gateDecision(batch.tally, settings).verdict));
}

/** Batches start in order, so the last started one is the one whose gate holds the rollout. */
function lastStarted(batches: readonly GatedBatch[]): number {
  for (let index = batches.length - 1; index >= 0; index--) if (batches[index]!.started) return index;
  return -1;
}

function finish(flags: DeploymentFlags): NextAction {
  return flags.dynamic ? nothing('dynamic') : { action: 'complete' };
}

/** Waiting: on a bake (wake when the first one ends) or on devices in flight (their reports wake the engine). */
function waitFor(batches: readonly GatedBatch[], gates: readonly GateDecision[]): NextAction {
  let wakeAtMs: number | null = null;
  batches.forEach((batch, index) => {
    const bakeEnds = batch.started && !batch.promoted ? gates[index]?.wakeAtMs : null;
    if (bakeEnds != null) wakeAtMs = Math.min(wakeAtMs ?? bakeEnds, bakeEnds);
  });
  const inFlight = batches.some((batch) => batch.started && batch.tally.pending > 0);
  return nothing(inFlight || wakeAtMs === null ? 'in_flight' : 'baking', wakeAtMs);
}

/** Retry policy: a device failed `failures` times in this deployment; it is tried again while failures ≤ max_retries. */
export function shouldRetry(failures: number, maxRetries: number): boolean {
  return failures <= maxRetries;
}

export const RETRY_BASE_MS = 30_000;
export const RETRY_CAP_MS = 10 * 60_000;

/**
 * How long after its `attempt`-th failure (1, 2, …) a device is retried: doubling from 30 s,
 * capped at 10 minutes. Without jitter on purpose: the retry time is recomputed from the
 * failure time in the database after a restart and must come out the same; devices that
 * failed at different times are spread out already.
 */
export function retryDelayMs(attempt: number, baseMs = RETRY_BASE_MS, capMs = RETRY_CAP_MS): number {
  return Math.min(capMs, baseMs * 2 ** Math.min(Math.max(attempt, 1) - 1, 30));
}

/**
 * How many devices may be dispatched now under `max_per_minute` (null: no limit, Infinity),
 * given how many were dispatched in the last sixty seconds: a sliding window, so a restart
 * counting from the rows' dispatched_at keeps the rate.
 */
export function dispatchAllowance(maxPerMinute: number | null, dispatchedInLastMinute: number): number {
  if (maxPerMinute === null) return Number.POSITIVE_INFINITY;
  return Math.max(0, maxPerMinute - dispatchedInLastMinute);
}
