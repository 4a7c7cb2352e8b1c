/**
 * The device tunnel: one WebSocket per device at `/tunnel`, in the wire format EdgeFlow
 * devices already speak (see src/protocol/tunnel.ts). The hub is the transport: it
 * authenticates devices, answers heartbeats, carries cloud → device commands and hands
 * device → cloud requests to the handlers other domains register. What the database knows of
 * devices and replicas (online, last seen, which replica holds a tunnel) is presence.ts's.
 *
 * Per-connection state is kept small on purpose (one object, no per-connection timers once
 * connected): one process holds 15,000+ tunnels.
 */

import { randomUUID } from 'node:crypto';
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { type RawData, WebSocket, WebSocketServer } from 'ws';
import {
  CloseCode,
  CloudAction,
  DeviceAction,
  type DeviceInfoPayload,
  EncodedPayload,
  type Envelope,
  encodeCommandFrame,
  encodeFrame,
  type HealthCheckData,
  parseFrame,
  payloadProblem,
  validate,
} from '../../protocol/tunnel.ts';
import {
  errorFields,
  formatWireError,
  readWireError,
  TunnelErrorCode,
  type WireError,
} from '../../protocol/wire-error.ts';
import { deviceKey, findDevicesByKeyHashes } from '../devices/repo.ts';
import type { EventFeed } from '../events/feed.ts';
import { AuthFailureLimiter, clientAddress, retryAfterSeconds } from '../infra/auth-limiter.ts';
import { Batcher } from '../infra/batcher.ts';
import type { Config } from '../infra/config.ts';
import type { Db } from '../infra/db.ts';
import { AppError, ConflictError } from '../infra/errors.ts';
import type { Metrics } from '../infra/metrics.ts';
import { hashSecret } from '../infra/secrets.ts';
import { isTimeZone } from '../model/maintenance-window.ts';
import { Deadlines, type Waiting } from './deadlines.ts';
import type { GoneDevice, Presence, SeenDevice } from './presence.ts';

export class DeviceOfflineError extends ConflictError {
  constructor(deviceId: string, why = 'it has no open tunnel') {
    super('device_offline', `device ${deviceId} is offline: ${why}`);
  }
}

/** Its tunnel is open but it did not answer a command in time: it may not have seen it. */
export class DeviceUnresponsiveError extends ConflictError {
  constructor(deviceId: string, action: string, waitedMs: number) {
    super('device_unresponsive', `device ${deviceId} is online but did not answer ${action} within ${waitedMs} ms`);
  }
}

/** Online and answering, but not healthy, or its health answer cannot be used. */
export class DeviceUnhealthyError extends ConflictError {
  constructor(deviceId: string, why: string) {
    super('device_unhealthy', `device ${deviceId} is online but not ready for an update: ${why}`);
  }
}

/** The device answered a command with status `error`. */
export class DeviceCommandError extends Error {
  constructor(
    readonly action: string,
    readonly deviceError: WireError,
  ) {
    super(`device refused ${action}: ${formatWireError(deviceError)}`);
    this.name = 'DeviceCommandError';
  }
}

export interface DeviceRef {
  organizationId: string;
  deviceId: string;
}

/** The device behind a request, with when its current tunnel was established. */
export interface ConnectedDevice extends DeviceRef {
  connectedAtMs: number;
}

/** Handles one device → cloud action; its result is the response's `data`. */
export type DeviceRequestHandler = (device: ConnectedDevice, payload: unknown) => Promise<unknown>;

/**
 * After a device connected here said what it runs (and which update it is in the middle of);
 * `changedFrom`: the version on record before, when the report changed it.
 */
export type DeviceInfoListener = (device: ConnectedDevice, info: DeviceInfoPayload, changedFrom: string | null) => void;

/**
 * What a command's sender hears, once: the device's answer `data`, or why there is none. The
 * sender's `context` comes back with it, so that one function serves thousands of commands.
 */
export type CommandAnswered<C> = (context: C, error: Error | undefined, data?: unknown) => void;

