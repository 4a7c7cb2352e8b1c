/**
 * Commands for a device wherever its tunnel is. A device's tunnel lands on any replica; a request
 * that needs the device's answer (the health check before a single update or a rollback) may
 * reach another. The relay sends the command through this process's hub when the tunnel is here;
 * otherwise it asks the replica that holds it (`devices.connected_node`, a live `server_nodes`
 * entry) through PostgreSQL: a NOTIFY on that replica's own channel, answered by a NOTIFY on the
 * asker's. Nothing is stored: an ask or answer lost with a listening connection is a
 * DeviceUnresponsiveError after the command's own wait, as a silent device would be.
 *
 * The embedded database serves one process (the data directory is locked): there, a device not
 * connected here is offline.
 *
 * Work that follows the tunnel (claiming a device's queued updates, cancels, bake probes) is done
 * by the replica holding it and needs no relay; see updates/engine.ts and deployments/device-effects.ts.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { Type } from 'typebox';
import { Compile } from 'typebox/compile';
import type { WireError } from '../../protocol/wire-error.ts';
import { type Db, readNotification } from '../infra/db.ts';
import {
  checkHealth,
  DeviceCommandError,
  DeviceOfflineError,
  type DeviceRef,
  DeviceUnresponsiveError,
  type TunnelHub,
} from './hub.ts';

/** PostgreSQL refuses NOTIFY payloads of 8000 bytes or more. */
const MAX_MESSAGE_BYTES = 7900;
/** An answer is waited for this much longer than the device is: the replica in between answers late. */
const RELAY_SLACK_MS = 2000;

/** A replica's own channel: asks for its devices and answers to its asks. */
export function relayChannel(nodeId: string): string {
  return `edgeflow_relay_${nodeId}`;
}

const Ask = Type.Object({
  kind: Type.Literal('ask'),
  id: Type.String(),
  from: Type.String(),
  organization_id: Type.String(),
  device_id: Type.String(),
  action: Type.String(),
  payload: Type.Unknown(),
  timeout_ms: Type.Number(),
});

/** Why a relayed command has no answer data, as the holder's hub said it. */
const Failure = Type.Union([
  Type.Object({ kind: Type.Literal('offline'), why: Type.String() }),
  Type.Object({ kind: Type.Literal('unresponsive'), waited_ms: Type.Number() }),
  Type.Object({ kind: Type.Literal('refused'), error: Type.Object({ code: Type.String(), message: Type.String() }) }),
]);

const Answer = Type.Object({
  kind: Type.Literal('answer'),
  id: Type.String(),
  data: Type.Optional(Type.Unknown()),
  failure: Type.Optional(Failure),
});

const checkMessage = Compile(Type.Union([Ask, Answer]));
type AskMessage = Type.Static<typeof Ask>;
type FailureMessage = Type.Static<typeof Failure>;

interface Asked {
  device: DeviceRef;
  action: string;
  timer: NodeJS.Timeout;
  resolve(data: unknown): void;
  reject(error: Error): void;
}

export interface CommandRelayDeps {
  db: Db;
  hub: TunnelHub;
  nodeId: string;
  log: Logger;
}

export class CommandRelay {
  readonly #deps: CommandRelayDeps;
  readonly #asked = new Map<string, Asked>();
  #unlisten: (() => Promise<void>) | undefined;

  constructor(deps: CommandRelayDeps) {
    this.#deps = deps;
  }

  /** Listens on this replica's channel (PostgreSQL only: the embedded database has no other replica). */
  async start(): Promise<void> {
    const { db, nodeId } = this.#deps;
    if (db.kind !== 'postgres' || this.#unlisten) return;
    this.#unlisten = await db.listen(relayChannel(nodeId), (payload) => this.#receive(payload));
  }

  async stop(): Promise<void> {
    const unlisten = this.#unlisten;
    this.#unlisten = undefined;
    await unlisten?.();
    for (const [id, asked] of this.#asked)
      this.#settle(id, asked, new DeviceUnresponsiveError(asked.device.deviceId, asked.action, 0));
  }

  /**
   * Sends a command and waits for the device's answer `data`, through the replica that holds its
   * tunnel. Rejects as the hub does: DeviceOfflineError (no replica holds it), DeviceUnresponsiveError,
   * DeviceCommandError.
   */
  async command(device: DeviceRef, action: string, payload: unknown, timeoutMs: number): Promise<unknown> {
    const { hub, db, nodeId } = this.#deps;
    if (hub.isConnected(device.organizationId, device.deviceId) || db.kind !== 'postgres') {
      return hub.command(device, action, payload, timeoutMs);
    }
    const holder = await this.#holderOf(device);
    if (!holder || holder === nodeId) throw new DeviceOfflineError(device.deviceId);
    const id = randomUUID();
    const ask: AskMessage = {
      kind: 'ask',
      id,
      from: nodeId,
      organization_id: device.organizationId,
      device_id: device.deviceId,
      action,
      payload,
      timeout_ms: timeoutMs,
    };
    const text = JSON.stringify(ask);
    if (Buffer.byteLength(text) > MAX_MESSAGE_BYTES) {
      throw new Error(`a relayed ${action} command is limited to ${MAX_MESSAGE_BYTES} bytes`);
    }
    const answer = new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(
        () => this.#settle(id, this.#asked.get(id), new DeviceUnresponsiveError(device.deviceId, action, timeoutMs)),
        timeoutMs + RELAY_SLACK_MS,
      );
      this.#asked.set(id, { device, action, timer, resolve, reject });
    });
    try {
      await db.query('SELECT pg_notify($1, $2)', [relayChannel(holder), text]);
    } catch (error) {
      this.#settle(id, this.#asked.get(id), error as Error);
    }
    return answer;
  }

