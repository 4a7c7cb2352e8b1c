import { randomUUID } from 'node:crypto';
import type { Agent as HttpAgent } from 'node:http';
import WebSocket from 'ws';
import {
  backoffDelayMs,
  CloseCode,
  CloudAction,
  type Envelope,
  encodeFrame,
  parseFrame,
  TunnelDefaults,
} from '../protocol/tunnel.ts';
import {
  errorFields,
  formatWireError,
  readWireError,
  TunnelErrorCode,
  type WireError,
} from '../protocol/wire-error.ts';
import { errorMessage, type Logger } from './logger.ts';
import type { HealthVerdict } from './ota-handler.ts';

/**
 * Answers one cloud → device command; what it returns is the response's `data`. To refuse, it
 * throws a CommandRefusedError (its code goes on the wire); anything else it throws is answered
 * as `internal_error` with the error's message.
 */
export type CommandHandler = (payload: unknown, message: Envelope) => unknown | Promise<unknown>;

/** A command handler's refusal, with the stable code the cloud branches on (`busy`, `too_late` …). */
export class CommandRefusedError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'CommandRefusedError';
  }
}

/** The cloud answered a device → cloud request with status `error`. */
export class RequestRefusedError extends Error {
  constructor(
    readonly action: string,
    readonly refusal: WireError,
  ) {
    super(`${action} refused: ${formatWireError(refusal)}`);
    this.name = 'RequestRefusedError';
  }
}

export interface TunnelClientOptions {
  /** `wss://host:port` or `https://host:port` (a path prefix is kept); `/tunnel` is appended. */
  server: string;
  deviceId: string;
  apiKey: string;
  agentVersion: string;
  /** Answers `health_check`: the firmware version running now. */
  firmwareVersion: () => string;
  /**
   * The verdict `health_check` answers with. Without it the answer is `healthy` whenever the
   * agent runs: an operator's health command may take far longer than the cloud waits.
   */
  health?: () => HealthVerdict | Promise<HealthVerdict>;
  logger: Logger;
  /** Development only: allow `ws://` and `http://`. */
  allowInsecure?: boolean;
  heartbeatIntervalMs?: number;
  connectTimeoutMs?: number;
  reconnectBaseMs?: number;
  reconnectCapMs?: number;
  /** After a 1012/1001 close: reconnect within a random 0 … this many ms, until connected again … */
  restartJitterMs?: number;
  /** … or until this long after the close; then the ordinary backoff resumes. */
  restartWindowMs?: number;
  /** Off by default: a deflate context costs each connection ~300 KiB for frames of a few hundred bytes. */
  perMessageDeflate?: boolean;
  /** Shared between many clients (the simulator), so each does not keep its own connection pool. */
  httpAgent?: HttpAgent;
  /** PEM of a CA to trust besides the system's, for a self-signed server. */
  ca?: string | Buffer;
  onConnected?: () => void;
  onDisconnected?: (code: number, reason: string) => void;
}

export class InsecureServerUrlError extends Error {}