interface PendingCommand extends Waiting {
  readonly id: string;
  readonly action: string;
  readonly link: DeviceLink;
  readonly waitMs: number;
  readonly answered: CommandAnswered<unknown>;
  readonly context: unknown;
}

interface PromiseSettlers {
  resolve(data: unknown): void;
  reject(error: Error): void;
}

const settlePromise: CommandAnswered<PromiseSettlers> = (promise, error, data) => {
  if (error) promise.reject(error);
  else promise.resolve(data);
};

/** Token bucket: a device may send this many frames in a burst, refilled at RATE per second. */
const FRAME_BURST = 200;
const FRAME_RATE_PER_SECOND = 100;
/** Frames refused (malformed, over the rate) between two sweeps before the link is closed. */
const MAX_REFUSED_PER_SWEEP = 100;
/**
 * An online device's last_seen_at is written at most this often (and so is at most this old, plus
 * a presence flush): 10,000 devices heard every heartbeat wrote 10,000 rows every flush, half a
 * second of the database's time each (P1 measured it). Going offline writes it at once.
 */
const LAST_SEEN_RESOLUTION_MS = 60_000;
/** Key lookups of devices connecting at once share one statement. */
const KEY_LOOKUP_BATCH = { maxSize: 1000, maxDelayMs: 5 };
/** Shared by every idle link, so an idle device costs no promise of its own. */
const SETTLED: Promise<void> = Promise.resolve();

class DeviceLink {
  organizationId = '';
  deviceId = '';
  authenticated = false;
  authenticating = false;
  connectedAtMs = 0;
  agentVersion: string | null = null;
  authTimer: NodeJS.Timeout | undefined;
  lastSeenMs = Date.now();
  /** The last-seen time last written for it (its connect writes one), spread: see LAST_SEEN_RESOLUTION_MS. */
  seenWrittenMs = Number.POSITIVE_INFINITY;
  tokens = FRAME_BURST;
  tokensAtMs = Date.now();
  refused = 0;
  /** Made with the link (not by the first command of a burst of ten thousand). */
  readonly pending = new Map<string, PendingCommand>();
  /** The tail of this device's requests being handled, in arrival order. */
  requests: Promise<void> = SETTLED;

  constructor(
    readonly socket: WebSocket,
    /** The source address, for the failed-authentication limit. */
    readonly address: string,
  ) {}

  get key(): string {
    return deviceKey(this.organizationId, this.deviceId);
  }

