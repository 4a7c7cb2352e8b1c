/**
 * Fault injection for simulated devices: which device gets which fault (exact shares, picked
 * deterministically from a seed, so a run can be repeated), and the pieces that make the real
 * agent misbehave the way a real device would.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type HealthVerdict,
  type InstallImage,
  MemoryDownloadSink,
  MemoryInstaller,
  type StepHook,
} from '../agent/index.ts';

// New faults go at the end: the plan walks this list in order, so appending one leaves the
// devices of the others (for the same seed and shares) where they were.
export const FAULTS = [
  'offline',
  'corrupt',
  'installFailure',
  'bootFailure',
  'downloadDrop',
  'slowLink',
  'downloadError',
  'healthCheckFailure',
  'bakeOffline',
  'bakeRevert',
] as const;

/**
 * - `offline`: never connects.
 * - `corrupt`: the downloaded bytes arrive with one byte flipped → `checksum_mismatch`.
 * - `installFailure`: the installer throws → `install_failed`.
 * - `bootFailure`: the new version never comes up, the bootloader falls back → `boot_failed`.
 * - `downloadDrop`: the download connection drops once mid-way; the agent resumes it with Range.
 * - `slowLink`: every downloaded chunk waits a while (a throttled link).
 * - `downloadError`: every download attempt breaks before its first byte; the agent retries,
 *   then gives up → `download_failed`.
 * - `healthCheckFailure`: the new version boots, but its trial health check fails; the agent
 *   reverts → `health_check_failed`.
 * - `bakeOffline`: the update completes (committed, `completed` reported), then, within the
 *   bake, the device dies and stays offline for good.
 * - `bakeRevert`: the update completes, then, within the bake, the new version crashes and the
 *   bootloader falls back to the previous one: the device reconnects reporting its old version
 *   (`device_info`) and answers `health_check` with `unhealthy` from then on.
 *
 * Every fault but `offline` hits only updates to the fault version when one is set (see
 * `faultApplies`), so a rollback, or the next fixed version, gets through.
 */
export type Fault = (typeof FAULTS)[number];

/** Faults that strike after the update completed, while the server bakes it. */
export const BAKE_FAULTS: readonly Fault[] = ['bakeOffline', 'bakeRevert'];

/**
 * Whether a device's fault strikes an update to `targetVersion`: any update when no fault
 * version is set, else only updates to that version. Without an update under way, nothing strikes.
 */
export function faultApplies(faultVersion: string | undefined, targetVersion: string | undefined): boolean {
  if (targetVersion === undefined) return false;
  return faultVersion === undefined || faultVersion === targetVersion;
}

/** Percentage (0–100) of the fleet per fault; the shares are disjoint, so they add up to at most 100. */
export type FaultPercentages = Partial<Record<Fault, number>>;

export function validateFaultPercentages(percentages: FaultPercentages): void {
  let total = 0;
  for (const fault of FAULTS) {
    const share = percentages[fault] ?? 0;
    if (!Number.isFinite(share) || share < 0 || share > 100) {
      throw new RangeError(`the ${fault} share must be a percentage between 0 and 100, got ${share}`);
    }
    total += share;
  }
  if (total > 100) throw new RangeError(`fault shares add up to ${total} %; one device gets one fault at most`);
}

/**
 * The fault of each of `count` devices (by index), `null` for a healthy one: exactly
 * round(count × share) devices per fault, spread over the fleet by a shuffle seeded with `seed`.
 */
