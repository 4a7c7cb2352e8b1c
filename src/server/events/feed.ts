/**
 * The event feed: domain events travel through the database, so every server process sees
 * every change wherever it happened. Writers publish with `pg_notify` inside the statement or
 * transaction that made the change (nothing is announced that did not commit; see
 * `notifySql`); each process LISTENs once and hands the checked, typed events to its
 * subscribers (the SSE streams, the update engine, the tunnel hub).
 *
 * A notification sent while a process's listening connection was down is lost to it: after
 * the connection comes back, `onResync` subscribers re-read what they depend on (the engine
 * runs a dispatch pass; SSE clients are told to reload).
 */
import type { Logger } from 'pino';
import { type Db, type Queryable, readNotification } from '../infra/db.ts';
import { type EventName, type EventOf, feedMessage } from '../model/events.ts';

export const EVENT_CHANNEL = 'edgeflow_events';
/** PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; long texts are cut well below. */
export const MAX_EVENT_TEXT = 1000;

type Handler<Name extends EventName> = (event: EventOf<Name>) => void;

/**
 * SQL of the `pg_notify` call announcing one event: `data` is a SQL expression building the
 * payload object (json_build_object over the changed row), so the event is written by the same
 * statement that wrote the change.
 */
export function notifySql(name: EventName, data: string): string {
  return `pg_notify('${EVENT_CHANNEL}', json_build_object('type', '${name}', 'data', ${data})::text)`;
}

/** The time of the change as the events carry it (RFC 3339, UTC, milliseconds). */
export const EVENT_AT_SQL = `to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

export class EventFeed {
  readonly #db: Db;
  readonly #log: Logger;
  readonly #handlers = new Map<EventName, Set<Handler<never>>>();
  readonly #resync = new Set<() => void>();
  readonly #stopping = new Set<() => void>();
  #unlisten: (() => Promise<void>) | undefined;

  constructor(deps: { db: Db; log: Logger }) {
    this.#db = deps.db;
    this.#log = deps.log;
  }

  /** Starts listening; events published before this are not seen. */
  async start(): Promise<void> {
    if (this.#unlisten) return;
    this.#unlisten = await this.#db.listen(EVENT_CHANNEL, (payload) => this.#receive(payload), {
      onReconnect: () => {
        this.#log.info('event feed listening again after a database interruption');
        for (const handler of this.#resync) handler();
      },
    });
  }

  /** Stops listening; `onStop` subscribers (open SSE streams) end first. */
  async stop(): Promise<void> {
    for (const handler of this.#stopping) handler();
    this.#stopping.clear();
    const unlisten = this.#unlisten;
    this.#unlisten = undefined;
    await unlisten?.();
  }

  /** Subscribes to one event name; returns the unsubscribe function. */
  on<Name extends EventName>(name: Name, handler: Handler<Name>): () => void {
    let set = this.#handlers.get(name);
    if (!set) {
      set = new Set();
      this.#handlers.set(name, set);
    }
    set.add(handler as Handler<never>);
    return () => set.delete(handler as Handler<never>);
  }

  /** Called after the listening connection came back: notifications in the gap were lost. */
  onResync(handler: () => void): () => void {
    this.#resync.add(handler);
    return () => this.#resync.delete(handler);
  }

  /** Called once when the feed stops (the server shuts down). */
  onStop(handler: () => void): () => void {
    this.#stopping.add(handler);
    return () => this.#stopping.delete(handler);
  }

  /** Subscribers of one event name (tests check that a closed stream unsubscribed). */
  subscriberCount(name: EventName): number {
    return this.#handlers.get(name)?.size ?? 0;
  }

  /** Announces an event in `tx`: delivered to every process once (and if) `tx` commits. */
  async publish<Name extends EventName>(tx: Queryable, name: Name, data: EventOf<Name>): Promise<void> {
    await tx.query('SELECT pg_notify($1, $2)', [EVENT_CHANNEL, JSON.stringify({ type: name, data })]);
  }

  #receive(payload: string): void {
    const message = readNotification(payload, feedMessage, (text) =>
      this.#log.warn({ payload: text }, 'event feed: ignoring a notification that is no known event'),
    );
    if (!message) return;
    const { type, data } = message as { type: EventName; data: unknown };
    for (const handler of this.#handlers.get(type) ?? []) {
      try {
        (handler as (event: unknown) => void)(data);
      } catch (error) {
        this.#log.error({ err: error, event: type }, 'event feed subscriber failed');
      }
    }
  }
}