  /** False when the device has used up its frame budget. */
  takeToken(nowMs: number): boolean {
    this.tokens = Math.min(FRAME_BURST, this.tokens + ((nowMs - this.tokensAtMs) / 1000) * FRAME_RATE_PER_SECOND);
    this.tokensAtMs = nowMs;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

/** What devices say when all is well: EdgeFlow devices answer `healthy`; `ok` is common elsewhere. */
function isHealthyStatus(status: string): boolean {
  return ['healthy', 'ok'].includes(status.trim().toLowerCase());
}

/**
 * Asks a device whether it is healthy with `command` (through its tunnel here, or through the
 * replica that holds it). Offline or silent devices reject with DeviceOfflineError /
 * DeviceUnresponsiveError; a device that answers but is not healthy, or whose answer cannot be
 * read, with DeviceUnhealthyError. Only `status` is read: EdgeFlow devices differ in the rest
 * (their `uptime` is a string).
 */
export async function checkHealth(
  device: DeviceRef,
  command: (action: string, payload: unknown) => Promise<unknown>,
): Promise<HealthCheckData> {
  let data: unknown;
  try {
    data = await command(CloudAction.healthCheck, {});
  } catch (error) {
    if (error instanceof DeviceCommandError) {
      throw new DeviceUnhealthyError(
        device.deviceId,
        `it answered health_check with an error: ${formatWireError(error.deviceError)}`,
      );
    }
    throw error;
  }
  if (!validate.healthCheckData.Check(data)) {
    throw new DeviceUnhealthyError(
      device.deviceId,
      `its health_check answer has no status: ${JSON.stringify(data)?.slice(0, 200) ?? 'nothing'}`,
    );
  }
  if (!isHealthyStatus(data.status)) {
    throw new DeviceUnhealthyError(device.deviceId, `it reports status ${JSON.stringify(data.status.slice(0, 100))}`);
  }
  return data;
}

export interface TunnelHubDeps {
  config: Config;
  db: Db;
  metrics: Metrics;
  log: Logger;
  presence: Presence;
  feed: EventFeed;
}

export class TunnelHub {
  readonly #deps: TunnelHubDeps;
  readonly #links = new Map<string, DeviceLink>();
  readonly #handlers = new Map<string, DeviceRequestHandler>();
  readonly #wss: WebSocketServer;
  readonly #timers: NodeJS.Timeout[] = [];
  readonly #deviceByKeyHash: Batcher<string, { organization_id: string; device_id: string } | undefined>;
  readonly #infoListeners: DeviceInfoListener[] = [];
  /** Commands waiting for their answer, expired on a few shared timers. */
  readonly #deadlines = new Deadlines<PendingCommand>((pending) =>
    this.#answer(pending, new DeviceUnresponsiveError(pending.link.deviceId, pending.action, pending.waitMs)),
  );
  readonly #authFailures: AuthFailureLimiter;
  /** Draining: no new tunnel is accepted. */
  #closing = false;
  #closed = false;

  constructor(deps: TunnelHubDeps) {
    this.#deps = deps;
    this.#authFailures = new AuthFailureLimiter({
      maxFailures: deps.config.tunnelAuthFailuresMax,
      windowMs: deps.config.tunnelAuthFailureWindowMs,
      blockMs: deps.config.tunnelAuthBlockMs,
    });
    this.#wss = new WebSocketServer({
      noServer: true,
      maxPayload: deps.config.tunnelMaxFrameBytes,
      perMessageDeflate: false,
      clientTracking: false,
    });
    this.onDeviceRequest(DeviceAction.deviceInfo, (device, payload) => this.#onDeviceInfo(device, payload));
    this.#deviceByKeyHash = new Batcher(async (hashes) => {
      const found = new Map((await findDevicesByKeyHashes(deps.db, hashes)).map((row) => [row.key_hash, row]));
      return hashes.map((hash) => found.get(hash));
    }, KEY_LOOKUP_BATCH);
    // Wherever a device was deleted, the process holding its tunnel closes it.
    deps.feed.on('device_deleted', (device) =>
      this.disconnect(
        { organizationId: device.organization_id, deviceId: device.device_id },
        CloseCode.authFailed,
        'device deleted',
      ),
    );
  }

  /** Device → cloud actions; a later registration for the same action replaces the earlier. */
  onDeviceRequest(action: string, handler: DeviceRequestHandler): void {
    this.#handlers.set(action, handler);
  }

  /** The update engine reconciles a reconnected device with what it says it is doing. */
  onDeviceInfo(listener: DeviceInfoListener): void {
    this.#infoListeners.push(listener);
  }

  get connectedCount(): number {
    return this.#links.size;
  }

  isConnected(organizationId: string, deviceId: string): boolean {
    return this.#links.has(deviceKey(organizationId, deviceId));
  }

  attach(server: Server): void {
    server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
      const path = (request.url ?? '').split('?')[0];
      if (path !== '/tunnel') {
        socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
        return;
      }
      if (this.#closing) {
        // Shutting down: a load balancer retries the connect on another replica (retry-on 503), an
        // agent connecting directly comes back after its backoff.
        socket.end('HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n\r\n');
        return;
      }
      // A tunnel is long-lived and quiet between heartbeats: no HTTP idle timeout applies to it.
      (socket as Duplex & { setTimeout?: (ms: number) => void }).setTimeout?.(0);
      // Failed logins are judged at `connect`, where a valid key always passes (auth-limiter.ts).
      const address = clientAddress(request, this.#deps.config.trustProxy);
      this.#wss.handleUpgrade(request, socket, head, (ws) => this.#accept(ws, address));
    });
  }

  async start(): Promise<void> {
    await this.#deps.presence.start(
      () => this.#collectSeen(),
      () => [...this.#links.values()],
    );
    const sweepMs = Math.max(100, Math.floor(this.#deps.config.heartbeatIntervalMs / 2));
    this.#timers.push(setInterval(() => this.#sweep(), sweepMs));
    for (const timer of this.#timers) timer.unref();
  }

  /**
   * Sends a command; `answered(context, …)` is called once, later, with the device's answer
   * `data` or why there is none (DeviceCommandError, DeviceUnresponsiveError after `timeoutMs`,
   * DeviceOfflineError when its tunnel closes first). A device not connected here gets nothing:
   * the DeviceOfflineError is returned instead, and `answered` is never called. A command owns no
   * promise or timer (Deadlines): a rollout sends ten thousand at once.
   */
  send<C>(
    device: DeviceRef,
    action: string,
    payload: unknown,
    answered: CommandAnswered<C>,
    context: C,
    timeoutMs?: number,
  ): DeviceOfflineError | undefined {
    const link = this.#links.get(deviceKey(device.organizationId, device.deviceId));
    if (!link || link.socket.readyState !== WebSocket.OPEN) return new DeviceOfflineError(device.deviceId);
    const pending: PendingCommand = {
      id: randomUUID(),
      action,
      link,
      waitMs: timeoutMs ?? this.#deps.config.tunnelCommandTimeoutMs,
      answered: answered as CommandAnswered<unknown>,
      context,
      deadlineAt: undefined,
    };
    link.pending.set(pending.id, pending);
    this.#deadlines.add(pending, pending.waitMs);
    if (payload instanceof EncodedPayload) {
      link.socket.send(encodeCommandFrame(pending.id, action, payload), { binary: false });
    } else {
      this.#send(link, { type: 'command', id: pending.id, action, payload });
    }
    return undefined;
  }

  /** Sends a command and waits for the device's response `data` (send, as a promise). */
  command(device: DeviceRef, action: string, payload: unknown, timeoutMs?: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const offline = this.send(device, action, payload, settlePromise, { resolve, reject }, timeoutMs);
      if (offline) reject(offline);
    });
  }

  #answer(pending: PendingCommand, error: Error | undefined, data?: unknown): void {
    pending.link.pending.delete(pending.id);
    this.#deadlines.remove(pending);
    try {
      pending.answered(pending.context, error, data);
    } catch (thrown) {
      this.#deps.log.error({ err: thrown, action: pending.action }, 'handling a command answer failed');
    }
  }

  /** Asks the device whether it is healthy, through its tunnel here (see checkHealth). */
  healthCheck(device: DeviceRef, timeoutMs = 5000): Promise<HealthCheckData> {
    return checkHealth(device, (action, payload) => this.command(device, action, payload, timeoutMs));
  }

  /** Closes a device's tunnel (deleted device, replaced connection …). */
  disconnect(device: DeviceRef, code: number, reason: string): void {
    this.#links.get(deviceKey(device.organizationId, device.deviceId))?.socket.close(code, reason);
  }

  /**
   * Service-restart (1012) to every device so they come back soon, with jitter, to this server
   * or another replica; then presence written.
   */
  /** Shutting down: no new tunnel is accepted (503), and the readiness check says `draining`. */
  drain(): void {
    this.#closing = true;
  }

  get draining(): boolean {
    return this.#closing;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#closing = true;
    for (const timer of this.#timers) clearInterval(timer);
    const links = [...this.#links.values()];
    const closed = links.map(
      (link) =>
        new Promise<void>((resolve) => {
          if (link.socket.readyState === WebSocket.CLOSED) return resolve();
          link.socket.once('close', () => resolve());
          link.socket.close(CloseCode.serviceRestart, 'server restarting');
          setTimeout(() => {
            link.socket.terminate();
            resolve();
          }, 1000).unref();
        }),
    );
    await Promise.all(closed);
    await this.#deps.presence.stop();
    this.#wss.close();
  }

  #accept(socket: WebSocket, address: string): void {
    const link = new DeviceLink(socket, address);
    link.authTimer = setTimeout(() => {
      this.#sendError(link, TunnelErrorCode.authTimeout, 'no connect message within the time allowed');
      socket.close(CloseCode.authTimeout, 'connect timeout');
    }, this.#deps.config.tunnelConnectTimeoutMs);
    socket.on('message', (data, isBinary) => this.#onFrame(link, data, isBinary));
    socket.on('pong', () => {
      link.lastSeenMs = Date.now();
    });
    socket.on('error', (error) => {
      // ws closes the socket itself (oversized frame → 1009, bad framing → 1002).
      this.#deps.log.debug({ err: error, device_id: link.deviceId }, 'tunnel socket error');
      this.#deps.metrics.tunnelMessages.labels('frame', 'socket_error').inc();
    });
    socket.on('close', (code) => this.#onClose(link, code));
  }

  #onFrame(link: DeviceLink, data: RawData, isBinary: boolean): void {
    const now = Date.now();
    link.lastSeenMs = now;
    const { metrics } = this.#deps;
    if (!link.takeToken(now)) {
      metrics.tunnelMessages.labels('any', 'rate_limited').inc();
      if (link.refused++ === 0) this.#sendError(link, TunnelErrorCode.rateLimited, 'rate limit exceeded; slow down');
      this.#closeIfAbusive(link);
      return;
    }
    const { invalidFrame, unexpectedFrame } = TunnelErrorCode;
    if (isBinary) return this.#refuse(link, invalidFrame, 'binary frames are not supported; send JSON text frames');
    const parsed = parseFrame(data.toString());
    if (!parsed.ok) {
      // A command the device waits for gets its answer; anything else an error frame.
      if (link.authenticated && parsed.type === 'command' && parsed.id !== undefined) {
        this.#deps.metrics.tunnelMessages.labels('invalid', 'refused').inc();
        link.refused++;
        this.#closeIfAbusive(link);
        this.#send(link, {
          type: 'response',
          id: parsed.id,
          status: 'error',
          ...errorFields({ code: 'invalid_payload', message: parsed.reason }),
        });
        return;
      }
      return this.#refuse(link, invalidFrame, parsed.reason);
    }
    const message = parsed.message;
    metrics.tunnelMessages.labels(message.type, 'ok').inc();

    if (!link.authenticated) {
      if (message.type !== 'connect') return this.#refuse(link, unexpectedFrame, 'the first message must be connect');
      if (link.authenticating) return this.#refuse(link, unexpectedFrame, 'connect is already being processed');
      link.authenticating = true;
      this.#authenticate(link, message).catch((error: Error) => {
        this.#deps.log.error({ err: error }, 'tunnel authentication failed unexpectedly');
        this.#sendError(link, TunnelErrorCode.internalError, 'internal error');
        link.socket.close(CloseCode.policyViolation, 'internal error');
      });
      return;
    }
    switch (message.type) {
      case 'ping':
        this.#send(link, { type: 'pong', ...(message.id ? { id: message.id } : {}) });
        return;
      case 'pong':
        return;
      case 'response':
        return this.#onResponse(link, message);
      case 'command':
        this.#onDeviceCommand(link, message);
        return;
      case 'connect':
        return this.#refuse(link, unexpectedFrame, 'already connected');
      default:
        return this.#refuse(link, invalidFrame, `unknown message type ${JSON.stringify(message.type)}`);
    }
  }

  #refuse(link: DeviceLink, code: string, reason: string): void {
    this.#deps.metrics.tunnelMessages.labels('invalid', 'refused').inc();
    link.refused++;
    this.#sendError(link, code, reason);
    this.#closeIfAbusive(link);
  }

  #closeIfAbusive(link: DeviceLink): void {
    if (link.refused > MAX_REFUSED_PER_SWEEP && link.socket.readyState === WebSocket.OPEN) {
      link.socket.close(CloseCode.policyViolation, 'too many invalid or excess frames');
    }
  }

  async #authenticate(link: DeviceLink, message: Envelope): Promise<void> {
    const keyHash = message.api_key ? hashSecret(message.api_key) : '';
    const refuse = (why: string) => {
      const failure = this.#authFailures.recordFailure(link.address, keyHash);
      if (failure.newlyBlocked) {
        this.#deps.log.warn(
          { address: link.address, block_ms: this.#deps.config.tunnelAuthBlockMs },
          'too many failed tunnel authentications from one address; its failures are refused for a while',
        );
      }
      if (failure.blockedForMs > 0) {
        this.#deps.metrics.tunnelMessages.labels('connect', 'address_blocked').inc();
        const retry = `retry in ${retryAfterSeconds(failure.blockedForMs)} s`;
        this.#sendError(link, TunnelErrorCode.rateLimited, `too many failed authentications; ${retry}`);
        link.socket.close(CloseCode.tryAgainLater, `too many failed authentications from this address; ${retry}`);
        return;
      }
      this.#sendError(link, TunnelErrorCode.authFailed, why);
      link.socket.close(CloseCode.authFailed, 'authentication failed');
    };
    if (!message.device_id || !message.api_key) return refuse('connect needs device_id and api_key');
    const device = await this.#deviceByKeyHash.add(keyHash);
    // Same answer for an unknown key and another device's id: nothing to probe.
    if (!device || device.device_id !== message.device_id) return refuse('authentication failed');
    if (link.socket.readyState !== WebSocket.OPEN) return;
    clearTimeout(link.authTimer);
    link.authTimer = undefined;
    link.organizationId = device.organization_id;
    link.deviceId = device.device_id;
    link.authenticated = true;
    link.connectedAtMs = Date.now();
    link.agentVersion = message.version ?? null;
    // Going online writes its last-seen time; the next write is due within a resolution, at a
    // point of its own, so a fleet that connected at once does not write at once ever after.
    link.seenWrittenMs = link.connectedAtMs - Math.random() * LAST_SEEN_RESOLUTION_MS;
    const previous = this.#links.get(link.key);
    this.#links.set(link.key, link);
    if (previous) previous.socket.close(CloseCode.replaced, 'replaced by a newer connection');
    else this.#deps.metrics.connectedDevices.inc();
    await this.#deps.presence.online(link);
    if (this.#links.get(link.key) !== link || link.socket.readyState !== WebSocket.OPEN) {
      // It went away while the online mark waited for its batch: undo the mark.
      if (!this.#links.has(link.key)) await this.#deps.presence.offline(this.#gone(link));
      return;
    }
    this.#send(link, { type: 'connected', device_id: link.deviceId });
    this.#deps.log.info(
      { organization_id: link.organizationId, device_id: link.deviceId, agent_version: message.version },
      'device online',
    );
  }

  #onResponse(link: DeviceLink, message: Envelope): void {
    const pending = message.id ? link.pending.get(message.id) : undefined;
    if (!pending) return; // late answer to a command that timed out: nothing waits for it
    if (message.status === 'error')
      this.#answer(pending, new DeviceCommandError(pending.action, readWireError(message)));
    else this.#answer(pending, undefined, message.data);
  }

  #onDeviceCommand(link: DeviceLink, message: Envelope): void {
    const answer = (reply: Partial<Envelope>) => this.#send(link, { type: 'response', id: message.id, ...reply });
    if (!message.id) return this.#refuse(link, TunnelErrorCode.invalidFrame, 'a command needs an id');
    const handler = message.action ? this.#handlers.get(message.action) : undefined;
    if (!handler) {
      const unknown = {
        code: TunnelErrorCode.unknownAction,
        message: `unknown action ${JSON.stringify(message.action)}`,
      };
      return answer({ status: 'error', ...errorFields(unknown) });
    }
    const device = { organizationId: link.organizationId, deviceId: link.deviceId, connectedAtMs: link.connectedAtMs };
    // One device's requests run in the order it sent them (a version report must not overtake
    // the result that follows it); different devices run concurrently.
    const run = link.requests.then(() => handler(device, message.payload));
    link.requests = run.then(
      () => {},
      () => {},
    );
    run.then(
      (data) => answer({ status: 'success', ...(data === undefined ? {} : { data }) }),
      (error: Error) => {
        if (!(error instanceof AppError)) {
          this.#deps.log.error(
            { err: error, action: message.action, device_id: link.deviceId },
            'device request failed',
          );
        }
        const refusal =
          error instanceof AppError
            ? { code: error.code, message: error.message }
            : { code: TunnelErrorCode.internalError, message: 'internal error' };
        answer({ status: 'error', ...errorFields(refusal) });
      },
    );
  }

  async #onDeviceInfo(device: ConnectedDevice, payload: unknown): Promise<unknown> {
    if (!validate.deviceInfo.Check(payload)) {
      throw new AppError(400, 'invalid_payload', `device_info: ${payloadProblem(validate.deviceInfo, payload)}`);
    }
    const changedFrom = await this.#deps.presence.reportVersion({
      organizationId: device.organizationId,
      deviceId: device.deviceId,
      currentVersion: payload.current_version,
      agentVersion: payload.agent_version ?? null,
      slot: payload.slot ?? null,
      // An operator's zone wins; an unknown name is not taken (the rest of the report is).
      timezone: payload.timezone !== undefined && isTimeZone(payload.timezone) ? payload.timezone : null,
    });
    for (const listener of this.#infoListeners) listener(device, payload, changedFrom);
    return { ok: true };
  }

  #onClose(link: DeviceLink, code: number): void {
    clearTimeout(link.authTimer);
    // #answer takes each out of the map as it goes: a Map's iteration allows that.
    for (const pending of link.pending.values()) {
      this.#answer(pending, new DeviceOfflineError(link.deviceId, 'its tunnel closed'));
    }
    if (!link.authenticated || this.#links.get(link.key) !== link) return;
    this.#links.delete(link.key);
    this.#deps.metrics.connectedDevices.dec();
    this.#deps.log.info({ organization_id: link.organizationId, device_id: link.deviceId, code }, 'device offline');
    this.#deps.presence
      .offline(this.#gone(link))
      .catch((error: Error) => this.#deps.log.warn({ err: error }, 'could not mark a device offline'));
  }

  /** A closed link's device for presence: back() once it has a tunnel here again. */
  #gone(link: DeviceLink): GoneDevice {
    return { organizationId: link.organizationId, deviceId: link.deviceId, back: () => this.#links.has(link.key) };
  }

  /** Drops silent links, pings the rest at the WebSocket level, resets abuse counters. */
  #sweep(): void {
    const now = Date.now();
    this.#authFailures.prune(now);
    const silentAfterMs = 2 * this.#deps.config.heartbeatIntervalMs;
    for (const link of this.#links.values()) {
      link.refused = 0;
      if (now - link.lastSeenMs > silentAfterMs) {
        this.#deps.log.info({ device_id: link.deviceId }, 'tunnel silent for two heartbeats; dropping it');
        link.socket.terminate();
        continue;
      }
      if (
        now - link.lastSeenMs > this.#deps.config.heartbeatIntervalMs / 2 &&
        link.socket.readyState === WebSocket.OPEN
      ) {
        link.socket.ping();
      }
    }
  }

  /** The devices whose last-seen time is due to be written (presence's flush writes them). */
  #collectSeen(): SeenDevice[] {
    const seen: SeenDevice[] = [];
    for (const link of this.#links.values()) {
      if (link.lastSeenMs - link.seenWrittenMs < LAST_SEEN_RESOLUTION_MS) continue;
      link.seenWrittenMs = link.lastSeenMs;
      seen.push({ organizationId: link.organizationId, deviceId: link.deviceId, at: new Date(link.lastSeenMs) });
    }
    return seen;
  }

  #send(link: DeviceLink, message: Envelope): void {
    if (link.socket.readyState === WebSocket.OPEN) link.socket.send(encodeFrame(message));
  }

  /** EdgeFlow devices read `error` as a string: errorFields keeps it one (see protocol/wire-error.ts). */
  #sendError(link: DeviceLink, code: string, message: string): void {
    this.#send(link, { type: 'error', ...errorFields({ code, message }) });
  }
}
