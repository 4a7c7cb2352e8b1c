/**
 * Queueing a deployment's attempts, in one place for the scheduler's chunks and for the first
 * batch of a deployment created to run at once (its first chunk in the creating transaction, its
 * device rows written `queued` with their update ids, so no claim is needed; the rest chunk after
 * chunk once it commits, while the POST is answered): one update row per due device, created
 * already dispatched for the devices whose tunnel this process holds (they are sent as soon as
 * the transaction commits, without the queue), queued for the others (the process that holds
 * them claims them). A device that another update holds meanwhile gets
 * no row and is skipped as busy, with its holder.
 */
import type { Logger } from 'pino';
import type { DeviceVersions } from '../devices/repo.ts';
import { findHolder } from '../holds/repo.ts';
import { type Config, nowOf } from '../infra/config.ts';
import type { Db, Queryable } from '../infra/db.ts';
import { newId } from '../infra/secrets.ts';
import type { Opening } from '../model/maintenance-window.ts';
import type { Attempt, UpdateTransitions } from '../updates/transitions.ts';
import { findRolloutSettings } from '../windows/repo.ts';
import { dispatchAllowance } from './gate.ts';
import * as repo from './repo.ts';
import {
  admitDownloads,
  type DispatchRules,
  decideDue,
  dispatchRulesOf,
  isConstrained,
  windowStartOf,
} from './waits.ts';

/**
 * Attempts queued per chunk: one statement's worth, sent while the next chunk is queued. Measured
 * on P1 (10,000 devices, PostgreSQL): chunks of 2,000 took 4.5–5.5 s, of 5,000 2.4 s, one of 10,000
 * 1.8 s — a later chunk's transaction waits on an event loop busy with the earlier chunks' device
 * answers (its statements' results are read between them), so fewer, larger chunks win.
 */
export const CHUNK = 10_000;

/** Sends attempts created already dispatched (devices whose tunnel this process holds); answers come later. */
export type SendDispatched = (updates: readonly Attempt[], devices?: DeviceVersions) => Promise<void>;

export interface ChunkDeps {
  /** The clock of windows and budgets. */
  config: Pick<Config, 'now'>;
  db: Db;
  transitions: UpdateTransitions;
  /** This process: devices whose tunnel it holds get their attempt sent from here, at once. */
  nodeId: string;
  sendDispatched: SendDispatched;
  log: Logger;
}

/**
 * Queues one chunk of the attempts due now in a running deployment's started batches (devices
 * not started, retries due), within max_per_minute, in the planned order, in a transaction of
 * its own; the chunk's commands go out once it commits, while the caller queues the next.
 * Answers whether more are due.
 */
export async function queueDueChunk(deps: ChunkDeps, row: repo.DeploymentRow): Promise<boolean> {
  const { db, transitions, nodeId } = deps;
  const { settings } = row;
  const allowance = dispatchAllowance(
    settings.max_per_minute,
    settings.max_per_minute === null ? 0 : await repo.countCreatedInLastMinute(db, row.id),
  );
  const limit = Math.min(CHUNK, allowance);
  if (limit <= 0) return false;
  const rules = dispatchRulesOf(settings, await findRolloutSettings(db, row.organization_id));
  const admitted = isConstrained(rules) ? await admitDue(deps, row, rules, limit) : null;
  if (admitted && admitted.ids.length === 0) return false;
  const queued = await db.transaction(async (tx) => {
    // Holds off a control that would end it until this chunk is queued; the control then cancels it.
    if (!(await repo.lockIfState(tx, row.id, ['running']))) return { due: 0, dispatched: [] };
    const due = await repo.claimDueDevices(tx, row.id, nodeId, limit, admitted?.ids ?? null);
    const rated = due.map((device) => ({
      ...device,
      max_bytes_per_second: admitted?.bytesPerSecond ?? null,
      window_ends_at: admitted?.windowEnds.get(device.device_id) ?? null,
    }));
    return { due: due.length, dispatched: await queueAttempts(tx, transitions, row, rated) };
  });
  sendInBackground(deps, row.id, queued.dispatched);
  return admitted ? admitted.more : queued.due === limit;
}

/** Attempts held by a closed window a pass looks at in one go. */
const HELD_SCAN = 10_000;

/**
 * Attempts created inside their device's window that did not go out before it closed (the device
 * was offline, or locked): the claim leaves them (updates/repo.ts), so a device that
 * comes back at noon is not updated at noon. When its window opens again the attempt goes out
 * until that one closes; meanwhile its row waits for it (`window`, when it may start). Once per
 * pass of a running deployment (the scheduler's decisions); the rules are read only when some
 * attempt is held.
 */
export async function settleHeldAttempts(deps: ChunkDeps, row: repo.DeploymentRow): Promise<void> {
  const { db } = deps;
  const now = nowOf(deps.config);
  const held = await repo.listWindowHeld(db, row.id, now, HELD_SCAN);
  if (held.length === 0) return;
  const rules = dispatchRulesOf(row.settings, await findRolloutSettings(db, row.organization_id));
  const openings = new Map<string, Opening[]>();
  const decided = held.map((attempt) => {
    const start = windowStartOf(rules, attempt, now, openings);
    const open = start?.open ?? false;
    return {
      ...attempt,
      open,
      ends_at: open ? (start?.closesAt ?? null) : null,
      detail: !open && start ? start.at.toISOString() : null,
    };
  });
  await deps.transitions.reopenWindows(
    row.id,
    decided.filter((attempt) => attempt.open),
  );
  await repo.markWindowHeld(db, row.id, decided);
}

