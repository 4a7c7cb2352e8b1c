/**
 * The deployment planner, pure: which devices a deployment takes, and in which batches. The
 * service runs it on rows it read; a dry run answers exactly what the real run would do,
 * because both go through these functions with the devices in the same order.
 */
import { compareVersions } from '../../protocol/version.ts';
import { type BatchKind, SKIP_REASONS, type SkipReason } from '../model/deployment.ts';
import type { BatchSize, DeploymentPlan, DeploymentSettings, DeviceSample } from './schemas.ts';
import { PLAN_SAMPLE_IDS } from './schemas.ts';

/** The settings that shape the batches. */
export type BatchSettings = Pick<
  DeploymentSettings,
  'strategy' | 'batch_size' | 'canary_percent' | 'canary_count' | 'rest_strategy'
>;

export interface PlannedBatch {
  index: number;
  kind: BatchKind;
  deviceIds: string[];
}

/**
 * `percent` of `total`, rounded up. The epsilon keeps float noise (33.3% of 1000 computes as
 * 333.00000000000006) from adding a device.
 */
export function percentOf(total: number, percent: number): number {
  return Math.ceil((total * percent) / 100 - 1e-9);
}

/** A batch_size as a device count: a percentage is of the whole target list, rounded up, at least one. */
export function batchSizeOf(batchSize: BatchSize, total: number): number {
  if (typeof batchSize === 'number') return batchSize;
  return Math.max(1, percentOf(total, Number.parseInt(batchSize, 10)));
}

/**
 * How many devices the canary takes: the percentage rounded up (at least one), or the count.
 * Never the whole fleet when there are two devices or more, else nothing would be left for the
 * canary to protect.
 */
export function canarySizeOf(settings: BatchSettings, total: number): number {
  if (total === 0) return 0;
  const wanted =
    settings.canary_count ??
    (settings.canary_percent === null ? 1 : Math.max(1, percentOf(total, settings.canary_percent)));
  return total === 1 ? 1 : Math.min(wanted, total - 1);
}

/** `count` devices in chunks of `size`, the last one smaller. */
function chunks(count: number, size: number): number[] {
  const sizes: number[] = [];
  for (let left = count; left > 0; left -= size) sizes.push(Math.min(size, left));
  return sizes;
}

/** The batch sizes, in order, for `total` devices. No devices: no batches. */
export function batchSizes(total: number, settings: BatchSettings): { kind: BatchKind; size: number }[] {
  if (total === 0) return [];
  const batches = (sizes: number[]) => sizes.map((size) => ({ kind: 'batch' as const, size }));
  switch (settings.strategy) {
    case 'all_at_once':
      return batches([total]);
    case 'rolling':
      return batches(chunks(total, batchSizeOf(requireBatchSize(settings), total)));
    case 'canary': {
      const canary = canarySizeOf(settings, total);
      const rest = total - canary;
      const restSizes =
        settings.rest_strategy === 'rolling'
          ? chunks(rest, batchSizeOf(requireBatchSize(settings), total))
          : chunks(rest, rest);
      return [{ kind: 'canary', size: canary }, ...batches(restSizes)];
    }
  }
}

/** checkDeploymentRequest guarantees it; a row read back without one is a bug, not a request to guess. */
function requireBatchSize(settings: BatchSettings): BatchSize {
  if (settings.batch_size === null) throw new Error(`a ${settings.strategy} deployment has no batch_size`);
  return settings.batch_size;
}

/**
 * The devices cut into batches, in the order given: the caller passes them in a stable order
 * (explicit `device_ids` as listed, so an operator can name the canary first; otherwise by
 * device id), so that a dry run and the real run plan the same batches. Duplicates count once.
 */
export function planBatches(deviceIds: readonly string[], settings: BatchSettings): PlannedBatch[] {
  const unique = [...new Set(deviceIds)];
  let start = 0;
  return batchSizes(unique.length, settings).map(({ kind, size }, index) => {
    const batch = { index, kind, deviceIds: unique.slice(start, start + size) };
    start += size;
    return batch;
  });
}

/** A device the target selected, as the planner needs to see it. */
export interface TargetCandidate {
  device_id: string;
  model: string | null;
  current_version: string;
  online: boolean;
  /** The deployment or update that holds it; null when free. */
  held_by: string | null;
}

export interface TargetRules {
  version: string;
  /** The firmware's compatible models; empty means every model. */
  compatibleModels: readonly string[];
  /** Re-install on devices that already run the version. */
  force: boolean;
}

/**
 * Why a device is (not) part of a deployment. Checked in this order, the first that applies:
 * - `incompatible`: its model is not in the firmware's non-empty compatible_models (a device
 *   without a model too), as the single-device update refuses it;
 * - `already_on_version` (unless force) or `newer_version`: devices refuse silent downgrades,
 *   and a deployment never rolls a device back;
 * - `busy`: another deployment or an update holds it; it is not touched;
 * - `eligible`: it will be updated. An offline device is eligible: it is dispatched when it
 *   comes online while the deployment is active, so it stays in its batch (the batch waits
 *   for it, up to the device timeout); a plan lists it as offline as well.
 */