  /** Whether the device is healthy, wherever its tunnel is (see TunnelHub.healthCheck). */
  healthCheck(device: DeviceRef, timeoutMs: number) {
    return checkHealth(device, (action, payload) => this.command(device, action, payload, timeoutMs));
  }

  /** The live replica holding the device's tunnel, if any. */
  async #holderOf(device: DeviceRef): Promise<string | undefined> {
    const [row] = await this.#deps.db.query<{ node: string }>(
      `SELECT d.connected_node AS node FROM devices d JOIN server_nodes n ON n.id = d.connected_node
       WHERE d.organization_id = $1 AND d.device_id = $2 AND d.online`,
      [device.organizationId, device.deviceId],
    );
    return row?.node;
  }

  #settle(id: string, asked: Asked | undefined, error: Error | undefined, data?: unknown): void {
    if (!asked) return;
    this.#asked.delete(id);
    clearTimeout(asked.timer);
    if (error) asked.reject(error);
    else asked.resolve(data);
  }

  #receive(payload: string): void {
    const message = readNotification(payload, checkMessage, (text) =>
      this.#deps.log.warn({ payload: text }, 'command relay: ignoring a message it cannot read'),
    );
    if (!message) return;
    if (message.kind === 'ask') {
      void this.#run(message);
      return;
    }
    const asked = this.#asked.get(message.id);
    if (!asked) return;
    const failure = message.failure;
    if (!failure) this.#settle(message.id, asked, undefined, message.data);
    else this.#settle(message.id, asked, errorOf(asked, failure));
  }

  /** Runs an ask for a device held here and answers the asker, whatever the outcome. */
  async #run(ask: AskMessage): Promise<void> {
    const device = { organizationId: ask.organization_id, deviceId: ask.device_id };
    let answer: Type.Static<typeof Answer>;
    try {
      const data = await this.#deps.hub.command(device, ask.action, ask.payload, ask.timeout_ms);
      answer = { kind: 'answer', id: ask.id, data };
    } catch (error) {
      answer = { kind: 'answer', id: ask.id, failure: failureOf(error as Error, ask.timeout_ms) };
    }
    let text = JSON.stringify(answer);
    if (Buffer.byteLength(text) > MAX_MESSAGE_BYTES) {
      const message = `its answer to ${ask.action} is too long to relay between replicas`;
      text = JSON.stringify({
        kind: 'answer',
        id: ask.id,
        failure: { kind: 'refused', error: { code: 'unspecified', message } },
      });
    }
    await this.#deps.db.query('SELECT pg_notify($1, $2)', [relayChannel(ask.from), text]).catch((error: Error) => {
      this.#deps.log.warn({ err: error, action: ask.action }, 'command relay: could not answer another replica');
    });
  }
}

function failureOf(error: Error, waitedMs: number): FailureMessage {
  if (error instanceof DeviceCommandError) return { kind: 'refused', error: error.deviceError };
  if (error instanceof DeviceUnresponsiveError) return { kind: 'unresponsive', waited_ms: waitedMs };
  return { kind: 'offline', why: error instanceof DeviceOfflineError ? 'it has no open tunnel' : error.message };
}

function errorOf(asked: Asked, failure: FailureMessage): Error {
  const { deviceId } = asked.device;
  switch (failure.kind) {
    case 'refused':
      return new DeviceCommandError(asked.action, failure.error as WireError);
    case 'unresponsive':
      return new DeviceUnresponsiveError(deviceId, asked.action, failure.waited_ms);
    case 'offline':
      return new DeviceOfflineError(deviceId, failure.why);
  }
}