/** Due devices a pass looks at in one go when windows or budgets apply. */
const DUE_SCAN = 100_000;

/**
 * Under windows or budgets: the due devices inside their window and within the budgets (at most
 * `limit`), the rate each is given, and whether more may go at once; the others' rows say why
 * they wait (pending, reason `window` with when they may start, or `bandwidth`).
 */
async function admitDue(
  deps: ChunkDeps,
  row: repo.DeploymentRow,
  rules: DispatchRules,
  limit: number,
): Promise<{ ids: string[]; windowEnds: Map<string, Date | null>; bytesPerSecond: number | null; more: boolean }> {
  const { db, config } = deps;
  const now = nowOf(config);
  const due = await repo.listDueDevices(db, row.id, DUE_SCAN);
  const { admit, bytesPerSecond } = admitDownloads(
    [
      { caps: rules.deployment, downloading: await repo.countDownloading(db, { deploymentId: row.id }, now) },
      ...(rules.organization.maxConcurrentDownloads !== null || rules.organization.maxBytesPerSecond !== null
        ? [
            {
              caps: rules.organization,
              downloading: await repo.countDownloading(db, { organizationId: row.organization_id }, now),
            },
          ]
        : []),
    ],
    due.length,
  );
  const { send, decisions } = decideDue(due, rules, now, admit, limit);
  const byId = new Map(due.map((device) => [device.device_id, device]));
  await repo.setWaits(
    db,
    row.id,
    decisions.filter((decision) => byId.get(decision.device_id)?.state === 'pending'),
  );
  return {
    ids: send.map((device) => device.device_id),
    windowEnds: new Map(send.map((device) => [device.device_id, device.window_ends_at])),
    bytesPerSecond: bytesPerSecond === null ? null : Math.min(bytesPerSecond, MAX_DEVICE_RATE),
    more: send.length === limit && admit > limit,
  };
}

/** The most an attempt's rate says (ota_updates.max_bytes_per_second is an integer): 2 GiB/s, unlimited in practice. */
const MAX_DEVICE_RATE = 2 ** 31 - 1;

/**
 * Sends attempts created dispatched once their transaction committed, without waiting for the
 * devices; `devices`, what that transaction read of them, when it read them all.
 */
export function sendInBackground(
  deps: Pick<ChunkDeps, 'sendDispatched' | 'log'>,
  deploymentId: string,
  dispatched: readonly Attempt[],
  devices?: DeviceVersions,
): void {
  deps
    .sendDispatched(dispatched, devices)
    .catch((error: Error) =>
      deps.log.error({ err: error, deployment_id: deploymentId }, 'sending a chunk of attempts failed'),
    );
}

/**
 * The devices of a first batch whose attempts the deployment's creating transaction makes: as
 * many as a chunk and max_per_minute allow, in the planned order.
 */
export function firstChunkOf(
  deviceIds: readonly string[],
  settings: repo.DeploymentRow['settings'],
  rules: DispatchRules,
): string[] {
  // Under windows or budgets, the scheduler's chunk decides who goes (queueDueChunk), once it commits.
  if (isConstrained(rules)) return [];
  return deviceIds.slice(0, Math.min(CHUNK, dispatchAllowance(settings.max_per_minute, 0)));
}

/** A device due for an attempt, with what it runs now and whether its tunnel is held by this process. */
export interface DueDevice {
  device_id: string;
  current_version: string;
  here: boolean;
  /** The update id to use, when the caller already pointed the device's row at it. */
  update_id?: string;
  /** Its share of a byte budget (bytes per second); absent or null: unlimited. */
  max_bytes_per_second?: number | null;
  /** When its maintenance window closes: its attempt goes out only until then; absent or null: no window. */
  window_ends_at?: Date | null;
}

/** The report deadline of the deployment's attempts: its device_timeout_minutes, or the server's (null). */
export function attemptTimeoutSeconds(row: Pick<repo.DeploymentRow, 'settings'>): number | null {
  const minutes = row.settings.device_timeout_minutes;
  return minutes === null ? null : Math.ceil(minutes * 60);
}

/** Creates the attempts in `tx`; answers those created dispatched here (to send once `tx` commits). */
export async function queueAttempts(
  tx: Queryable,
  transitions: UpdateTransitions,
  row: Pick<repo.DeploymentRow, 'id' | 'organization_id' | 'version' | 'settings'>,
  due: readonly DueDevice[],
): Promise<Attempt[]> {
  if (due.length === 0) return [];
  const timeoutSeconds = attemptTimeoutSeconds(row);
  const created = await transitions.createAttempts(
    due.map((device) => ({
      id: device.update_id ?? newId('upd'),
      organizationId: row.organization_id,
      deviceId: device.device_id,
      deploymentId: row.id,
      kind: 'update' as const,
      targetVersion: row.version,
      fromVersion: device.current_version,
      force: row.settings.force,
      timeoutSeconds,
      overrideLockAt: row.settings.force_after ? new Date(row.settings.force_after) : null,
      dispatched: device.here,
      maxBytesPerSecond: device.max_bytes_per_second ?? null,
      windowEndsAt: device.window_ends_at ?? null,
    })),
    tx,
  );
  if (created.length < due.length) {
    const got = new Set(created.map((update) => update.device_id));
    const busy = due.filter((device) => !got.has(device.device_id));
    await repo.skipDevices(
      tx,
      row.id,
      await Promise.all(
        busy.map(async (device) => ({
          deviceId: device.device_id,
          reason: 'busy',
          detail: await findHolder(tx, row.organization_id, device.device_id),
        })),
      ),
    );
  }
  return created.filter((update) => update.status === 'dispatched');
}
