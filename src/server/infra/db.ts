/**
 * One small query interface over both databases: embedded PGlite (Postgres compiled to WASM)
 * and PostgreSQL through `pg`. Both speak the same SQL; repositories use only this.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync } from 'node:fs';
import { cp, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { PGlite, type PGliteInterface } from '@electric-sql/pglite';
import pg from 'pg';

export interface Queryable {
  query<Row = Record<string, unknown>>(text: string, params?: readonly unknown[]): Promise<Row[]>;
  /** Runs a script of several statements without parameters (migrations). */
  exec(script: string): Promise<void>;
}

export type Notification = { channel: string; payload: string };

/**
 * A NOTIFY payload read as JSON and checked; undefined (and `ignored` told why) when it is not
 * JSON or not what `check` accepts: a listener never throws on another writer's text.
 */
export function readNotification<T>(
  payload: string,
  check: { Check(value: unknown): value is T },
  ignored: (payload: string) => void,
): T | undefined {
  let message: unknown;
  try {
    message = JSON.parse(payload);
  } catch {
    message = undefined;
  }
  if (check.Check(message)) return message;
  ignored(payload.slice(0, 200));
  return undefined;
}

/** An element of a bulk statement's array parameter (unnest). */
type ArrayElement = string | number | boolean | null;

/**
 * An array parameter of a bulk statement (`unnest($1::text[], …)`) as PostgreSQL's array literal,
 * made by one JSON.stringify: the drivers quote an array element by element, which for a
 * deployment's 10,000 rows of ten columns was most of the garbage its creation left (P1). JSON and
 * an array literal agree on quoted strings, numbers, true/false and an unquoted null; they differ
 * only where JSON escapes (a quote, a backslash, a control character), so such an array goes as
 * it is, for the driver to quote. Both drivers send a string as it is.
 */
export function arrayParam(values: readonly ArrayElement[]): string | readonly ArrayElement[] {
  const json = JSON.stringify(values);
  return json.includes('\\') ? values : `{${json.slice(1, -1)}}`;
}

export interface Db extends Queryable {
  readonly kind: 'pglite' | 'postgres';
  /** Runs `work` in one transaction: committed when it resolves, rolled back when it throws. */
  transaction<T>(work: (tx: Queryable) => Promise<T>): Promise<T>;
  /**
   * Subscribes to NOTIFY on `channel`; returns the unsubscribe function. A lost listening
   * connection is re-established by itself, and `onReconnect` runs once it listens again
   * (what was notified in between is lost).
   */
  listen(
    channel: string,
    onPayload: (payload: string) => void,
    options?: { onReconnect?: () => void },
  ): Promise<() => Promise<void>>;
  /**
   * Whether the database answers: at once when a statement succeeded within the last
   * READY_WITHIN_MS, else by running one. A readiness check under load must not queue behind a
   * busy pool (a load balancer would take a working replica out, or every replica at once).
   */
  ping(): Promise<void>;
  close(): Promise<void>;
}

const READY_WITHIN_MS = 2000;

/** The listening connection's name in pg_stat_activity: which process it serves. */
export const LISTENER_APPLICATION_NAME = `edgeflow-listen:${process.pid}`;

// Sizes and counters fit a JS number; read int8 as one on both databases.
pg.types.setTypeParser(pg.types.builtins.INT8, (value) => Number(value));

class PgliteDb implements Db {
  readonly kind = 'pglite' as const;
  constructor(readonly pglite: PGliteInterface) {}

  async query<Row>(text: string, params: readonly unknown[] = []): Promise<Row[]> {
    return (await this.pglite.query<Row>(text, params as unknown[])).rows;
  }

  async exec(script: string) {
    await this.pglite.exec(script);
  }

  async ping() {
    await this.pglite.query('SELECT 1');
  }

  transaction<T>(work: (tx: Queryable) => Promise<T>): Promise<T> {
    return this.pglite.transaction((tx) =>
      work({
        query: async <Row>(text: string, params: readonly unknown[] = []) =>
          (await tx.query<Row>(text, params as unknown[])).rows,
        exec: async (script: string) => {
          await tx.exec(script);
        },
      }),
    );
  }

  /** In-process: PGlite's notifications never travel over a connection that could drop. */
  async listen(channel: string, onPayload: (payload: string) => void) {
    const unsubscribe = await this.pglite.listen(channel, onPayload);
    return async () => unsubscribe();
  }