export type TargetClass = 'eligible' | SkipReason;

export function classifyTarget(device: TargetCandidate, rules: TargetRules): TargetClass {
  if (rules.compatibleModels.length > 0 && !rules.compatibleModels.includes(device.model ?? '')) return 'incompatible';
  const comparison = compareVersions(device.current_version, rules.version);
  if (comparison > 0) return 'newer_version';
  if (comparison === 0 && !rules.force) return 'already_on_version';
  if (device.held_by !== null) return 'busy';
  return 'eligible';
}

export interface TargetClassification {
  eligible: string[];
  /** The devices left out, by reason, in the candidates' order. */
  excluded: Record<SkipReason, string[]>;
  /** The eligible devices that are offline now (also in `eligible`). */
  offline: string[];
}

/** classifyTarget over the candidates, keeping their order in every list. */
export function classifyTargets(candidates: readonly TargetCandidate[], rules: TargetRules): TargetClassification {
  const excluded = Object.fromEntries(SKIP_REASONS.map((reason) => [reason, []])) as unknown as Record<
    SkipReason,
    string[]
  >;
  const result: TargetClassification = { eligible: [], excluded, offline: [] };
  for (const device of candidates) {
    const kind = classifyTarget(device, rules);
    if (kind === 'eligible') {
      result.eligible.push(device.device_id);
      if (!device.online) result.offline.push(device.device_id);
    } else {
      result.excluded[kind].push(device.device_id);
    }
  }
  return result;
}

/** A device the target matched, as its deployment keeps it (repo.insertDeploymentDevices writes it). */
export interface MatchedDevice {
  deviceId: string;
  batchIndex: number | null;
  fromVersion: string;
  ordinal: number;
  /** `queued` with its update's id: its attempt is created in the same transaction (attempts.ts). */
  state: 'pending' | 'queued' | 'skipped';
  updateId: string | null;
  reason: SkipReason | null;
  detail: string | null;
}

/**
 * The rows of the matched devices, in the candidates' order: each eligible one in its batch
 * (`queued` when `updateIdOf` names the attempt made for it at once, else `pending`), each one
 * left out `skipped` with its reason (and, when busy, what holds it).
 */
export function matchedDevices(
  candidates: readonly (TargetCandidate & { ordinal: number })[],
  classes: TargetClassification,
  batchOf: (deviceId: string) => number | null,
  updateIdOf: (deviceId: string) => string | undefined = () => undefined,
): MatchedDevice[] {
  const reasonOf = new Map<string, SkipReason>();
  for (const reason of SKIP_REASONS) for (const id of classes.excluded[reason]) reasonOf.set(id, reason);
  return candidates.map((candidate) => {
    const reason = reasonOf.get(candidate.device_id) ?? null;
    const updateId = reason === null ? updateIdOf(candidate.device_id) : undefined;
    return {
      deviceId: candidate.device_id,
      batchIndex: reason === null ? batchOf(candidate.device_id) : null,
      fromVersion: candidate.current_version,
      ordinal: candidate.ordinal,
      state: reason !== null ? 'skipped' : updateId !== undefined ? 'queued' : 'pending',
      updateId: updateId ?? null,
      reason,
      detail: reason === 'busy' ? candidate.held_by : null,
    };
  });
}

export function sampleOf(deviceIds: readonly string[], count = deviceIds.length): DeviceSample {
  return { count, device_ids: deviceIds.slice(0, PLAN_SAMPLE_IDS) };
}

/**
 * The dry-run answer for candidates in their stable order: the eligible devices planned into
 * batches, the rest counted by why they are left out.
 */
export function describePlan(
  candidates: readonly TargetCandidate[],
  rules: TargetRules,
  settings: DeploymentSettings,
  startAt: Date | null,
  notFound: DeviceSample | null,
): Omit<DeploymentPlan, 'approval'> {
  const classes = classifyTargets(candidates, rules);
  return {
    dry_run: true,
    version: rules.version,
    settings,
    start_at: startAt,
    total: classes.eligible.length,
    batches: planBatches(classes.eligible, settings).map((batch) => ({
      index: batch.index,
      kind: batch.kind,
      size: batch.deviceIds.length,
      device_ids: batch.deviceIds.slice(0, PLAN_SAMPLE_IDS),
    })),
    excluded: Object.fromEntries(
      SKIP_REASONS.map((reason) => [reason, sampleOf(classes.excluded[reason])]),
    ) as DeploymentPlan['excluded'],
    ...(notFound ? { not_found: notFound } : {}),
    offline: sampleOf(classes.offline),
  };
}
