/**
 * Starts a real server (real HTTP listener on loopback) on one of the backends under test:
 * PGlite or PostgreSQL, local store or an S3-protocol server (s3rver). Every server gets a
 * database of its own (a PGlite clone of a migrated template, or a fresh PostgreSQL schema),
 * so tests never see each other's rows.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import type { Logger } from 'pino';
import { LocalBlobStore } from '../../src/server/infra/blobstore/index.ts';
import type { BlobStore } from '../../src/server/infra/blobstore/types.ts';
import { type Config, loadConfig } from '../../src/server/infra/config.ts';
import { type Db, openDb, wrapPglite } from '../../src/server/infra/db.ts';
import { loadMigrations, migrate } from '../../src/server/infra/migrate.ts';
import { bootstrap } from '../../src/server/orgs/service.ts';
import { type RunningServer, startOn } from '../../src/server/server.ts';
import { type RunningS3rver, s3StoreOn, startS3rver } from './s3rver.ts';
import { tempDir } from './temp.ts';

export type DbKind = 'pglite' | 'postgres';
export type StoreKind = 'local' | 's3';
export interface Backend {
  db: DbKind;
  store: StoreKind;
  name: string;
}

export const TEST_DATABASE_URL = process.env.EDGEFLOW_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const IN_CI = process.env.CI === 'true' || process.env.CI === '1';

let postgresReachable: Promise<boolean> | undefined;
async function isPostgresReachable(): Promise<boolean> {
  postgresReachable ??= (async () => {
    const client = new pg.Client({ connectionString: TEST_DATABASE_URL, connectionTimeoutMillis: 3000 });
    try {
      await client.connect();
      await client.query('SELECT 1');
      return true;
    } catch {
      return false;
    } finally {
      await client.end().catch(() => {});
    }
  })();
  return postgresReachable;
}

/**
 * The backends every integration suite runs on: each database and each store at least once,
 * or (`everyCombination`, for suites where rows and objects must agree) all four pairs.
 * PostgreSQL is required in CI: there a missing database fails loudly instead of silently
 * skipping half the suite.
 */
export async function backendsUnderTest(options: { everyCombination?: boolean } = {}): Promise<Backend[]> {
  const fallback = options.everyCombination
    ? 'pglite+local,pglite+s3,postgres+local,postgres+s3'
    : 'pglite+local,postgres+s3';
  const wanted = (process.env.EDGEFLOW_TEST_BACKENDS ?? fallback)
    .split(',')
    .map((entry) => entry.trim())
    .filter(Boolean)
    .map((entry) => {
      const [db, store] = entry.split('+') as [DbKind, StoreKind];
      return { db, store, name: `${db}+${store}` };
    });
  if (wanted.some((backend) => backend.db === 'postgres') && !(await isPostgresReachable())) {
    if (IN_CI) throw new Error(`PostgreSQL is not reachable at ${TEST_DATABASE_URL}; CI needs it`);
    console.warn(`\n*** PostgreSQL unreachable at ${TEST_DATABASE_URL}: skipping the PostgreSQL backends ***\n`);
    return wanted.filter((backend) => backend.db !== 'postgres');
  }
  return wanted;
}

let template: Promise<PGlite> | undefined;
/**
 * A migrated in-memory PGlite, cloned for each server (~0.5–1 s instead of 2–4 s). The migrated
 * database is kept on disk between runs, keyed by PGlite's version and the migrations' text, so a
 * test file loads it (~1 s) instead of running initdb and every migration (~5 s of CPU each file).
 */
function pgliteTemplate(): Promise<PGlite> {
  template ??= (async () => {
    const migrations = loadMigrations();
    const key = createHash('sha256')
      .update(JSON.stringify([pgliteVersion(), migrations]))
      .digest('hex')
      .slice(0, 16);
    const cached = path.join(REPO_CACHE, `pglite-migrated-${key}.tar`);
    if (existsSync(cached)) {
      const loaded = new PGlite({ loadDataDir: new Blob([await readFile(cached)]) });
      await loaded.waitReady;
      return loaded;
    }
    const pglite = new PGlite();
    await migrate(wrapPglite(pglite), migrations);
    const dump = Buffer.from(await (await pglite.dumpDataDir('none')).arrayBuffer());
    const partial = `${cached}.${process.pid}`;
    await mkdir(REPO_CACHE, { recursive: true });
    await writeFile(partial, dump);
    await rename(partial, cached);
    return pglite;
  })();
  return template;
}

const REPO_CACHE = path.resolve('node_modules/.cache/edgeflow-ota');

function pgliteVersion(): string {
  const entry = fileURLToPath(import.meta.resolve('@electric-sql/pglite'));
  return (JSON.parse(readFileSync(path.resolve(entry, '../../package.json'), 'utf8')) as { version: string }).version;
}

/**
 * What survives a restart of a test server: its database (a PGlite directory or a
 * PostgreSQL schema), its local store directory and its port.
 */
export interface PersistentState {
  pgliteDir?: string;
  schema?: string;
  storeDir?: string;
  port?: number;
  adminKey?: string;
  /** Removes everything once the last server of this state is closed. */
  dispose(): Promise<void>;
}

export function persistentState(): PersistentState {
  const state: PersistentState = {
    async dispose() {
      if (state.pgliteDir) await rm(state.pgliteDir, { recursive: true, force: true });
      if (state.storeDir) await rm(state.storeDir, { recursive: true, force: true });
      if (state.schema) await dropSchema(state.schema);
    },
  };
  return state;
}

export async function dropSchema(schema: string): Promise<void> {
  const cleanup = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await cleanup.connect();
  await cleanup.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await cleanup.end();
}

