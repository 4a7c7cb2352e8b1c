/**
 * The tunnel wire format, shared by the server, the agent, the simulator and the CLI.
 *
 * It is the format EdgeFlow devices already speak (their Go tunnel agent): every message is
 * one JSON text frame whose fields are present only when they apply. Our own actions
 * (OTA reports, link refresh) ride on the generic `command`/`response` envelopes, so an
 * unmodified EdgeFlow device still connects, pings and answers `health_check`.
 *
 * This module imports nothing but TypeBox and the text and version rules, so that the agent
 * can ship without the server.
 */
import { type Static, Type } from 'typebox';
import { Compile } from 'typebox/compile';
import { findForbiddenCharacter, PRINTABLE_PATTERN, replaceControlCharactersIn } from './text.ts';
import { MAX_VERSION_LENGTH, SEMVER_FORMAT } from './version.ts';

/** No control characters: identifiers and names end up in SQL and logs. */
const Printable = (options: { minLength?: number; maxLength: number }) =>
  Type.String({ ...options, pattern: PRINTABLE_PATTERN });
/** A strict semantic version as a device reports it. */
const Version = Type.String({ minLength: 5, maxLength: MAX_VERSION_LENGTH, format: SEMVER_FORMAT });

/**
 * One tunnel frame. Every field but `type` is optional, as on the wire. Identifiers are
 * Printable (a control character refuses the frame); free text (`error`, payload strings) has
 * its control characters replaced by `parseFrame`.
 */
export const Envelope = Type.Object(
  {
    type: Type.String({ minLength: 1, maxLength: 32 }),
    id: Type.Optional(Printable({ maxLength: 128 })),
    device_id: Type.Optional(Printable({ maxLength: 128 })),
    api_key: Type.Optional(Printable({ maxLength: 256 })),
    /** The agent's own version (free-form: not every EdgeFlow agent uses semver). */
    version: Type.Optional(Printable({ maxLength: 64 })),
    action: Type.Optional(Printable({ maxLength: 64 })),
    payload: Type.Optional(Type.Unknown()),
    status: Type.Optional(Type.Union([Type.Literal('success'), Type.Literal('error')])),
    data: Type.Optional(Type.Unknown()),
    /** "code: message" (see wire-error.ts); EdgeFlow devices read it as a plain string. */
    error: Type.Optional(Type.String({ maxLength: 4096 })),
    /** The code of `error` alone; read leniently (readWireError), absent from older peers. */
    error_code: Type.Optional(Type.String({ maxLength: 64 })),
    timestamp: Type.Optional(Type.String({ maxLength: 64 })),
  },
  { additionalProperties: true },
);
export type Envelope = Static<typeof Envelope>;

const envelopeValidator = Compile(Envelope);

/**
 * Result of parsing one text frame: the envelope, or the reason it is not one (with the
 * frame's `type` and `id` when it had them, so a refused command can still be answered).
 */
export type ParsedFrame =
  | { ok: true; message: Envelope }
  | { ok: false; reason: string; type?: string | undefined; id?: string | undefined };

export function parseFrame(text: string): ParsedFrame {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, reason: 'malformed JSON' };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, reason: 'a frame must be a JSON object' };
  }
  const fields = value as Record<string, unknown>;
  const context = {
    type: typeof fields.type === 'string' ? fields.type : undefined,
    id: typeof fields.id === 'string' && !fields.id.includes('\u0000') ? fields.id : undefined,
  };
  const forbidden = findForbiddenCharacter(value);
  if (forbidden !== undefined) {
    return {
      ok: false,
      reason: `NUL characters and unpaired surrogates are not allowed (at ${forbidden})`,
      ...context,
    };
  }
  if (!envelopeValidator.Check(value)) {
    const first = [...envelopeValidator.Errors(value)][0];
    const reason = `invalid envelope: ${first?.instancePath || '/'} ${first?.message ?? ''}`.trim();
    return { ok: false, reason, ...context };
  }
  // Identifiers with a control character were refused above; in any other text (error
  // messages, payloads) each one is replaced, so none is stored, forwarded or printed (text.ts).
  return { ok: true, message: replaceControlCharactersIn(value as Envelope) };
}

/**
 * A payload already encoded as JSON: the same update goes to thousands of devices, so all of it
 * but its per-device head (`{"update_id":"…",`) is encoded once, as bytes, and each frame is one
 * buffer of the envelope, the head and those shared bytes (encodeCommandFrame): no string of the
 * whole command is made per device, nor converted again by the socket.
 */
export class EncodedPayload {
  constructor(
    readonly head: string,
    readonly tail: Buffer,
  ) {}
}

export function encodeFrame(message: Envelope): string {
  return JSON.stringify({ ...message, timestamp: message.timestamp ?? timestampNow() });
}