export function planFaults(count: number, percentages: FaultPercentages, seed: number): (Fault | null)[] {
  validateFaultPercentages(percentages);
  const plan: (Fault | null)[] = new Array(count).fill(null);
  const order = Array.from({ length: count }, (_, index) => index);
  const random = mulberry32(seed);
  for (let i = count - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  let next = 0;
  for (const fault of FAULTS) {
    const share = Math.min(Math.round((count * (percentages[fault] ?? 0)) / 100), count - next);
    for (let k = 0; k < share; k++) plan[order[next++]!] = fault;
  }
  return plan;
}

/** A small, fast, seedable PRNG: Math.random cannot be seeded, and the plan must be repeatable. */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface FaultTuning {
  /** Delay per downloaded chunk (~64 KiB) on a slow link. */
  slowLinkChunkDelayMs: number;
  /** The chunk after which the download connection drops. */
  dropAfterChunks: number;
  /** How long after the update completed a bake fault strikes (later if the server has not acknowledged it yet). */
  bakeCrashAfterMs: number;
}

export const defaultFaultTuning: FaultTuning = {
  slowLinkChunkDelayMs: 50,
  dropAfterChunks: 2,
  bakeCrashAfterMs: 5_000,
};

/**
 * The agent's step hook for a device with this fault; `undefined` when the fault needs none.
 * `strikes` tells whether the fault hits the update under way (see `faultApplies`).
 */
export function faultStepHook(fault: Fault | null, tuning: FaultTuning, strikes: () => boolean): StepHook | undefined {
  if (fault === 'slowLink') {
    return async (step) => {
      if (step === 'download:chunk' && strikes()) await sleep(tuning.slowLinkChunkDelayMs);
    };
  }
  if (fault === 'downloadDrop') {
    let chunks = 0;
    let dropped = false;
    return (step) => {
      // The downloader treats a throw after a chunk exactly like a connection reset.
      if (step === 'download:chunk' && !dropped && strikes() && ++chunks >= tuning.dropAfterChunks) {
        dropped = true;
        throw new Error('simulated connection drop');
      }
    };
  }
  return undefined;
}

/**
 * The in-memory installer with the install and boot faults decided per image: an image the
 * fault does not strike (a rollback, another version) installs and boots normally.
 */
export class SimulatedInstaller extends MemoryInstaller {
  constructor(
    initialVersion: string,
    private readonly fault: Fault | null,
    private readonly strikes: (version: string) => boolean,
  ) {
    super({ initialVersion });
  }

  override async install(image: InstallImage): Promise<void> {
    const struck = this.strikes(image.version);
    this.failInstall = struck && this.fault === 'installFailure';
    this.failBoot = struck && this.fault === 'bootFailure';
    return super.install(image);
  }
}

/**
 * A simulated device's health: `crashedFrom` is the version a bake fault crashed out of (the
 * device stays unhealthy after it); `trialFails` whether the version under test is a trial the
 * fault makes fail.
 */
export function simulatedHealth(state: { crashedFrom: string | undefined; trialFails: boolean }): HealthVerdict {
  if (state.crashedFrom !== undefined) {
    return { healthy: false, message: `simulated crash: ${state.crashedFrom} crashed during its bake` };
  }
  if (state.trialFails) return { healthy: false, message: 'simulated health check failure' };
  return { healthy: true, message: 'ok' };
}

/** How a simulated sink spoils a download. */
export type SinkFault = 'corrupt' | 'unreachable' | null;

/**
 * A memory sink that counts every byte it was handed, so a run can tell a download resumed with
 * Range (received == size) from one that started over (received > size); it flips a byte of the
 * first chunk when the device is meant to receive corrupted firmware (`corrupt`), and refuses
 * every byte when the link is meant to break before any arrives (`unreachable`): the downloader
 * sees no progress, retries, and gives up as it would on a dead link.
 */
export class SimulatedSink extends MemoryDownloadSink {
  received = 0;
  private corruptNext: boolean;
  private readonly unreachable: boolean;

  constructor(fault: SinkFault) {
    super();
    this.corruptNext = fault === 'corrupt';
    this.unreachable = fault === 'unreachable';
  }

  override async append(chunk: Uint8Array): Promise<void> {
    if (this.unreachable) throw new Error('simulated download error: the connection broke before any byte arrived');
    this.received += chunk.byteLength;
    if (this.corruptNext && chunk.byteLength > 0) {
      this.corruptNext = false;
      // A copy: the chunk may be a view into a buffer the HTTP stack still owns.
      const damaged = Uint8Array.from(chunk);
      damaged[0] = damaged[0]! ^ 0xff;
      return super.append(damaged);
    }
    return super.append(chunk);
  }
}
