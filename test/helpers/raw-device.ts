/**
 * A bare WebSocket client that sends exactly EdgeFlow's frames, as their Go tunnel agent
 * does: what a real EdgeFlow device looks like to the server.
 */
import WebSocket from 'ws';

export interface RawDevice {
  ws: WebSocket;
  send(message: Record<string, unknown>): void;
  /** The next frame of this type (frames of other types are kept for later calls). */
  next(type: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  closed: Promise<{ code: number; reason: string }>;
  close(): Promise<void>;
}

export function tunnelUrl(httpUrl: string): string {
  return `${httpUrl.replace(/^http/, 'ws')}/tunnel`;
}

/** `localAddress` (e.g. 127.0.0.2) makes the connection come from another loopback address. */
export async function openRaw(httpUrl: string, options: { localAddress?: string } = {}): Promise<RawDevice> {
  const ws = new WebSocket(tunnelUrl(httpUrl), options.localAddress ? { localAddress: options.localAddress } : {});
  const inbox: Record<string, unknown>[] = [];
  const waiters: { type: string; resolve(m: Record<string, unknown>): void }[] = [];
  ws.on('message', (data) => {
    const message = JSON.parse(data.toString()) as Record<string, unknown>;
    const waiter = waiters.findIndex((w) => w.type === message.type);
    if (waiter >= 0) waiters.splice(waiter, 1)[0]!.resolve(message);
    else inbox.push(message);
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
  });
  ws.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return {
    ws,
    send: (message) => ws.send(JSON.stringify(message)),
    next(type, timeoutMs = 5000) {
      const index = inbox.findIndex((m) => m.type === type);
      if (index >= 0) return Promise.resolve(inbox.splice(index, 1)[0]!);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no ${type} frame within ${timeoutMs} ms (× ${PATIENCE})`)),
          timeoutMs * PATIENCE,
        );
        waiters.push({
          type,
          resolve: (m) => {
            clearTimeout(timer);
            resolve(m);
          },
        });
      });
    },
    closed,
    async close() {
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close();
      await closed;
    },
  };
}

/** Connects and authenticates like an EdgeFlow device; resolves after `connected`. */
export async function connectRaw(
  httpUrl: string,
  device: { deviceId: string; apiKey: string; version?: string },
  options: { localAddress?: string } = {},
): Promise<RawDevice> {
  const raw = await openRaw(httpUrl, options);
  raw.send({
    type: 'connect',
    device_id: device.deviceId,
    api_key: device.apiKey,
    version: device.version ?? '1.4.0',
    timestamp: new Date().toISOString(),
  });
  await raw.next('connected');
  return raw;
}

/**
 * How many times its stated time a wait in a test may take. A test's timeout says how long a
 * step takes at most on an idle machine; it is a guard against a hang, never a speed to assert,
 * so the helpers wait this many times as long before they give up: on a machine running a
 * second copy of the suite (load average 15+ on two cores) steps take 3–4× their time.
 */
export const PATIENCE = Number(process.env.EDGEFLOW_TEST_PATIENCE ?? 4);

/**
 * Polls until `check` holds (database writes after a tunnel event are asynchronous). With
 * `progress` (say, how many of a fleet's updates ended so far), the wait is a progress condition:
 * it gives up only after `timeoutMs` (× PATIENCE) in which that figure did not move, so a loaded
 * machine's slow but steady rollout is not taken for a hang; ten such windows bound it in all.
 */
export async function eventually(
  check: () => Promise<boolean>,
  timeoutMs = 5000,
  what = 'condition',
  progress?: () => unknown,
): Promise<void> {
  const window = timeoutMs * PATIENCE;
  const giveUp = Date.now() + (progress ? 10 * window : window);
  let deadline = Date.now() + window;
  let seen = progress?.();
  while (Date.now() < deadline && Date.now() < giveUp) {
    if (await check()) return;
    const now = progress?.();
    if (now !== seen) {
      seen = now;
      deadline = Date.now() + window;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const stalled = progress ? ` without progress (last: ${String(seen)})` : '';
  throw new Error(`${what} did not hold within ${timeoutMs} ms${stalled} (× ${PATIENCE}, the tests' patience)`);
}
