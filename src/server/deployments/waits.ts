/**
 * What keeps a due device of a running deployment from being sent its attempt now: its
 * maintenance window (in its own time zone) and the download budgets (the deployment's and its
 * organization's). Pure: the scheduler's chunk (attempts.ts) and the dry run read rows, call
 * these, and write what they say. A device that waits keeps its state and carries a reason of
 * model/deployment.ts WAIT_REASONS (`window` with when it may start, or `bandwidth`).
 */
import type { WaitReason } from '../model/deployment.ts';
import {
  type MaintenanceWindow,
  type Opening,
  openingsFrom,
  startIn,
  unitHash,
  type WindowStart,
} from '../model/maintenance-window.ts';

/** The windows, zone and budgets a deployment dispatches under: its own, else its organization's. */
export interface DispatchRules {
  windows: readonly MaintenanceWindow[];
  /** The zone of its devices that have none. */
  defaultTimeZone: string;
  jitterMs: number;
  /** The deployment's budget and its organization's (all its deployments together). */
  deployment: BudgetCaps;
  organization: BudgetCaps;
}

export interface BudgetCaps {
  maxConcurrentDownloads: number | null;
  maxBytesPerSecond: number | null;
}

/** Whether anything may hold a due device back: without, dispatch is as it always was. */
export function isConstrained(rules: DispatchRules): boolean {
  return (
    rules.windows.length > 0 ||
    [rules.deployment, rules.organization].some(
      (caps) => caps.maxConcurrentDownloads !== null || caps.maxBytesPerSecond !== null,
    )
  );
}

/** The rules of a deployment from its settings and its organization's. */
export function dispatchRulesOf(
  settings: {
    maintenance_windows?: MaintenanceWindow[] | null;
    max_concurrent_downloads?: number | null;
    max_bytes_per_second?: number | null;
  },
  organization: {
    maintenance_windows: MaintenanceWindow[];
    timezone: string;
    window_jitter_minutes: number;
    max_concurrent_downloads: number | null;
    max_bytes_per_second: number | null;
  },
): DispatchRules {
  return {
    windows: settings.maintenance_windows ?? organization.maintenance_windows,
    defaultTimeZone: organization.timezone,
    jitterMs: organization.window_jitter_minutes * 60_000,
    deployment: {
      maxConcurrentDownloads: settings.max_concurrent_downloads ?? null,
      maxBytesPerSecond: settings.max_bytes_per_second ?? null,
    },
    organization: {
      maxConcurrentDownloads: organization.max_concurrent_downloads,
      maxBytesPerSecond: organization.max_bytes_per_second,
    },
  };
}

/**
 * When the device may start in the deployment's windows, at or after `now`: `open` when it may
 * now, with when that window closes (null: no windows); null when the windows name no time at
 * all. Its offset within each window is its own (a hash of its id), the same at every pass and
 * in a dry run.
 */
export function windowStartOf(
  rules: Pick<DispatchRules, 'windows' | 'defaultTimeZone' | 'jitterMs'>,
  device: { device_id: string; timezone: string | null },
  now: Date,
  /** The openings per zone at `now`, shared by the devices of one pass. */
  openingsByZone: Map<string, Opening[]> = new Map(),
): WindowStart | null {
  if (rules.windows.length === 0) return { at: now, open: true, closesAt: null };
  const zone = device.timezone ?? rules.defaultTimeZone;
  let openings = openingsByZone.get(zone);
  if (!openings) {
    openings = openingsFrom(rules.windows, zone, now.getTime());
    openingsByZone.set(zone, openings);
  }
  return startIn(openings, now, { unit: unitHash(device.device_id), jitterMs: rules.jitterMs });
}

/**
 * The least share of a byte budget a device is given: a budget of bytes alone (no count) is
 * shared among at most budget / this devices at once, so none crawls.
 */
export const MIN_DEVICE_SHARE_BYTES_PER_SECOND = 256 * 1024;

/** Downloads of a scope (a deployment, or all of an organization's) under way now. */
export interface Downloading {
  /** Devices from dispatch until they report the download done (or end). */
  count: number;
  /** The rates those devices were given, summed; those given none count as the scope's share. */
  ratedBytesPerSecond: number;
  unrated: number;
}

