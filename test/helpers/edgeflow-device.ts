/**
 * A stock EdgeFlow device: EdgeFlow's own Go tunnel agent with EdgeFlow's own command handler,
 * unmodified, reproduced frame for frame from EdgeFlow's public source (a stand-in, because a
 * Go toolchain cannot build their agent here). What it sends:
 *
 * - `connect` without `id`, with a nanosecond RFC 3339 `timestamp` (Go's `time.RFC3339Nano`);
 * - `ping` without `id` on a heartbeat loop, and one more heartbeat loop after each reconnect
 *   (their agent starts a loop per connection and never stops the old one), so after the first
 *   reconnect it pings twice per interval (every 15 s with the stock 30 s);
 * - `health_check` answered `{"status":"healthy","uptime":"TODO","version":"1.0.0"}` — uptime is
 *   a string there;
 * - any action its handler does not know (`ota_update` among them) answered with status `error`
 *   and `"error":"unknown command action: <action>"`;
 * - it never reports its firmware version;
 * - reconnects 5 times, 5 s × attempt (capped at 60 s), then gives up (about 75 s in all).
 */
import WebSocket from 'ws';
import { tunnelUrl } from './raw-device.ts';

/** Go's time.RFC3339Nano: nine fractional digits (trailing zeros trimmed), here in UTC. */
export function goNanoTimestamp(date = new Date()): string {
  const nanos = `${String(date.getUTCMilliseconds()).padStart(3, '0')}${String(Math.floor(Math.random() * 1e6)).padStart(6, '0')}`;
  return date.toISOString().replace(/\.\d{3}Z$/, `.${nanos.replace(/0+$/, '') || '0'}Z`);
}

/** The actions EdgeFlow's command handler knows; everything else is an unknown command action. */
const KNOWN_ACTIONS = new Set([
  'health_check',
  'list_flows',
  'get_flow',
  'start_flow',
  'stop_flow',
  'create_flow',
  'update_flow',
  'delete_flow',
  'get_shadow',
  'update_desired',
  'get_system_metrics',
  'get_executions',
  'get_gpio_state',
]);

export interface StockDeviceOptions {
  deviceId: string;
  apiKey: string;
  /** The agent version it sends in `connect` (their agent's build version). */
  agentVersion?: string;
  /** Their default is 30 s; tests shorten it. */
  heartbeatIntervalMs?: number;
  /** Their reconnect step: 5 s × attempt; tests shorten it. */
  reconnectStepMs?: number;
  /** Replaces the stock health answer (to make the device unhealthy or unintelligible). */
  healthAnswer?: () => { status: 'success' | 'error'; data?: unknown; error?: string };
}

export class StockEdgeFlowDevice {
  readonly #url: string;
  readonly #options: Required<Omit<StockDeviceOptions, 'healthAnswer'>> & Pick<StockDeviceOptions, 'healthAnswer'>;
  #socket: WebSocket | undefined;
  /** Heartbeat loops started so far; like the original, none is ever stopped on reconnect. */
  readonly #heartbeats: NodeJS.Timeout[] = [];
  #stopped = false;
  /** Every frame received, in order. */
  readonly received: Record<string, unknown>[] = [];
  /** Frames their decoder would have refused (an `error` that is not a string): none, ever. */
  readonly undecodable: Record<string, unknown>[] = [];
  /** Every frame sent, in order. */
  readonly sent: Record<string, unknown>[] = [];
  connects = 0;
  gaveUp = false;

  constructor(httpUrl: string, options: StockDeviceOptions) {
    this.#url = tunnelUrl(httpUrl);
    this.#options = {
      agentVersion: '1.0.0',
      heartbeatIntervalMs: 30_000,
      reconnectStepMs: 5_000,
      ...options,
    };
  }

  get connected(): boolean {
    return this.#socket?.readyState === WebSocket.OPEN && this.connects > 0;
  }

  /** Connects and resolves once the server answered `connected`. */
  async start(): Promise<void> {
    await this.#connect();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const timer of this.#heartbeats) clearInterval(timer);
    const socket = this.#socket;
    if (!socket || socket.readyState === WebSocket.CLOSED) return;
    await new Promise<void>((resolve) => {
      socket.once('close', () => resolve());
      socket.close();
    });
  }

  /** Sends a frame as their agent does: JSON with a nanosecond timestamp. */
  send(message: Record<string, unknown>, socket = this.#socket): void {
    const frame = { ...message, timestamp: goNanoTimestamp() };
    this.sent.push(frame);
    socket?.send(JSON.stringify(frame));
  }

  #connect(): Promise<void> {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(this.#url);
      this.#socket = socket;
      let settled = false;
      let established = false;
      socket.on('open', () => {
        const connect = { device_id: this.#options.deviceId, api_key: this.#options.apiKey };
        this.send({ type: 'connect', ...connect, version: this.#options.agentVersion }, socket);
      });
      socket.on('message', (data) => {
        const message = JSON.parse(data.toString()) as Record<string, unknown>;
        // Their Message struct declares `Error string`: any other JSON type there fails
        // json.Unmarshal, and their read loop logs the frame and skips it.
        if ('error' in message && typeof message.error !== 'string') {
          this.undecodable.push(message);
          return;
        }
        this.received.push(message);
        if (message.type === 'connected' && !settled) {
          settled = true;
          established = true;
          this.connects++;
          this.#startHeartbeat();
          resolve();
          return;
        }
        if (message.type === 'error' && !settled) {
          settled = true;
          reject(new Error(`refused: ${String(message.error)}`));
          return;
        }
        if (message.type === 'command') this.#answer(message);
      });
      socket.on('error', (error) => {
        if (!settled) {
          settled = true;
          reject(error);
        }
      });
      socket.on('close', () => {
        if (!settled) {
          settled = true;
          reject(new Error('closed before connected'));
        }
        // Only a dropped connection starts their retry loop; a failed dial is that loop's next attempt.
        if (!this.#stopped && established) void this.#reconnect();
      });
    });
  }

  #startHeartbeat(): void {
    const timer = setInterval(() => {
      if (this.#socket?.readyState === WebSocket.OPEN) this.send({ type: 'ping' });
    }, this.#options.heartbeatIntervalMs);
    timer.unref();
    this.#heartbeats.push(timer);
  }

  async #reconnect(): Promise<void> {
    for (let attempt = 1; attempt <= 5 && !this.#stopped; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, Math.min(60_000, this.#options.reconnectStepMs * attempt)));
      if (this.#stopped) return;
      try {
        await this.#connect();
        return;
      } catch {
        // next attempt
      }
    }
    this.gaveUp = !this.#stopped;
  }

  #answer(command: Record<string, unknown>): void {
    const action = String(command.action);
    if (!KNOWN_ACTIONS.has(action)) {
      this.send({ type: 'response', id: command.id, status: 'error', error: `unknown command action: ${action}` });
      return;
    }
    if (action === 'health_check') {
      const answer = this.#options.healthAnswer?.() ?? {
        status: 'success',
        data: { status: 'healthy', uptime: 'TODO', version: '1.0.0' },
      };
      this.send({ type: 'response', id: command.id, ...answer });
      return;
    }
    this.send({ type: 'response', id: command.id, status: 'success', data: {} });
  }
}
