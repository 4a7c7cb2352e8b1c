import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { OtaFailureCode, OtaPhase, OtaResultPayload, OtaUpdatePayload } from '../protocol/tunnel.ts';
import { readJsonIfExists, writeJsonAtomic } from './atomic-file.ts';

/** The update the device is working on, as it must survive a power cut. */
export interface OtaJob {
  payload: OtaUpdatePayload;
  phase: OtaPhase;
  /** The version the device ran when it accepted the update: what a failure leaves it on. */
  previous_version: string;
  bytes_downloaded: number;
  download_attempts: number;
  cancel_requested: boolean;
  /** Decided after install, kept while the revert is under way. */
  failure?: { code: OtaFailureCode; message: string };
  accepted_at: string;
}

export interface RecordedResult {
  payload: OtaResultPayload;
  acknowledged: boolean;
}

export interface OtaState {
  job: OtaJob | null;
  /** Finished updates, newest last: the unacknowledged ones to resend, the others to recognise duplicates. */
  results: RecordedResult[];
}

export function emptyOtaState(): OtaState {
  return { job: null, results: [] };
}

export interface OtaStateStore {
  load(): Promise<OtaState>;
  /** Durable when the promise resolves. */
  save(state: OtaState): Promise<void>;
}

/** `<dataDir>/ota-state.json`, replaced atomically; saves are serialised so an older snapshot never lands last. */
export class FileOtaStateStore implements OtaStateStore {
  private queue: Promise<void> = Promise.resolve();

  constructor(readonly path: string) {}

  async load(): Promise<OtaState> {
    const stored = (await readJsonIfExists(this.path)) as Partial<OtaState> | undefined;
    return { job: stored?.job ?? null, results: stored?.results ?? [] };
  }

  save(state: OtaState): Promise<void> {
    const snapshot = structuredClone(state);
    const write = this.queue.then(async () => {
      await mkdir(dirname(this.path), { recursive: true });
      await writeJsonAtomic(this.path, snapshot);
    });
    this.queue = write.catch(() => {});
    return write;
  }
}

/** For simulated devices: "persisted" for as long as the process lives. */
export class MemoryOtaStateStore implements OtaStateStore {
  private state: OtaState = emptyOtaState();

  async load(): Promise<OtaState> {
    return structuredClone(this.state);
  }

  async save(state: OtaState): Promise<void> {
    this.state = structuredClone(state);
  }
}