/**
 * How many more devices may start downloading now, and the rate each is given, so that in every
 * scope the devices downloading at once stay within its count and the sum of their rates within
 * its bytes per second. A scope with a byte budget shares it among C devices, C = its count cap,
 * else budget / MIN_DEVICE_SHARE, and never more than the devices it has left to send
 * (`remaining`, the deployment's): each gets budget / C.
 */
export function admitDownloads(
  scopes: readonly { caps: BudgetCaps; downloading: Downloading }[],
  remaining: number,
): { admit: number; bytesPerSecond: number | null } {
  let admit = Number.POSITIVE_INFINITY;
  let rate: number | null = null;
  const shares: { budget: number; share: number; downloading: Downloading }[] = [];
  for (const { caps, downloading } of scopes) {
    if (caps.maxConcurrentDownloads !== null) admit = Math.min(admit, caps.maxConcurrentDownloads - downloading.count);
    if (caps.maxBytesPerSecond === null) continue;
    const concurrency = Math.max(
      1,
      Math.min(
        caps.maxConcurrentDownloads ?? Number.POSITIVE_INFINITY,
        Math.floor(caps.maxBytesPerSecond / MIN_DEVICE_SHARE_BYTES_PER_SECOND),
        downloading.count + Math.max(remaining, 1),
      ),
    );
    const share = Math.max(1, Math.floor(caps.maxBytesPerSecond / concurrency));
    shares.push({ budget: caps.maxBytesPerSecond, share, downloading });
    rate = rate === null ? share : Math.min(rate, share);
  }
  for (const { budget, share, downloading } of shares) {
    const inUse = downloading.ratedBytesPerSecond + downloading.unrated * share;
    admit = Math.min(admit, Math.floor((budget - inUse) / rate!));
  }
  return { admit: Math.max(0, admit), bytesPerSecond: rate };
}

/** A due device and what the pass decided: sent now, or waiting (with why). */
export interface DueDecision {
  device_id: string;
  /** null: sent now (or left for a later chunk); else why it waits. */
  reason: WaitReason | null;
  detail: string | null;
}

/**
 * The due devices (in the planned order) split into those sent now (at most `limit`, within
 * `admit`, each with when its window closes: its attempt goes out only until then) and those
 * that wait: outside their window (`window`, detail when they may start, or null when the
 * windows name no time), or inside it beyond the budget (`bandwidth`). Those inside their
 * window and budget but past `limit` (max_per_minute, a chunk) wait for nothing but the next chunk.
 */
export function decideDue<Device extends { device_id: string; timezone: string | null }>(
  due: readonly Device[],
  rules: DispatchRules,
  now: Date,
  admit: number,
  limit: number,
): { send: (Device & { window_ends_at: Date | null })[]; decisions: DueDecision[] } {
  const send: (Device & { window_ends_at: Date | null })[] = [];
  const decisions: DueDecision[] = [];
  let inWindow = 0;
  const openings = new Map<string, Opening[]>();
  for (const device of due) {
    const start = windowStartOf(rules, device, now, openings);
    if (!start?.open) {
      decisions.push({ device_id: device.device_id, reason: 'window', detail: start?.at.toISOString() ?? null });
      continue;
    }
    inWindow += 1;
    if (inWindow > admit) {
      decisions.push({ device_id: device.device_id, reason: 'bandwidth', detail: null });
    } else if (send.length < limit) {
      send.push({ ...device, window_ends_at: start.closesAt });
    } else {
      decisions.push({ device_id: device.device_id, reason: null, detail: null });
    }
  }
  return { send, decisions };
}

/**
 * When a batch is expected to run: the earliest start among its devices and the last one's, from
 * `from` (now, or the deployment's start); null when none has a window at all.
 */
export function expectedRun(
  devices: readonly { device_id: string; timezone: string | null }[],
  rules: DispatchRules,
  from: Date,
): { first_start_at: Date | null; last_start_at: Date | null } {
  let first: number | null = null;
  let last: number | null = null;
  const openings = new Map<string, Opening[]>();
  for (const device of devices) {
    const start = windowStartOf(rules, device, from, openings);
    if (!start) continue;
    const at = start.at.getTime();
    first = first === null ? at : Math.min(first, at);
    last = last === null ? at : Math.max(last, at);
  }
  return {
    first_start_at: first === null ? null : new Date(first),
    last_start_at: last === null ? null : new Date(last),
  };
}