let stampedAtMs = Number.NaN;
let stamp = '';

/** Now as an ISO timestamp, made once per millisecond: a rollout stamps thousands of frames in one. */
function timestampNow(): string {
  const now = Date.now();
  if (now !== stampedAtMs) {
    stampedAtMs = now;
    stamp = new Date(now).toISOString();
  }
  return stamp;
}

/**
 * A command whose payload was encoded once (EncodedPayload), as the bytes of a text frame: the
 * envelope and the payload's head written into one buffer, the shared rest copied after them.
 */
export function encodeCommandFrame(id: string, action: string, payload: EncodedPayload): Buffer {
  const head = `{"type":"command","id":${JSON.stringify(id)},"action":${JSON.stringify(action)},"timestamp":"${timestampNow()}","payload":${payload.head}`;
  const headBytes = Buffer.byteLength(head);
  const frame = Buffer.allocUnsafe(headBytes + payload.tail.length + 1);
  frame.write(head, 0);
  payload.tail.copy(frame, headBytes);
  frame[frame.length - 1] = 0x7d; // the envelope's closing brace
  return frame;
}

/** Close codes the server uses; 4xxx are application codes, readable by any WebSocket client. */
export const CloseCode = {
  normal: 1000,
  goingAway: 1001,
  protocolError: 1002,
  unsupportedData: 1003,
  policyViolation: 1008,
  tooBig: 1009,
  /** The server is restarting: come back soon (with jitter), not after a grown backoff. */
  serviceRestart: 1012,
  /** Too many failed authentications from this address: wait before trying again. */
  tryAgainLater: 1013,
  authTimeout: 4001,
  authFailed: 4003,
  replaced: 4009,
  heartbeatTimeout: 4008,
} as const;

/** Cloud → device actions. */
export const CloudAction = {
  healthCheck: 'health_check',
  otaUpdate: 'ota_update',
  otaCancel: 'ota_cancel',
} as const;

/** Device → cloud actions. */
export const DeviceAction = {
  /** The device's firmware state, sent after every `connected`. */
  deviceInfo: 'device_info',
  otaProgress: 'ota_progress',
  otaResult: 'ota_result',
  /** The download link expired: ask for a fresh one. */
  otaRefreshUrl: 'ota_refresh_url',
  /** An offline bundle it installed (or failed to) while the server was out of reach; resent until acknowledged. */
  offlineInstall: 'offline_install',
  /** The device's update lock was taken, changed or released (DeviceLockPayload); resent until acknowledged. */
  deviceLock: 'device_lock',
} as const;

/** The error code of an `ota_update` a locked device refuses (without `override_lock`); the message is the lock's reason. */
export const DEVICE_LOCKED = 'device_locked';

/** One holder of a device's update lock: a file in the agent's lock directory. */
export const DeviceLockHolder = Type.Object(
  {
    name: Printable({ minLength: 1, maxLength: 64 }),
    reason: Type.String({ maxLength: 512 }),
    /** ISO date-time after which this holder's lock counts as released; absent: until removed. */
    until: Type.Optional(Type.String({ maxLength: 64 })),
    since: Type.Optional(Type.String({ maxLength: 64 })),
  },
  { additionalProperties: true },
);
export type DeviceLockHolder = Static<typeof DeviceLockHolder>;

/**
 * A device's update lock as the agent sees it: `locked` while any holder's lock is in force;
 * `reason` (the holders' reasons), `until` (the latest expiry; absent when one holds it until it
 * is removed) and `since` (the earliest holder) describe it.
 */
export const DeviceLockPayload = Type.Object(
  {
    locked: Type.Boolean(),
    reason: Type.Optional(Type.String({ maxLength: 1024 })),
    until: Type.Optional(Type.String({ maxLength: 64 })),
    since: Type.Optional(Type.String({ maxLength: 64 })),
    holders: Type.Optional(Type.Array(DeviceLockHolder, { maxItems: 64 })),
  },
  { additionalProperties: true },
);
export type DeviceLockPayload = Static<typeof DeviceLockPayload>;

/**
 * What a device answers to `health_check`. Only `status` decides; the other fields are read
 * leniently because EdgeFlow devices differ (stock ones send `"uptime": "TODO"`).
 */
export const HealthCheckData = Type.Object(
  {
    status: Type.String({ minLength: 1, maxLength: 256 }),
    version: Type.Optional(Type.Unknown()),
    uptime: Type.Optional(Type.Unknown()),
  },
  { additionalProperties: true },
);
export type HealthCheckData = Static<typeof HealthCheckData>;