interface PendingRequest {
  action: string;
  resolve: (data: unknown) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

/** Derives the tunnel's WebSocket URL from the server's base URL, refusing plain text unless allowed. */
export function tunnelUrl(server: string, allowInsecure = false): string {
  let url: URL;
  try {
    url = new URL(server);
  } catch {
    throw new InsecureServerUrlError(`the server URL ${JSON.stringify(server)} is not a URL: use https://host:port`);
  }
  const secure = url.protocol === 'https:' || url.protocol === 'wss:';
  const plain = url.protocol === 'http:' || url.protocol === 'ws:';
  if (!secure && !plain) {
    throw new InsecureServerUrlError(
      `the server URL ${JSON.stringify(server)} has no https://, wss:// (or http://, ws://) scheme: e.g. https://${url.protocol.replace(/:$/, '')}:${url.pathname}`,
    );
  }
  if (plain && !allowInsecure) {
    throw new InsecureServerUrlError(`refusing the unencrypted server URL ${server}: use wss:// or https://`);
  }
  url.protocol = secure ? 'wss:' : 'ws:';
  const base = url.pathname.replace(/\/+$/, '');
  url.pathname = base.endsWith('/tunnel') ? base : `${base}/tunnel`;
  url.search = '';
  url.hash = '';
  return url.toString();
}

/** What a close code means, for a log line when the peer gave no reason. */
function closeCodeMeaning(code: number): string {
  switch (code) {
    case 1006:
      return 'connection lost without a close frame (network down, server gone, or refused)';
    case CloseCode.goingAway:
      return 'server going away';
    case CloseCode.serviceRestart:
      return 'server restarting';
    default:
      return `close code ${code}`;
  }
}

/** One line for a connect failure: the system error's cause (ECONNREFUSED, a TLS verdict …) and the message. */
function describeSocketError(error: Error & { code?: string }): string {
  return error.code && !error.message.includes(error.code) ? `${error.code}: ${error.message}` : error.message;
}

/**
 * The device's end of the tunnel: connects, authenticates, keeps the link alive, answers commands
 * and reconnects forever. Kept lean on purpose — the simulator runs ten thousand of these in one
 * process — so one timer serves the connect timeout and the heartbeat, and request bookkeeping
 * only exists while a request is in flight.
 */
export class TunnelClient {
  readonly url: string;
  private readonly handlers = new Map<string, CommandHandler>();
  private socket: WebSocket | undefined;
  private isConnected = false;
  private stopped = true;
  private attempt = 0;
  /**
   * Set by a 1012/1001 close: retries keep the short restart delay until the next connect, or
   * until the restart window is over (a server that stays down must not be polled every few
   * seconds forever by the whole fleet).
   */
  private restartRetriesUntil = 0;
  private timer: NodeJS.Timeout | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private lastFrameAt = 0;
  /** Why the last attempt failed (refused, TLS, DNS …), logged with the retry. */
  private lastError: string | undefined;
  private pending: Map<string, PendingRequest> | undefined;
  private connectedWaiters: Array<(connected: boolean) => void> | undefined;
  private readonly startedAt = Date.now();

  constructor(private readonly options: TunnelClientOptions) {
    this.url = tunnelUrl(options.server, options.allowInsecure);
    this.handle(CloudAction.healthCheck, async () => {
      const verdict = options.health ? await options.health() : undefined;
      return {
        status: verdict === undefined || verdict.healthy ? 'healthy' : 'unhealthy',
        version: options.firmwareVersion(),
        uptime: Math.floor((Date.now() - this.startedAt) / 1000),
        ...(verdict ? { message: verdict.message } : {}),
      };
    });
  }

  get connected(): boolean {
    return this.isConnected;
  }

  handle(action: string, handler: CommandHandler): void {
    this.handlers.set(action, handler);
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.attempt = 0;
    this.open();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.releaseWaiters(false);
    const socket = this.socket;
    if (!socket || socket.readyState === WebSocket.CLOSED) return;
    await new Promise<void>((resolve) => {
      const forceTimer = setTimeout(() => socket.terminate(), 2_000);
      socket.once('close', () => {
        clearTimeout(forceTimer);
        resolve();
      });
      if (socket.readyState === WebSocket.CONNECTING) socket.terminate();
      else socket.close(CloseCode.normal, 'agent stopping');
    });
  }

