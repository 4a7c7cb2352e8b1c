/**
 * A stand-in for the EdgeFlow server, for the agent's unit tests: a real `ws` tunnel endpoint that
 * speaks the wire format of src/protocol/tunnel.ts, and a real HTTP firmware store with Range
 * support, expiring links and dropped connections on demand. The end-to-end tests against the
 * real server's tunnel come with that server.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import { type Envelope, encodeFrame, parseFrame } from '../../src/protocol/tunnel.ts';

export interface ReceivedFrame {
  deviceId: string | undefined;
  message: Envelope;
  /** The frame exactly as parsed from the wire, to check which fields are present. */
  raw: Record<string, unknown>;
}

export interface FirmwareRequest {
  name: string;
  range: string | undefined;
  status: number;
  bytesSent: number;
  /** Which connection carried it (numbered in the order they were opened). */
  connection: number;
}

export interface Firmware {
  bytes: Buffer;
  sha256: string;
}

export function makeFirmware(size: number, seed = 1): Firmware {
  const bytes = Buffer.alloc(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return { bytes, sha256: createHash('sha256').update(bytes).digest('hex') };
}

export class StandInServer {
  readonly frames: ReceivedFrame[] = [];
  readonly firmwareRequests: FirmwareRequest[] = [];
  private readonly connections = new Map<unknown, number>();
  /** Device id → the key it must present; a device not listed is accepted with any key. */
  readonly deviceKeys = new Map<string, string>();
  /** Answer `ota_result` with success; when false the device must keep resending. */
  acknowledgeResults = true;
  answerPings = true;
  /** Behave like a store without Range support: always answer 200 with the whole image. */
  ignoreRange = false;
  /** Drop the next firmware response after this many body bytes. */
  dropNextDownloadAfterBytes: number | undefined;
  /** Answer this many firmware requests 503 with this Retry-After (seconds), as a busy EdgeFlow server does. */
  busy: { answers: number; retryAfter: string } | undefined;
  private readonly blobs = new Map<string, Buffer>();
  private readonly sockets = new Map<string, WebSocket>();
  private readonly allSockets = new Set<WebSocket>();
  private readonly httpServer = http.createServer((request, response) => this.serveFirmware(request, response));
  private readonly wss = new WebSocketServer({ noServer: true });
  private commandCounter = 0;
  private readonly waiters = new Set<() => void>();

  static async start(): Promise<StandInServer> {
    const server = new StandInServer();
    server.httpServer.on('upgrade', (request, socket, head) => {
      if (!request.url?.startsWith('/tunnel')) {
        socket.destroy();
        return;
      }
      server.wss.handleUpgrade(request, socket, head, (ws) => server.accept(ws));
    });
    server.httpServer.listen(0, '127.0.0.1');
    await once(server.httpServer, 'listening');
    return server;
  }

  get baseUrl(): string {
    const { port } = this.httpServer.address() as AddressInfo;
    return `http://127.0.0.1:${port}`;
  }

  addFirmware(name: string, bytes: Buffer): void {
    this.blobs.set(name, bytes);
  }

  /** A link to a stored image, valid until `expiresAt` (the store answers 403 afterwards). */
  firmwareLink(name: string, expiresAt: Date): { url: string; url_expires_at: string } {
    return {
      url: `${this.baseUrl}/fw/${name}?expires=${expiresAt.getTime()}`,
      url_expires_at: expiresAt.toISOString(),
    };
  }

  isConnected(deviceId: string): boolean {
    return this.sockets.get(deviceId)?.readyState === WebSocket.OPEN;
  }

  framesFrom(deviceId: string, predicate: (message: Envelope) => boolean = () => true): Envelope[] {
    return this.frames.filter((f) => f.deviceId === deviceId && predicate(f.message)).map((f) => f.message);
  }

  commandsFrom(deviceId: string, action: string): Envelope[] {
    return this.framesFrom(deviceId, (m) => m.type === 'command' && m.action === action);
  }

  /** Resolves when `condition` holds, re-checked after every frame and every 20 ms. */
  async waitFor(description: string, condition: () => boolean, timeoutMs = 15_000): Promise<void> {
    if (condition()) return;
    await new Promise<void>((resolve, reject) => {
      const check = () => {
        if (!condition()) return;
        cleanup();
        resolve();
      };
      const poll = setInterval(check, 20);
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out waiting for: ${description}`));
      }, timeoutMs);
      const cleanup = () => {
        clearInterval(poll);
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
    });
  }

  /** Sends a cloud → device command without waiting for the answer; returns its id. */
  sendCommand(deviceId: string, action: string, payload: unknown): string {
    const socket = this.sockets.get(deviceId);
    if (!socket) throw new Error(`${deviceId} is not connected`);
    const id = `cmd-${++this.commandCounter}`;
    socket.send(encodeFrame({ type: 'command', id, action, payload }));
    return id;
  }

  /** Sends a cloud → device command and resolves with the device's response. */
  async command(deviceId: string, action: string, payload: unknown, timeoutMs = 5_000): Promise<Envelope> {
    const id = this.sendCommand(deviceId, action, payload);
    let response: Envelope | undefined;
    await this.waitFor(
      `response ${id}`,
      () => {
        response = this.framesFrom(deviceId, (m) => m.type === 'response' && m.id === id)[0];
        return response !== undefined;
      },
      timeoutMs,
    );
    return response!;
  }

  sendRaw(deviceId: string, text: string): void {
    this.sockets.get(deviceId)?.send(text);
  }

  disconnect(deviceId: string, code = 1001, reason = 'going away'): void {
    this.sockets.get(deviceId)?.close(code, reason);
  }

  async close(): Promise<void> {
    for (const socket of this.allSockets) socket.terminate();
    this.wss.close();
    this.httpServer.closeAllConnections();
    await new Promise<void>((resolve) => this.httpServer.close(() => resolve()));
  }

  private accept(socket: WebSocket): void {
    this.allSockets.add(socket);
    socket.on('close', () => this.allSockets.delete(socket));
    let deviceId: string | undefined;
    socket.on('message', (data) => {
      const text = data.toString();
      const parsed = parseFrame(text);
      if (!parsed.ok) return;
      const message = parsed.message;
      if (!deviceId && message.type === 'connect') {
        const expectedKey = message.device_id ? this.deviceKeys.get(message.device_id) : undefined;
        if (!message.device_id || (expectedKey !== undefined && expectedKey !== message.api_key)) {
          this.record(message.device_id, message, text);
          socket.send(encodeFrame({ type: 'error', error: 'authentication failed' }));
          socket.close(4003, 'authentication failed');
          return;
        }
        deviceId = message.device_id;
        this.sockets.get(deviceId)?.close(4009, 'replaced');
        this.sockets.set(deviceId, socket);
        socket.on('close', () => {
          if (deviceId && this.sockets.get(deviceId) === socket) this.sockets.delete(deviceId);
        });
        this.record(deviceId, message, text);
        socket.send(encodeFrame({ type: 'connected' }));
        return;
      }
      this.record(deviceId, message, text);
      if (message.type === 'ping' && this.answerPings) socket.send(encodeFrame({ type: 'pong' }));
      if (message.type === 'command') this.answerDeviceCommand(socket, message);
    });
  }

  private answerDeviceCommand(socket: WebSocket, message: Envelope): void {
    const reply = (data: unknown) =>
      socket.send(encodeFrame({ type: 'response', id: message.id, status: 'success', data }));
    switch (message.action) {
      case 'ota_result':
        if (this.acknowledgeResults) reply({ recorded: true });
        return;
      case 'ota_refresh_url': {
        const updateId = (message.payload as { update_id: string }).update_id;
        const name = this.refreshTargets.get(updateId);
        if (!name) {
          socket.send(encodeFrame({ type: 'response', id: message.id, status: 'error', error: 'unknown update' }));
          return;
        }
        reply(this.firmwareLink(name, new Date(Date.now() + 3_600_000)));
        return;
      }
      default:
        reply({ ok: true });
    }
  }

  /** Which image `ota_refresh_url` hands out a fresh link for, per update. */
  readonly refreshTargets = new Map<string, string>();

  private record(deviceId: string | undefined, message: Envelope, text: string): void {
    this.frames.push({ deviceId, message, raw: JSON.parse(text) as Record<string, unknown> });
    for (const waiter of [...this.waiters]) waiter();
  }

  private serveFirmware(request: http.IncomingMessage, response: http.ServerResponse): void {
    const url = new URL(request.url ?? '/', this.baseUrl);
    const name = url.pathname.replace(/^\/fw\//, '');
    const blob = this.blobs.get(name);
    const range = this.ignoreRange ? undefined : request.headers.range;
    let connection = this.connections.get(request.socket);
    if (connection === undefined) {
      connection = this.connections.size;
      this.connections.set(request.socket, connection);
    }
    const log: FirmwareRequest = { name, range: request.headers.range, status: 0, bytesSent: 0, connection };
    this.firmwareRequests.push(log);
    const finish = (status: number) => {
      log.status = status;
      response.writeHead(status).end();
    };
    if (!blob) return finish(404);
    if (Number(url.searchParams.get('expires')) < Date.now()) return finish(403);
    if (this.busy && this.busy.answers > 0) {
      this.busy.answers -= 1;
      log.status = 503;
      // As EdgeFlow answers it: a short JSON error.
      const body = JSON.stringify({ error: { code: 'downloads_busy', message: 'try again shortly' } });
      response
        .writeHead(503, {
          'retry-after': this.busy.retryAfter,
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
        })
        .end(body);
      return;
    }
    let start = 0;
    if (range) {
      const match = /^bytes=(\d+)-$/.exec(range);
      start = Number(match?.[1] ?? Number.NaN);
      if (!match || start >= blob.length) {
        log.status = 416;
        response.writeHead(416, { 'content-range': `bytes */${blob.length}` }).end();
        return;
      }
    }
    const body = blob.subarray(start);
    log.status = range ? 206 : 200;
    response.writeHead(log.status, {
      'content-length': body.length,
      'accept-ranges': 'bytes',
      ...(range ? { 'content-range': `bytes ${start}-${blob.length - 1}/${blob.length}` } : {}),
    });
    const dropAfter = this.dropNextDownloadAfterBytes;
    if (dropAfter !== undefined && dropAfter < body.length) {
      this.dropNextDownloadAfterBytes = undefined;
      log.bytesSent = dropAfter;
      response.write(body.subarray(0, dropAfter), () => setTimeout(() => response.socket?.destroy(), 20));
      return;
    }
    log.bytesSent = body.length;
    response.end(body);
  }
}
