/**
 * Fault injection for simulated devices: which device gets which fault (exact shares, picked
 * deterministically from a seed, so a run can be repeated), and the pieces that make the real
 * agent misbehave the way a real device would.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { MemoryDownloadSink, type StepHook } from '../agent/index.ts';

export const FAULTS = ['offline', 'corrupt', 'installFailure', 'bootFailure', 'downloadDrop', 'slowLink'] as const;

/**
 * - `offline`: never connects.
 * - `corrupt`: the downloaded bytes arrive with one byte flipped → `checksum_mismatch`.
 * - `installFailure`: the installer throws → `install_failed`.
 * - `bootFailure`: the new version never comes up, the bootloader falls back → `boot_failed`.
 * - `downloadDrop`: the download connection drops once mid-way; the agent resumes it with Range.
 * - `slowLink`: every downloaded chunk waits a while (a throttled link).
 */
export type Fault = (typeof FAULTS)[number];

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
}

export const defaultFaultTuning: FaultTuning = { slowLinkChunkDelayMs: 50, dropAfterChunks: 2 };

/** The agent's step hook for a device with this fault; `undefined` when the fault needs none. */
export function faultStepHook(fault: Fault | null, tuning: FaultTuning): StepHook | undefined {
  if (fault === 'slowLink') {
    return async (step) => {
      if (step === 'download:chunk') await sleep(tuning.slowLinkChunkDelayMs);
    };
  }
  if (fault === 'downloadDrop') {
    let chunks = 0;
    let dropped = false;
    return (step) => {
      // The downloader treats a throw after a chunk exactly like a connection reset.
      if (step === 'download:chunk' && !dropped && ++chunks >= tuning.dropAfterChunks) {
        dropped = true;
        throw new Error('simulated connection drop');
      }
    };
  }
  return undefined;
}

/**
 * A memory sink that counts every byte it was handed, so a run can tell a download resumed with
 * Range (received == size) from one that started over (received > size), and that flips a byte of
 * the first chunk when the device is meant to receive corrupted firmware.
 */
export class SimulatedSink extends MemoryDownloadSink {
  received = 0;
  private corruptNext: boolean;

  constructor(corrupt: boolean) {
    super();
    this.corruptNext = corrupt;
  }

  override async append(chunk: Uint8Array): Promise<void> {
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