  async close() {
    if (!this.pglite.closed) await this.pglite.close();
  }
}

class PostgresDb implements Db {
  readonly kind = 'postgres' as const;
  private listener: pg.Client | undefined;
  private listening: Promise<pg.Client> | undefined;
  private closed = false;
  private readonly handlers = new Map<string, Set<(payload: string) => void>>();
  private readonly reconnectHandlers = new Set<() => void>();

  constructor(
    private readonly pool: pg.Pool,
    private readonly clientConfig: pg.ClientConfig,
  ) {}

  /** When a statement last succeeded (performance.now()). */
  private answeredAtMs = Number.NEGATIVE_INFINITY;

  async query<Row>(text: string, params: readonly unknown[] = []): Promise<Row[]> {
    const { rows } = await this.pool.query(text, params as unknown[]);
    this.answeredAtMs = performance.now();
    return rows as Row[];
  }

  async ping() {
    if (performance.now() - this.answeredAtMs > READY_WITHIN_MS) await this.query('SELECT 1');
  }

  async exec(script: string) {
    await this.pool.query(script);
  }

  async transaction<T>(work: (tx: Queryable) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      const result = await work({
        query: async <Row>(text: string, params: readonly unknown[] = []) =>
          (await client.query(text, params as unknown[])).rows as Row[],
        exec: async (script: string) => {
          await client.query(script);
        },
      });
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      throw error;
    } finally {
      client.release();
    }
  }

  /** One dedicated connection carries every LISTEN of this process. */
  async listen(channel: string, onPayload: (payload: string) => void, options: { onReconnect?: () => void } = {}) {
    const reconnected = options.onReconnect;
    if (reconnected) this.reconnectHandlers.add(reconnected);
    let set = this.handlers.get(channel);
    const first = !set;
    if (!set) {
      set = new Set();
      this.handlers.set(channel, set);
    }
    set.add(onPayload);
    const listener = await this.connectListener();
    if (first) await listener.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
    return async () => {
      set.delete(onPayload);
      if (reconnected) this.reconnectHandlers.delete(reconnected);
    };
  }

  private connectListener(): Promise<pg.Client> {
    this.listening ??= (async () => {
      const client = new pg.Client({ ...this.clientConfig, application_name: LISTENER_APPLICATION_NAME });
      client.on('notification', (message) => {
        for (const handler of this.handlers.get(message.channel) ?? []) handler(message.payload ?? '');
      });
      // 'end' follows an error; the reconnect starts there.
      client.on('error', () => {});
      client.on('end', () => {
        if (this.listener !== client || this.closed) return;
        this.listener = undefined;
        this.listening = undefined;
        void this.relisten();
      });
      try {
        await client.connect();
        for (const channel of this.handlers.keys()) await client.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
      } catch (error) {
        this.listening = undefined;
        await client.end().catch(() => {});
        throw error;
      }
      this.listener = client;
      return client;
    })();
    return this.listening;
  }

  /** Back to listening after the connection was lost, retrying with a capped backoff. */
  private async relisten(): Promise<void> {
    for (let delayMs = 100; !this.closed; delayMs = Math.min(delayMs * 2, 5000)) {
      await new Promise((resolve) => setTimeout(resolve, delayMs).unref());
      if (this.closed) return;
      try {
        await this.connectListener();
      } catch {
        continue;
      }
      for (const handler of this.reconnectHandlers) handler();
      return;
    }
  }

  async close() {
    this.closed = true;
    const listener = this.listener;
    this.listener = undefined;
    await listener?.end().catch(() => {});
    if (!this.pool.ended && !this.pool.ending) await this.pool.end();
  }
}

export interface OpenDbOptions {
  /** PostgreSQL connection string; when absent, PGlite. */
  databaseUrl?: string | undefined;
  /** PGlite data directory; when absent (and no URL), an in-memory database. */
  dataDir?: string | undefined;
  /** PostgreSQL schema to use (tests isolate runs in a schema of their own). */
  schema?: string | undefined;
  poolSize?: number;
}