export const DeviceInfoPayload = Type.Object(
  {
    current_version: Version,
    agent_version: Type.Optional(Printable({ maxLength: 64 })),
    /** The update the device is in the middle of, if any, so the server can resume it. */
    update_id: Type.Optional(Printable({ maxLength: 128 })),
    /** The slot an A/B device booted (`a`, `b`, a RAUC slot name), so the server knows where it runs. */
    slot: Type.Optional(Printable({ minLength: 1, maxLength: 64 })),
    /** The kernel's id of the running boot (/proc/sys/kernel/random/boot_id): changes at every reboot. */
    boot_id: Type.Optional(Printable({ minLength: 1, maxLength: 64 })),
    /**
     * Why the agent cannot work (its installer failed at start: no RAUC service, both U-Boot
     * environment copies corrupt …). Absent when it runs normally; `current_version` is then the
     * last version the agent knew running.
     */
    health_error: Type.Optional(Type.String({ minLength: 1, maxLength: 2048 })),
    /** The device's update lock (absent from agents that have none: as if unlocked). */
    lock: Type.Optional(DeviceLockPayload),

    /** The device's IANA time zone (its agent's `timezone` setting, else the system's): its maintenance windows are in it. */
    timezone: Type.Optional(Printable({ minLength: 1, maxLength: 64 })),
  },
  { additionalProperties: true },
);
export type DeviceInfoPayload = Static<typeof DeviceInfoPayload>;

/**
 * The signed statement that a firmware image may be installed. Signed with the
 * organization's Ed25519 key over `canonicalManifest(manifest)`.
 */
export const FirmwareManifest = Type.Object({
  organization_id: Type.String(),
  version: Type.String(),
  sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }),
  size: Type.Integer({ minimum: 1 }),
  /** `rollback` lets a device go to a lower version; it is bound to one device and one update. */
  kind: Type.Union([Type.Literal('update'), Type.Literal('rollback')]),
  device_id: Type.Optional(Type.String()),
  update_id: Type.Optional(Type.String()),
  issued_at: Type.String(),
});
export type FirmwareManifest = Static<typeof FirmwareManifest>;

/** The longest a server may ask a device to put off its download (OtaUpdatePayload.start_within_ms). */
export const MAX_START_WITHIN_MS = 600_000;

export const OtaUpdatePayload = Type.Object({
  update_id: Type.String({ minLength: 1, maxLength: 128 }),
  version: Type.String({ minLength: 1, maxLength: 64 }),
  url: Type.String({ minLength: 1 }),
  url_expires_at: Type.String(),
  size: Type.Integer({ minimum: 1 }),
  sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }),
  manifest: Type.Optional(FirmwareManifest),
  /** Base64 Ed25519 signature over the canonical manifest. */
  signature: Type.Optional(Type.String()),
  force: Type.Optional(Type.Boolean()),
  /**
   * The artifact's kind (src/protocol/artifact.ts). Optional: without it the agent reads the kind
   * from the extension the server keeps at the end of the download URL's path.
   */
  artifact_type: Type.Optional(Type.String({ minLength: 1, maxLength: 16 })),
  /**
   * Start the download at a random moment within this many milliseconds: in a fleet-wide rollout
   * the server spreads its devices' arrivals over the time its download slots take to serve them.
   * Absent or 0: at once. Devices that do not know it start at once (the server's line takes them).
   */
  start_within_ms: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_START_WITHIN_MS })),
  /**
   * Install even though the device's update lock is held (a deployment's `force_after` passed, an
   * admin's `force_lock`). Without it a locked device refuses with `device_locked`.
   */
  override_lock: Type.Optional(Type.Boolean()),
  /**
   * Download no faster than this many bytes per second: the device's share of its deployment's or
   * organization's byte budget (the server shares it out among the devices downloading at once;
   * links to an S3 store bypass the server, so the agent paces itself). Absent: unlimited.
   */
  max_bytes_per_second: Type.Optional(Type.Integer({ minimum: 1 })),
});
export type OtaUpdatePayload = Static<typeof OtaUpdatePayload>;

export const OtaCancelPayload = Type.Object({ update_id: Type.String({ minLength: 1, maxLength: 128 }) });
export type OtaCancelPayload = Static<typeof OtaCancelPayload>;

/** The agent's phases, in order of a successful update. */
export const OtaPhase = Type.Union([
  Type.Literal('queued'),
  Type.Literal('downloading'),
  Type.Literal('verifying'),
  Type.Literal('installing'),
  Type.Literal('rebooting'),
  Type.Literal('health_checking'),
  Type.Literal('committing'),
  Type.Literal('completed'),
  Type.Literal('reverting'),
  Type.Literal('failed'),
]);
export type OtaPhase = Static<typeof OtaPhase>;

export const OtaProgressPayload = Type.Object({
  update_id: Type.String({ minLength: 1, maxLength: 128 }),
  phase: OtaPhase,
  progress: Type.Integer({ minimum: 0, maximum: 100 }),
  bytes_downloaded: Type.Optional(Type.Integer({ minimum: 0 })),
});
export type OtaProgressPayload = Static<typeof OtaProgressPayload>;

