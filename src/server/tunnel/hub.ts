/**
 * The device tunnel: one WebSocket per device at `/tunnel`, in the wire format EdgeFlow
 * devices already speak (see src/protocol/tunnel.ts). The hub authenticates devices, keeps
 * their presence in the database, answers heartbeats, carries cloud → device commands and
 * hands device → cloud requests to the handlers other domains register.
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
  type Envelope,
  encodeFrame,
  type HealthCheckData,
  parseFrame,
  payloadProblem,
  validate,
} from '../../protocol/tunnel.ts';
import { findDevicesByKeyHashes } from '../devices/repo.ts';
import { Batcher } from '../infra/batcher.ts';
import type { Config } from '../infra/config.ts';
import type { Db } from '../infra/db.ts';
import { AppError, ConflictError } from '../infra/errors.ts';
import type { Metrics } from '../infra/metrics.ts';
import { hashSecret, newId } from '../infra/secrets.ts';
import * as repo from './repo.ts';

export class DeviceOfflineError extends ConflictError {
  constructor(deviceId: string, why = 'it has no open tunnel') {
    super('device_offline', `device ${deviceId} is offline: ${why}`);
  }
}

/** The device answered a command with status `error`. */
export class DeviceCommandError extends Error {
  constructor(
    readonly action: string,
    readonly deviceError: string,
  ) {
    super(`device refused ${action}: ${deviceError}`);
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

interface PendingCommand {
  action: string;
  resolve(data: unknown): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
}

/** Token bucket: a device may send this many frames in a burst, refilled at RATE per second. */
const FRAME_BURST = 200;
const FRAME_RATE_PER_SECOND = 100;
/** Frames refused (malformed, over the rate) between two sweeps before the link is closed. */
const MAX_REFUSED_PER_SWEEP = 100;
const FLUSH_INTERVAL_MS = 10_000;
/** Connects and reports within this window share one statement. */
const BATCH_WINDOW_MS = 5;
const BATCH_MAX = 1000;
/** Shared by every idle link, so an idle device costs no promise of its own. */
const SETTLED: Promise<void> = Promise.resolve();

class DeviceLink {
  organizationId = '';
  deviceId = '';
  authenticated = false;
  authenticating = false;
  connectedAtMs = 0;
  authTimer: NodeJS.Timeout | undefined;
  lastSeenMs = Date.now();
  seenSinceFlush = false;
  tokens = FRAME_BURST;
  tokensAtMs = Date.now();
  refused = 0;
  pending: Map<string, PendingCommand> | undefined;
  /** The tail of this device's requests being handled, in arrival order. */
  requests: Promise<void> = SETTLED;

  constructor(readonly socket: WebSocket) {}

  get key(): string {
    return linkKey(this.organizationId, this.deviceId);
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

function linkKey(organizationId: string, deviceId: string): string {
  return `${organizationId}\u0000${deviceId}`;
}

export interface TunnelHubDeps {
  config: Config;
  db: Db;
  metrics: Metrics;
  log: Logger;
}

export class TunnelHub {
  /** This process among the replicas: devices it holds carry it in `connected_node`. */
  readonly nodeId = newId('node');
  readonly #deps: TunnelHubDeps;
  readonly #links = new Map<string, DeviceLink>();
  readonly #handlers = new Map<string, DeviceRequestHandler>();
  readonly #wss: WebSocketServer;
  readonly #timers: NodeJS.Timeout[] = [];
  readonly #deviceByKeyHash: Batcher<string, { organization_id: string; device_id: string } | undefined>;
  readonly #markOnline: Batcher<{ organizationId: string; deviceId: string; agentVersion: string | null }, void>;
  readonly #reportVersion: Batcher<
    { organizationId: string; deviceId: string; currentVersion: string; agentVersion: string | null },
    void
  >;
  #closing = false;

  constructor(deps: TunnelHubDeps) {
    this.#deps = deps;
    this.#wss = new WebSocketServer({
      noServer: true,
      maxPayload: deps.config.tunnelMaxFrameBytes,
      perMessageDeflate: false,
      clientTracking: false,
    });
    this.onDeviceRequest(DeviceAction.deviceInfo, (device, payload) => this.#onDeviceInfo(device, payload));
    const batch = { maxSize: BATCH_MAX, maxDelayMs: BATCH_WINDOW_MS };
    this.#deviceByKeyHash = new Batcher(async (hashes) => {
      const found = new Map((await findDevicesByKeyHashes(deps.db, hashes)).map((row) => [row.key_hash, row]));
      return hashes.map((hash) => found.get(hash));
    }, batch);
    this.#markOnline = new Batcher(async (devices) => {
      await repo.markOnline(deps.db, this.nodeId, devices);
      return devices.map(() => undefined);
    }, batch);
    this.#reportVersion = new Batcher(async (reports) => {
      await repo.reportCurrentVersions(deps.db, reports);
      return reports.map(() => undefined);
    }, batch);
  }

  /** Device → cloud actions; a later registration for the same action replaces the earlier. */
  onDeviceRequest(action: string, handler: DeviceRequestHandler): void {
    this.#handlers.set(action, handler);
  }

  /** Listeners for presence changes (the update engine dispatches to devices coming online). */
  onlineListeners: ((device: DeviceRef & { agentVersion: string | undefined }) => void)[] = [];
  offlineListeners: ((device: DeviceRef) => void)[] = [];
  /** After a device said what it runs (and which update it is in the middle of). */
  infoListeners: ((device: ConnectedDevice, info: DeviceInfoPayload) => void)[] = [];

  get connectedCount(): number {
    return this.#links.size;
  }

  isConnected(organizationId: string, deviceId: string): boolean {
    return this.#links.has(linkKey(organizationId, deviceId));
  }

  attach(server: Server): void {
    server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
      const path = (request.url ?? '').split('?')[0];
      if (path !== '/tunnel' || this.#closing) {
        socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
        return;
      }
      this.#wss.handleUpgrade(request, socket, head, (ws) => this.#accept(ws));
    });
  }

  async start(): Promise<void> {
    const { db, config } = this.#deps;
    await repo.registerNode(db, this.nodeId);
    const staleSeconds = Math.max(3, (3 * config.heartbeatIntervalMs) / 1000);
    const released = await repo.releaseDeadNodes(db, staleSeconds);
    if (released > 0) this.#deps.log.info({ released }, 'devices of stopped replicas marked offline');
    const sweepMs = Math.max(100, Math.floor(config.heartbeatIntervalMs / 2));
    this.#timers.push(setInterval(() => this.#sweep(), sweepMs));
    this.#timers.push(
      setInterval(
        () => {
          this.#flush(staleSeconds).catch((error: Error) =>
            this.#deps.log.warn({ err: error }, 'presence flush failed'),
          );
        },
        Math.min(FLUSH_INTERVAL_MS, config.heartbeatIntervalMs),
      ),
    );
    for (const timer of this.#timers) timer.unref();
  }

  /** Sends a command and waits for the device's response `data`. */
  command(device: DeviceRef, action: string, payload: unknown, timeoutMs?: number): Promise<unknown> {
    const link = this.#links.get(linkKey(device.organizationId, device.deviceId));
    if (!link || link.socket.readyState !== WebSocket.OPEN) {
      return Promise.reject(new DeviceOfflineError(device.deviceId));
    }
    const id = randomUUID();
    const wait = timeoutMs ?? this.#deps.config.tunnelCommandTimeoutMs;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        link.pending?.delete(id);
        reject(new DeviceOfflineError(device.deviceId, `no answer to ${action} within ${wait} ms`));
      }, wait);
      link.pending ??= new Map();
      link.pending.set(id, { action, resolve, reject, timer });
      this.#send(link, { type: 'command', id, action, payload });
    });
  }

  /** Asks the device whether it is healthy; rejects with DeviceOfflineError when it cannot answer. */
  async healthCheck(device: DeviceRef, timeoutMs = 5000): Promise<HealthCheckData> {
    const data = await this.command(device, CloudAction.healthCheck, {}, timeoutMs);
    if (!validate.healthCheckData.Check(data)) {
      throw new DeviceOfflineError(device.deviceId, 'its health_check answer was not understood');
    }
    return data;
  }

  /** Closes a device's tunnel (deleted device, replaced connection …). */
  disconnect(device: DeviceRef, code: number, reason: string): void {
    this.#links.get(linkKey(device.organizationId, device.deviceId))?.socket.close(code, reason);
  }

  /** Going-away to every device so they reconnect (elsewhere), then presence written. */
  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    for (const timer of this.#timers) clearInterval(timer);
    const links = [...this.#links.values()];
    const closed = links.map(
      (link) =>
        new Promise<void>((resolve) => {
          if (link.socket.readyState === WebSocket.CLOSED) return resolve();
          link.socket.once('close', () => resolve());
          link.socket.close(CloseCode.goingAway, 'server shutting down');
          setTimeout(() => {
            link.socket.terminate();
            resolve();
          }, 1000).unref();
        }),
    );
    await Promise.all(closed);
    await repo.removeNode(this.#deps.db, this.nodeId).catch(() => {});
    this.#wss.close();
  }

  #accept(socket: WebSocket): void {
    const link = new DeviceLink(socket);
    link.authTimer = setTimeout(() => {
      this.#sendError(link, 'no connect message within the time allowed');
      socket.close(CloseCode.authTimeout, 'connect timeout');
    }, this.#deps.config.tunnelConnectTimeoutMs);
    socket.on('message', (data, isBinary) => this.#onFrame(link, data, isBinary));
    socket.on('pong', () => {
      link.lastSeenMs = Date.now();
      link.seenSinceFlush = true;
    });
    socket.on('error', (error) => {
      // ws closes the socket itself (oversized frame → 1009, bad framing → 1002).
      this.#deps.log.debug({ err: error, device_id: link.deviceId }, 'tunnel socket error');
      this.#deps.metrics.tunnelMessages.labels('frame', 'socket_error').inc();
    });
    socket.on('close', () => this.#onClose(link));
  }

  #onFrame(link: DeviceLink, data: RawData, isBinary: boolean): void {
    const now = Date.now();
    link.lastSeenMs = now;
    link.seenSinceFlush = true;
    const { metrics } = this.#deps;
    if (!link.takeToken(now)) {
      metrics.tunnelMessages.labels('any', 'rate_limited').inc();
      if (link.refused++ === 0) this.#sendError(link, 'rate limit exceeded; slow down');
      this.#closeIfAbusive(link);
      return;
    }
    if (isBinary) return this.#refuse(link, 'binary frames are not supported; send JSON text frames');
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
          error: `invalid_payload: ${parsed.reason}`,
        });
        return;
      }
      return this.#refuse(link, parsed.reason);
    }
    const message = parsed.message;
    metrics.tunnelMessages.labels(message.type, 'ok').inc();

    if (!link.authenticated) {
      if (message.type !== 'connect') return this.#refuse(link, 'the first message must be connect');
      if (link.authenticating) return this.#refuse(link, 'connect is already being processed');
      link.authenticating = true;
      this.#authenticate(link, message).catch((error: Error) => {
        this.#deps.log.error({ err: error }, 'tunnel authentication failed unexpectedly');
        this.#sendError(link, 'internal error');
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
        return this.#refuse(link, 'already connected');
      default:
        return this.#refuse(link, `unknown message type ${JSON.stringify(message.type)}`);
    }
  }

  #refuse(link: DeviceLink, reason: string): void {
    this.#deps.metrics.tunnelMessages.labels('invalid', 'refused').inc();
    link.refused++;
    this.#sendError(link, reason);
    this.#closeIfAbusive(link);
  }

  #closeIfAbusive(link: DeviceLink): void {
    if (link.refused > MAX_REFUSED_PER_SWEEP && link.socket.readyState === WebSocket.OPEN) {
      link.socket.close(CloseCode.policyViolation, 'too many invalid or excess frames');
    }
  }

  async #authenticate(link: DeviceLink, message: Envelope): Promise<void> {
    const refuse = (why: string) => {
      this.#sendError(link, why);
      link.socket.close(CloseCode.authFailed, 'authentication failed');
    };
    if (!message.device_id || !message.api_key) return refuse('connect needs device_id and api_key');
    const device = await this.#deviceByKeyHash.add(hashSecret(message.api_key));
    // Same answer for an unknown key and another device's id: nothing to probe.
    if (!device || device.device_id !== message.device_id) return refuse('authentication failed');
    if (link.socket.readyState !== WebSocket.OPEN) return;
    clearTimeout(link.authTimer);
    link.authTimer = undefined;
    link.organizationId = device.organization_id;
    link.deviceId = device.device_id;
    link.authenticated = true;
    link.connectedAtMs = Date.now();
    const previous = this.#links.get(link.key);
    this.#links.set(link.key, link);
    if (previous) previous.socket.close(CloseCode.replaced, 'replaced by a newer connection');
    else this.#deps.metrics.connectedDevices.inc();
    await this.#markOnline.add({
      organizationId: link.organizationId,
      deviceId: link.deviceId,
      agentVersion: message.version ?? null,
    });
    if (this.#links.get(link.key) !== link || link.socket.readyState !== WebSocket.OPEN) {
      // It went away while the online mark waited for its batch: undo the mark.
      if (!this.#links.has(link.key)) {
        await repo.markOffline(this.#deps.db, link.organizationId, link.deviceId, this.nodeId);
      }
      return;
    }
    this.#send(link, { type: 'connected', device_id: link.deviceId });
    for (const listener of this.onlineListeners) {
      listener({ organizationId: link.organizationId, deviceId: link.deviceId, agentVersion: message.version });
    }
  }

  #onResponse(link: DeviceLink, message: Envelope): void {
    const pending = message.id ? link.pending?.get(message.id) : undefined;
    if (!pending) return; // late answer to a command that timed out: nothing waits for it
    link.pending!.delete(message.id!);
    clearTimeout(pending.timer);
    if (message.status === 'error') pending.reject(new DeviceCommandError(pending.action, message.error ?? 'error'));
    else pending.resolve(message.data);
  }

  #onDeviceCommand(link: DeviceLink, message: Envelope): void {
    const answer = (reply: Partial<Envelope>) => this.#send(link, { type: 'response', id: message.id, ...reply });
    if (!message.id) return this.#refuse(link, 'a command needs an id');
    const handler = message.action ? this.#handlers.get(message.action) : undefined;
    if (!handler) return answer({ status: 'error', error: `unknown action ${JSON.stringify(message.action)}` });
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
        answer({
          status: 'error',
          error: error instanceof AppError ? `${error.code}: ${error.message}` : 'internal error',
        });
      },
    );
  }

  async #onDeviceInfo(device: ConnectedDevice, payload: unknown): Promise<unknown> {
    if (!validate.deviceInfo.Check(payload)) {
      throw new AppError(400, 'invalid_payload', `device_info: ${payloadProblem(validate.deviceInfo, payload)}`);
    }
    await this.#reportVersion.add({
      organizationId: device.organizationId,
      deviceId: device.deviceId,
      currentVersion: payload.current_version,
      agentVersion: payload.agent_version ?? null,
    });
    for (const listener of this.infoListeners) listener(device, payload);
    return { ok: true };
  }

  #onClose(link: DeviceLink): void {
    clearTimeout(link.authTimer);
    for (const pending of link.pending?.values() ?? []) {
      clearTimeout(pending.timer);
      pending.reject(new DeviceOfflineError(link.deviceId, 'its tunnel closed'));
    }
    link.pending = undefined;
    if (!link.authenticated || this.#links.get(link.key) !== link) return;
    this.#links.delete(link.key);
    this.#deps.metrics.connectedDevices.dec();
    const device = { organizationId: link.organizationId, deviceId: link.deviceId };
    repo
      .markOffline(this.#deps.db, link.organizationId, link.deviceId, this.nodeId)
      .catch((error: Error) => this.#deps.log.warn({ err: error }, 'could not mark a device offline'));
    for (const listener of this.offlineListeners) listener(device);
  }

  /** Drops silent links, pings the rest at the WebSocket level, resets abuse counters. */
  #sweep(): void {
    const now = Date.now();
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

  async #flush(staleSeconds: number): Promise<void> {
    const { db } = this.#deps;
    const seen: { organizationId: string; deviceId: string; at: Date }[] = [];
    for (const link of this.#links.values()) {
      if (!link.seenSinceFlush) continue;
      link.seenSinceFlush = false;
      seen.push({ organizationId: link.organizationId, deviceId: link.deviceId, at: new Date(link.lastSeenMs) });
    }
    await repo.touchLastSeen(db, seen);
    await repo.beatNode(db, this.nodeId);
    await repo.releaseDeadNodes(db, staleSeconds);
  }

  #send(link: DeviceLink, message: Envelope): void {
    if (link.socket.readyState === WebSocket.OPEN) link.socket.send(encodeFrame(message));
  }

  #sendError(link: DeviceLink, error: string): void {
    this.#send(link, { type: 'error', error });
  }
}