  /** Resolves `true` once connected, or `false` when `timeoutMs` passes (or the client stops) first. */
  waitUntilConnected(timeoutMs: number): Promise<boolean> {
    if (this.isConnected) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter = (connected: boolean) => {
        clearTimeout(timer);
        this.connectedWaiters = this.connectedWaiters?.filter((w) => w !== waiter);
        resolve(connected);
      };
      const timer = setTimeout(() => waiter(false), timeoutMs);
      this.connectedWaiters ??= [];
      this.connectedWaiters.push(waiter);
    });
  }

  /** A device → cloud command; resolves with the response's `data`, rejects on `status:error` or timeout. */
  request(action: string, payload: unknown, options: { timeoutMs?: number } = {}): Promise<unknown> {
    const socket = this.socket;
    if (!this.isConnected || !socket) return Promise.reject(new Error('the tunnel is not connected'));
    const id = randomUUID();
    return new Promise((resolve, reject) => {
      const timeoutMs = options.timeoutMs ?? TunnelDefaults.commandTimeoutMs;
      const timer = setTimeout(() => {
        this.pending?.delete(id);
        reject(new Error(`${action} got no response within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending ??= new Map();
      this.pending.set(id, { action, resolve, reject, timer });
      this.send(socket, { type: 'command', id, action, payload });
    });
  }

  /** A device → cloud command whose response nobody waits for; `false` when not connected. */
  notify(action: string, payload: unknown): boolean {
    const socket = this.socket;
    if (!this.isConnected || !socket) return false;
    this.send(socket, { type: 'command', id: randomUUID(), action, payload });
    return true;
  }

  private open(): void {
    const { options } = this;
    const socket = new WebSocket(this.url, {
      perMessageDeflate: options.perMessageDeflate ?? false,
      handshakeTimeout: options.connectTimeoutMs ?? TunnelDefaults.connectTimeoutMs,
      maxPayload: 1024 * 1024,
      ...(options.httpAgent ? { agent: options.httpAgent } : {}),
      ...(options.ca ? { ca: options.ca } : {}),
    });
    this.socket = socket;
    socket.on('open', () => {
      this.send(socket, {
        type: 'connect',
        device_id: options.deviceId,
        api_key: options.apiKey,
        version: options.agentVersion,
      });
      // Until `connected` arrives, the single timer is the authentication deadline.
      this.setTimer(options.connectTimeoutMs ?? TunnelDefaults.connectTimeoutMs, () => {
        options.logger.warn('tunnel: no answer to connect in time');
        socket.terminate();
      });
    });
    socket.on('message', (data, isBinary) => {
      this.lastFrameAt = Date.now();
      if (isBinary) return;
      this.receive(socket, data.toString());
    });
    socket.on('error', (error) => {
      // Kept for the close that follows: "code 1006" alone does not say what went wrong.
      this.lastError = describeSocketError(error);
      options.logger.debug('tunnel socket error', { error: error.message });
    });
    socket.on('close', (code, reasonBuffer) => this.onClose(socket, code, reasonBuffer.toString()));
  }

  private receive(socket: WebSocket, text: string): void {
    const parsed = parseFrame(text);
    if (!parsed.ok) {
      this.options.logger.warn('tunnel: ignoring an invalid frame', { reason: parsed.reason });
      return;
    }
    const message = parsed.message;
    if (!this.isConnected) {
      if (message.type === 'connected') this.onAuthenticated(socket);
      else if (message.error !== undefined) {
        const refusal = readWireError(message);
        this.options.logger.error('tunnel: the server refused the connection', { ...refusal });
        this.lastError = `the server refused the connection: ${refusal.message}`;
        socket.terminate();
      }
      return;
    }
    switch (message.type) {
      case 'pong':
        return;
      case 'command':
        void this.dispatch(socket, message);
        return;
      case 'response':
        this.settle(message);
        return;
      case 'error':
        this.options.logger.warn('tunnel: the server reported an error', { ...readWireError(message) });
        return;
      default:
        this.options.logger.debug('tunnel: ignoring a frame', { type: message.type });
    }
  }

  private onAuthenticated(socket: WebSocket): void {
    this.isConnected = true;
    this.attempt = 0;
    this.restartRetriesUntil = 0;
    const intervalMs = this.options.heartbeatIntervalMs ?? TunnelDefaults.heartbeatIntervalMs;
    this.clearTimer();
    this.timer = setInterval(() => {
      if (Date.now() - this.lastFrameAt >= 2 * intervalMs) {
        this.options.logger.warn('tunnel: no frame for two heartbeat intervals, dropping the link');
        socket.terminate();
        return;
      }
      this.send(socket, { type: 'ping' });
    }, intervalMs);
    this.options.logger.info('tunnel: connected', { url: this.url });
    this.releaseWaiters(true);
    this.options.onConnected?.();
  }

  private async dispatch(socket: WebSocket, message: Envelope): Promise<void> {
    const { id, action } = message;
    if (id === undefined) {
      const refusal = { code: TunnelErrorCode.invalidFrame, message: 'a command needs an id' };
      this.send(socket, { type: 'response', status: 'error', ...errorFields(refusal) });
      return;
    }
    const handler = action === undefined ? undefined : this.handlers.get(action);
    if (!handler) {
      const refusal = { code: TunnelErrorCode.unknownAction, message: `unknown action ${JSON.stringify(action)}` };
      this.send(socket, { type: 'response', id, status: 'error', ...errorFields(refusal) });
      return;
    }
    let reply: Envelope;
    try {
      const data = await handler(message.payload, message);
      reply = { type: 'response', id, status: 'success', ...(data === undefined ? {} : { data }) };
    } catch (error) {
      const refusal =
        error instanceof CommandRefusedError
          ? { code: error.code, message: error.message }
          : { code: TunnelErrorCode.internalError, message: errorMessage(error) };
      reply = { type: 'response', id, status: 'error', ...errorFields(refusal) };
    }
    // The answer belongs to the link the command came on; a newer link never sees it.
    if (socket === this.socket && socket.readyState === WebSocket.OPEN) this.send(socket, reply);
  }

  private settle(message: Envelope): void {
    const entry = message.id === undefined ? undefined : this.pending?.get(message.id);
    if (!entry || message.id === undefined) return;
    this.pending?.delete(message.id);
    if (this.pending?.size === 0) this.pending = undefined;
    clearTimeout(entry.timer);
    if (message.status === 'error') entry.reject(new RequestRefusedError(entry.action, readWireError(message)));
    else entry.resolve(message.data);
  }

  private onClose(socket: WebSocket, code: number, reason: string): void {
    if (socket !== this.socket) return;
    this.socket = undefined;
    this.clearTimer();
    const wasConnected = this.isConnected;
    this.isConnected = false;
    const pending = this.pending;
    this.pending = undefined;
    for (const entry of pending?.values() ?? []) {
      clearTimeout(entry.timer);
      entry.reject(new Error('the tunnel closed before the response'));
    }
    if (wasConnected) this.options.onDisconnected?.(code, reason);
    if (this.stopped) return;

    if (code === CloseCode.serviceRestart || code === CloseCode.goingAway) {
      // The server restarts (or this replica leaves): it will answer again in seconds, so a
      // backoff grown over earlier outages must not keep this device away for a minute.
      this.restartRetriesUntil = Date.now() + (this.options.restartWindowMs ?? TunnelDefaults.restartWindowMs);
      this.attempt = 0;
    }
    if (code === CloseCode.replaced) {
      // Another connection with our identity took over: a clone or a stale twin. Don't fight it hard.
      this.options.logger.warn('tunnel: replaced by another connection of this device', { reason });
      this.attempt += 3;
    } else if (code === CloseCode.authFailed) {
      this.options.logger.error('tunnel: authentication failed', { reason });
    } else if (code === CloseCode.tryAgainLater) {
      this.options.logger.warn('tunnel: the server asks to try again later', { reason });
      this.attempt = Math.max(this.attempt, 5);
    }
    const delayMs =
      Date.now() < this.restartRetriesUntil
        ? Math.floor(Math.random() * (this.options.restartJitterMs ?? TunnelDefaults.restartJitterMs))
        : backoffDelayMs(
            this.attempt,
            this.options.reconnectBaseMs ?? TunnelDefaults.reconnectBaseMs,
            this.options.reconnectCapMs ?? TunnelDefaults.reconnectCapMs,
          );
    this.attempt += 1;
    const retryAt = new Date(Date.now() + delayMs).toISOString();
    if (wasConnected) {
      this.options.logger.info('tunnel: disconnected', {
        url: this.url,
        code,
        reason: reason || closeCodeMeaning(code),
        retry_in_ms: delayMs,
        retry_at: retryAt,
      });
    } else {
      this.options.logger.warn('tunnel: could not connect', {
        url: this.url,
        cause: this.lastError ?? (reason || closeCodeMeaning(code)),
        retry_in_ms: delayMs,
        retry_at: retryAt,
        attempt: this.attempt,
      });
    }
    this.lastError = undefined;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (!this.stopped) this.open();
    }, delayMs);
  }

  private releaseWaiters(connected: boolean): void {
    const waiters = this.connectedWaiters;
    this.connectedWaiters = undefined;
    for (const waiter of waiters ?? []) waiter(connected);
  }

  private send(socket: WebSocket, message: Envelope): void {
    if (socket.readyState !== WebSocket.OPEN) return;
    socket.send(encodeFrame(message));
  }

  private setTimer(delayMs: number, callback: () => void): void {
    this.clearTimer();
    this.timer = setTimeout(callback, delayMs);
  }

  private clearTimer(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }
}
