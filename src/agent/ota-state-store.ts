/**
 * The agent's OTA state on disk: the update in progress and the results not yet forgotten,
 * as one JSON file whose schema is the type (`OtaStateFile`) and carries a format version.
 *
 * What is read back is checked against that schema before the agent acts on it. A file it
 * cannot use — not JSON, not this shape, or written by a newer agent in a format this one does
 * not know — is set aside (`<file>.discarded`, the previous one replaced) with an error line
 * saying why, and the agent starts with no update in progress: it never crash-loops on its
 * own state. The server learns what the device runs from `device_info` at the next connect,
 * and a trial boot nobody can confirm any more is reverted (OtaHandler).
 */
import { mkdir, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { type Static, Type } from 'typebox';
import { Compile } from 'typebox/compile';
import {
  OfflineInstallPayload,
  OtaFailureCode,
  OtaPhase,
  OtaResultPayload,
  OtaUpdatePayload,
} from '../protocol/tunnel.ts';
import { readJsonIfExists, writeJsonAtomic } from './atomic-file.ts';
import { errorMessage, type Logger } from './logger.ts';

const Failure = Type.Object({ code: OtaFailureCode, message: Type.String() });

/** The update the device is working on, as it must survive a power cut. */
export const OtaJob = Type.Object({
  payload: OtaUpdatePayload,
  phase: OtaPhase,
  /** The version the device ran when it accepted the update: what a failure leaves it on. */
  previous_version: Type.String({ minLength: 1 }),
  bytes_downloaded: Type.Integer({ minimum: 0 }),
  download_attempts: Type.Integer({ minimum: 0 }),
  cancel_requested: Type.Boolean(),
  /** Decided after install, kept while the revert is under way. */
  failure: Type.Optional(Failure),
  accepted_at: Type.String(),
  /** An offline bundle installed from a file (`edgeflow-agent install`): where its image is read from. */
  offline: Type.Optional(
    Type.Object({
      bundle_id: Type.String(),
      bundle_path: Type.String(),
      image_offset: Type.Integer({ minimum: 0 }),
      /** The signed manifest and its signature, reported with the install (absent: a state written before them). */
      manifest: Type.Optional(Type.Unknown()),
      signature: Type.Optional(Type.String()),
    }),
  ),
});
export type OtaJob = Static<typeof OtaJob>;

export const RecordedResult = Type.Object({
  payload: OtaResultPayload,
  acknowledged: Type.Boolean(),
  /** The job was an offline install: reported as `offline_install` rather than `ota_result`. */
  offline: Type.Optional(OfflineInstallPayload),
});
export type RecordedResult = Static<typeof RecordedResult>;

export const OtaState = Type.Object({
  job: Type.Union([OtaJob, Type.Null()]),
  /** Finished updates, newest last: the unacknowledged ones to resend, the others to recognise duplicates. */
  results: Type.Array(RecordedResult),
});
export type OtaState = Static<typeof OtaState>;

/**
 * Format 1. Format 0 is the same content without `format_version` (agents before it was
 * added): it is read as format 1 and rewritten as such by the next save. A format change
 * that is not a pure addition gets a new number and a migration in `readStateFile`.
 */
export const otaStateFormatVersion = 1;
export const OtaStateFile = Type.Object({
  format_version: Type.Literal(otaStateFormatVersion),
  job: OtaState.properties.job,
  results: OtaState.properties.results,
});
export type OtaStateFile = Static<typeof OtaStateFile>;

const stateValidator = Compile(OtaState);
const fileValidator = Compile(OtaStateFile);

export function emptyOtaState(): OtaState {
  return { job: null, results: [] };
}

/** What a stored file holds: a usable state (perhaps migrated), or why it cannot be used. */
export type StateFileReading = { ok: true; state: OtaState; migratedFrom?: number } | { ok: false; reason: string };

/** Checks and, for an older format, migrates the parsed content of a state file. Pure. */
export function readStateFile(stored: unknown): StateFileReading {
  if (typeof stored !== 'object' || stored === null || Array.isArray(stored)) {
    return { ok: false, reason: 'not a JSON object' };
  }
  const version = (stored as { format_version?: unknown }).format_version;
  if (version === undefined) {
    if (!stateValidator.Check(stored)) return { ok: false, reason: `format 0: ${firstError(stateValidator, stored)}` };
    return { ok: true, state: { job: stored.job, results: stored.results }, migratedFrom: 0 };
  }
  if (version !== otaStateFormatVersion) {
    return { ok: false, reason: `format_version ${JSON.stringify(version)} is not one this agent knows` };
  }
  if (!fileValidator.Check(stored)) return { ok: false, reason: firstError(fileValidator, stored) };
  return { ok: true, state: { job: stored.job, results: stored.results } };
}

function firstError(validator: typeof stateValidator | typeof fileValidator, value: unknown): string {
  const first = [...validator.Errors(value)][0];
  return `${first?.instancePath || '/'} ${first?.message ?? 'does not match the schema'}`.trim();
}

export interface OtaStateStore {
  load(): Promise<OtaState>;
  /** Durable when the promise resolves. */
  save(state: OtaState): Promise<void>;
}

/** `<dataDir>/ota-state.json`, replaced atomically; saves are serialised so an older snapshot never lands last. */
export class FileOtaStateStore implements OtaStateStore {
  private queue: Promise<void> = Promise.resolve();

  constructor(
    readonly path: string,
    private readonly logger: Logger,
  ) {}

  /** Where a state file that could not be used is kept for a post-mortem. */
  get discardedPath(): string {
    return `${this.path}.discarded`;
  }

  async load(): Promise<OtaState> {
    let stored: unknown;
    try {
      stored = await readJsonIfExists(this.path);
    } catch (error) {
      return this.discard(`${error instanceof SyntaxError ? 'not JSON' : 'unreadable'}: ${errorMessage(error)}`);
    }
    if (stored === undefined) return emptyOtaState();
    const reading = readStateFile(stored);
    if (!reading.ok) return this.discard(reading.reason);
    if (reading.migratedFrom !== undefined) {
      this.logger.info('OTA state file migrated', {
        path: this.path,
        from: reading.migratedFrom,
        to: otaStateFormatVersion,
      });
    }
    return reading.state;
  }

  save(state: OtaState): Promise<void> {
    const snapshot: OtaStateFile = { format_version: otaStateFormatVersion, ...structuredClone(state) };
    const write = this.queue.then(async () => {
      await mkdir(dirname(this.path), { recursive: true });
      await writeJsonAtomic(this.path, snapshot);
    });
    this.queue = write.catch(() => {});
    return write;
  }

  private async discard(reason: string): Promise<OtaState> {
    const kept = await rename(this.path, this.discardedPath).then(
      () => this.discardedPath,
      (error: unknown) => `nowhere (${errorMessage(error)})`,
    );
    this.logger.error('OTA state file unusable: starting without an update in progress', {
      path: this.path,
      reason,
      kept_as: kept,
    });
    return emptyOtaState();
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