export async function openDb(options: OpenDbOptions): Promise<Db> {
  if (options.databaseUrl) {
    const clientConfig: pg.ClientConfig = {
      connectionString: options.databaseUrl,
      ...(options.schema ? { options: `-c search_path=${options.schema}` } : {}),
    };
    const pool = new pg.Pool({ ...clientConfig, max: options.poolSize ?? 20 });
    // An idle client losing its connection must not crash the process; the next query reconnects.
    pool.on('error', () => {});
    const db = new PostgresDb(pool, clientConfig);
    await db.query('SELECT 1');
    return db;
  }
  if (options.dataDir) await createPgliteDataDir(options.dataDir);
  const pglite = new PGlite(options.dataDir, { startParams: [...PGlite.defaultStartParams, ...SMALL_INSTANCE] });
  await pglite.waitReady;
  return new PgliteDb(pglite);
}

/**
 * PostgreSQL settings for one embedded process serving one fleet. PGlite allocates and zeroes
 * its shared memory at start, so shared_buffers is resident from the first second: the
 * default 128 MB alone was most of an idle server's memory. The database files stay in the
 * operating system's page cache; 8 MB of buffers (wal_buffers follow at 1/32) hold the hot
 * rows of a large fleet: P1, P2 and P3 on PGlite ran as fast as with 16 MB, and the idle server
 * is ~15 MiB smaller (docs/benchmarks.md, P6). One backend, so few connection slots.
 */
const SMALL_INSTANCE = ['shared_buffers=8MB', 'max_connections=5'].flatMap((setting) => ['-c', setting]);

/**
 * Creates the PGlite data directory when there is none. initdb is the expensive part of a first
 * start (~8 s of CPU inside PGlite's WebAssembly, two instances, ~750 MB that a process keeps
 * until a full GC), and its result is the same every time: so it runs once per installation, in a
 * child process that returns all that memory when it exits, and what it made is kept as a
 * template beside the installed packages (`node_modules/.cache/edgeflow-ota`); later first starts
 * copy the template. The directory is built beside the target and renamed in place, so a crash
 * part-way leaves no half-initialised directory. A template that cannot be written (a read-only
 * installation) only means the next first start runs initdb again.
 */
async function createPgliteDataDir(dataDir: string): Promise<void> {
  if (existsSync(path.join(dataDir, 'PG_VERSION'))) return;
  if (existsSync(dataDir) && readdirSync(dataDir).length > 0) return; // not ours to replace; PGlite decides
  mkdirSync(path.dirname(dataDir), { recursive: true });
  // One name, so what a crash leaves behind is removed by the next start.
  const building = `${dataDir}.creating`;
  await rm(building, { recursive: true, force: true });
  try {
    const template = pgliteTemplateDir();
    if (existsSync(path.join(template, 'PG_VERSION'))) await cp(template, building, { recursive: true });
    else {
      await initPgliteDataDir(building);
      await keepAsTemplate(building, template);
    }
    if (existsSync(dataDir)) rmdirSync(dataDir);
    await rename(building, dataDir);
  } finally {
    await rm(building, { recursive: true, force: true });
  }
}

const PGLITE_ENTRY = import.meta.resolve('@electric-sql/pglite');

/** Where the initdb template of the installed PGlite is kept: one per PGlite version. */
function pgliteTemplateDir(): string {
  const packageDir = path.resolve(fileURLToPath(PGLITE_ENTRY), '..', '..');
  const { version } = JSON.parse(readFileSync(path.join(packageDir, 'package.json'), 'utf8')) as { version: string };
  return path.join(packageDir, '..', '..', '.cache', 'edgeflow-ota', `pglite-${version}-initdb`);
}

async function initPgliteDataDir(target: string): Promise<void> {
  await promisify(execFile)(
    process.execPath,
    [
      '--input-type=module',
      '--eval',
      'const { PGlite } = await import(process.argv[1]); await (await PGlite.create(process.argv[2])).close();',
      PGLITE_ENTRY,
      target,
    ],
    { maxBuffer: 16 * 1024 * 1024 },
  );
}

/** Copies a fresh data directory to the template's place, whole or not at all (two first starts may race). */
async function keepAsTemplate(source: string, template: string): Promise<void> {
  const partial = `${template}.${process.pid}.${Date.now()}`;
  try {
    await cp(source, partial, { recursive: true });
    await rename(partial, template);
  } catch {
    // Read-only, out of space, or another start got there first: the template is only a saving.
  } finally {
    await rm(partial, { recursive: true, force: true }).catch(() => {});
  }
}

/** Wraps an already open PGlite (tests clone a migrated template). */
export function wrapPglite(pglite: PGliteInterface): Db {
  return new PgliteDb(pglite);
}