export async function openTestDb(kind: DbKind, state?: PersistentState): Promise<{ db: Db; dispose(): Promise<void> }> {
  if (kind === 'pglite') {
    if (state) {
      state.pgliteDir ??= await tempDir('edgeflow-pglite-');
      const db = await openDb({ dataDir: state.pgliteDir });
      await migrate(db);
      return { db, dispose: () => db.close() };
    }
    const db = wrapPglite(await (await pgliteTemplate()).clone());
    return { db, dispose: () => db.close() };
  }
  const fresh = !state?.schema;
  const schema = state?.schema ?? `t_${randomBytes(6).toString('hex')}`;
  if (state) state.schema = schema;
  if (fresh) {
    const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await admin.connect();
    await admin.query(`CREATE SCHEMA ${schema}`);
    await admin.end();
  }
  const db = await openDb({ databaseUrl: TEST_DATABASE_URL, schema, poolSize: 10 });
  await migrate(db);
  return {
    db,
    async dispose() {
      await db.close();
      if (!state) await dropSchema(schema);
    },
  };
}

let s3rver: Promise<RunningS3rver> | undefined;
/** One S3-protocol server per test process; org ids are random, so keys never collide. */
export function sharedS3rver(): Promise<RunningS3rver> {
  s3rver ??= startS3rver();
  return s3rver;
}

export async function openTestStore(
  kind: StoreKind,
  signingSecret: string,
  state?: PersistentState,
): Promise<{ store: BlobStore; dispose(): Promise<void> }> {
  if (kind === 'local') {
    const rootDir = state?.storeDir ?? (await tempDir('edgeflow-store-'));
    if (state) state.storeDir = rootDir;
    // The server's port is known only after listen: startOn points the links at it then. A
    // restarted server listens on its known port (not 0), so startOn leaves the links alone.
    const publicUrl = state?.port ? `http://127.0.0.1:${state.port}` : 'http://127.0.0.1';
    const store = new LocalBlobStore({ rootDir, publicUrl, signingSecret });
    return { store, dispose: async () => (state ? undefined : rm(rootDir, { recursive: true, force: true })) };
  }
  const s3 = await sharedS3rver();
  const store = s3StoreOn(s3);
  return { store, dispose: async () => {} };
}

export interface TestServer extends RunningServer {
  backend: Backend;
  adminKey: string;
  store: BlobStore;
  db: Db;
  /** Creates an organization; returns its id and admin key. */
  createOrg(name?: string): Promise<{ id: string; adminKey: string }>;
  /** JSON API call; returns status and parsed body. */
  api<T = Record<string, unknown>>(
    method: string,
    urlPath: string,
    key: string | undefined,
    body?: unknown,
  ): Promise<{ status: number; body: T; headers: Headers }>;
}

export interface TestServerOptions {
  env?: Record<string, string>;
  /** The server logs here instead of nowhere. */
  log?: Logger;
  /** Keep the database, store and port for a restart (see persistentState). */
  state?: PersistentState;
  /** The clock of maintenance windows and budgets (Config.now): a test sets the time. */
  now?: () => number;
}

/** JSON API calls against a server at `url`: status, parsed body (or the text), headers. */
export function jsonApi(url: string): TestServer['api'] {
  return async (method, urlPath, key, body) => {
    const response = await fetch(`${url}${urlPath}`, {
      method,
      headers: {
        ...(key ? { authorization: `Bearer ${key}` } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      // not JSON: keep the text
    }
    return { status: response.status, body: parsed as never, headers: response.headers };
  };
}

/** Stops when every test file stops: call `close()` in `after`. */
export async function startTestServer(backend: Backend, options: TestServerOptions = {}): Promise<TestServer> {
  const adminKey = options.state?.adminKey ?? `efo_test_${randomBytes(12).toString('hex')}`;
  if (options.state) options.state.adminKey = adminKey;
  const config: Config = loadConfig({
    HOST: '127.0.0.1',
    PORT: String(options.state?.port ?? 0),
    LOG_LEVEL: process.env.EDGEFLOW_TEST_LOG_LEVEL ?? 'silent',
    EDGEFLOW_DATA_DIR: os.tmpdir(),
    ...options.env,
  });
  const { db, dispose: disposeDb } = await openTestDb(backend.db, options.state);
  const { linkSigningSecret } = await bootstrap(db, adminKey);
  const { store, dispose: disposeStore } = await openTestStore(backend.store, linkSigningSecret, options.state);
  let running: RunningServer;
  try {
    running = await startOn({
      config: { ...config, store: backend.store, ...(options.now ? { now: options.now } : {}) },
      db,
      store,
      ...(options.log ? { log: options.log } : {}),
    });
  } catch (error) {
    await db.close();
    await disposeDb();
    await disposeStore();
    throw error;
  }
  const url = running.url;
  if (options.state) options.state.port = Number(new URL(url).port);

  const api = jsonApi(url);

  return {
    ...running,
    backend,
    adminKey,
    store,
    db,
    api,
    async createOrg(name = 'org') {
      const { status, body } = await api<{ id: string; admin_key: string }>('POST', '/api/v1/orgs', adminKey, {
        name,
      });
      if (status !== 201) throw new Error(`creating an organization failed: ${status} ${JSON.stringify(body)}`);
      return { id: body.id, adminKey: body.admin_key };
    },
    async close() {
      await running.close();
      await disposeDb();
      await disposeStore();
    },
  };
}

// Whatever a test file forgot, the shared services end with it: an open PGlite or s3rver keeps its process alive.
after(() => stopSharedServices());

/** Stops the shared S3-protocol server and the PGlite template; runs once at the end of every test file that imports this. */
export async function stopSharedServices(): Promise<void> {
  if (s3rver) await (await s3rver).stop();
  s3rver = undefined;
  if (template) await (await template).close();
  template = undefined;
}