/** Stable reasons a device gives for a failed update. */
export const OtaFailureCode = Type.Union([
  Type.Literal('download_failed'),
  Type.Literal('checksum_mismatch'),
  Type.Literal('signature_invalid'),
  Type.Literal('signature_required'),
  Type.Literal('downgrade_refused'),
  Type.Literal('install_failed'),
  Type.Literal('boot_failed'),
  Type.Literal('health_check_failed'),
  Type.Literal('cancelled'),
  Type.Literal('busy'),
  Type.Literal('invalid_command'),
  /** The firmware is not of a kind this device's installer takes, or (RAUC) its bundle is for another version or system. */
  Type.Literal('artifact_mismatch'),
]);
export type OtaFailureCode = Static<typeof OtaFailureCode>;

export const OtaResultPayload = Type.Object({
  update_id: Type.String({ minLength: 1, maxLength: 128 }),
  status: Type.Union([Type.Literal('completed'), Type.Literal('failed')]),
  /** The version the device runs now: the new one on success, the previous one on failure. */
  current_version: Version,
  previous_version: Type.Optional(Version),
  error: Type.Optional(Type.Object({ code: OtaFailureCode, message: Type.String({ maxLength: 2048 }) })),
});
export type OtaResultPayload = Static<typeof OtaResultPayload>;

export const OtaRefreshUrlPayload = Type.Object({ update_id: Type.String({ minLength: 1, maxLength: 128 }) });
export const OtaRefreshUrlData = Type.Object({ url: Type.String(), url_expires_at: Type.String() });
export type OtaRefreshUrlData = Static<typeof OtaRefreshUrlData>;

/**
 * What a device reports of an offline bundle (offline-bundle.ts) it installed from a file: sent
 * on the next connect, before its `device_info`, and resent until acknowledged.
 */
export const OfflineInstallPayload = Type.Object({
  bundle_id: Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9_-]+$' }),
  version: Version,
  from_version: Version,
  installed_at: Type.String({ minLength: 1, maxLength: 64 }),
  result: Type.Union([Type.Literal('completed'), Type.Literal('failed')]),
  /** The version it runs after it: `version` when completed, `from_version` after a failure. */
  current_version: Version,
  error: Type.Optional(Type.Object({ code: OtaFailureCode, message: Type.String({ maxLength: 2048 }) })),
  /**
   * The bundle's signed manifest and signature, as the device checked them: the server records
   * an offline install only of a bundle signed with its organization's key (else an observed
   * version change). Absent from an agent older than this field.
   */
  manifest: Type.Optional(Type.Unknown()),
  signature: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
});
export type OfflineInstallPayload = Static<typeof OfflineInstallPayload>;

/** Compiled validators for the payloads, so both ends check them the same way. */
export const validate = {
  healthCheckData: Compile(HealthCheckData),
  deviceInfo: Compile(DeviceInfoPayload),
  otaUpdate: Compile(OtaUpdatePayload),
  otaCancel: Compile(OtaCancelPayload),
  otaProgress: Compile(OtaProgressPayload),
  otaResult: Compile(OtaResultPayload),
  otaRefreshUrl: Compile(OtaRefreshUrlPayload),
  otaRefreshUrlData: Compile(OtaRefreshUrlData),
  deviceLock: Compile(DeviceLockPayload),
  manifest: Compile(FirmwareManifest),
  offlineInstall: Compile(OfflineInstallPayload),
};

/** Why `value` fails `validator`, naming the field (`/current_version must match format "semver"`). */
export function payloadProblem(
  validator: { Errors(value: unknown): Iterable<{ instancePath: string; message: string }> },
  value: unknown,
): string {
  const [first] = validator.Errors(value);
  return first ? `${first.instancePath || '/'} ${first.message}` : 'invalid';
}

/** Default timings, in the units their names say. */
export const TunnelDefaults = {
  connectTimeoutMs: 10_000,
  heartbeatIntervalMs: 30_000,
  commandTimeoutMs: 30_000,
  maxFrameBytes: 64 * 1024,
  reconnectBaseMs: 1_000,
  reconnectCapMs: 60_000,
  /**
   * After the server said it restarts (1012) or goes away (1001), reconnects wait a random
   * 0 … this long (no herd), and keep that short cap until connected again.
   */
  restartJitterMs: 5_000,
  /** How long after a 1012/1001 the short restart delay applies (restarts take seconds). */
  restartWindowMs: 120_000,
} as const;

/** Exponential backoff with full jitter (AWS architecture blog), capped; retries forever. */
export function backoffDelayMs(attempt: number, baseMs: number, capMs: number, random = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}
