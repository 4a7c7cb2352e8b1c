/**
 * The running server: opens the database and the store, migrates, bootstraps the first
 * keys, builds the app, listens, and shuts down gracefully on SIGINT/SIGTERM.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { type App, buildApp } from './app.ts';
import { LocalBlobStore } from './infra/blobstore/local.ts';
import type { BlobStore } from './infra/blobstore/types.ts';
import type { Config } from './infra/config.ts';
import { type DataDirLock, lockDataDir } from './infra/data-dir-lock.ts';
import { type Db, openDb } from './infra/db.ts';
import { migrate } from './infra/migrate.ts';
import { bootstrap } from './orgs/service.ts';
import { createServices, type Services } from './services.ts';

/**
 * In a shared store (S3, several replicas), staged uploads older than this were left by a
 * crash; swept at start and then every STAGING_SWEEP_INTERVAL_MS. The local store has a single
 * owner (the data-directory lock), so at start all its staged files are stale and go.
 */
const STALE_STAGING_MS = 60 * 60 * 1000;
const STAGING_SWEEP_INTERVAL_MS = 10 * 60 * 1000;

export interface RunningServer {
  app: App;
  services: Services;
  url: string;
  /** Set only on the first start when the key was generated (printed once). */
  generatedAdminKey: string | undefined;
  /** EDGEFLOW_ADMIN_KEY was set but differs from the stored key, so it was ignored. */
  configuredAdminKeyIgnored: boolean;
  close(): Promise<void>;
}

/** The configured firmware store. The AWS SDK is loaded only for S3 (~10 MB resident otherwise). */
async function createStore(config: Config, linkSigningSecret: string): Promise<BlobStore> {
  if (config.store === 's3') {
    const { S3BlobStore } = await import('./infra/blobstore/s3.ts');
    const store = new S3BlobStore({
      endpoint: config.s3.endpoint,
      publicEndpoint: config.s3.publicEndpoint,
      region: config.s3.region,
      bucket: config.s3.bucket,
      accessKeyId: config.s3.accessKeyId,
      secretAccessKey: config.s3.secretAccessKey,
      forcePathStyle: config.s3.forcePathStyle,
    });
    await store.ensureBucket();
    return store;
  }
  return new LocalBlobStore({
    rootDir: path.join(config.dataDir, 'firmware'),
    publicUrl: config.publicUrl,
    signingSecret: linkSigningSecret,
  });
}

/** Opens and migrates the configured database (PGlite in the data directory by default). */
export async function openConfiguredDb(config: Config): Promise<Db> {
  const db = await openDb({ databaseUrl: config.databaseUrl, dataDir: path.join(config.dataDir, 'db') });
  try {
    await migrate(db);
  } catch (error) {
    await db.close();
    throw error;
  }
  return db;
}

/** Starts on already opened parts (tests pass their own database and store). */
export async function startOn(parts: {
  config: Config;
  db: Db;
  store: BlobStore;
  generatedAdminKey?: string | undefined;
  configuredAdminKeyIgnored?: boolean;
  /** Tests read the log through their own logger. */
  log?: Logger;
}): Promise<RunningServer> {
  const { config } = parts;
  const services = createServices(parts);
  const https = config.tls
    ? { key: readFileSync(config.tls.keyFile), cert: readFileSync(config.tls.certFile) }
    : undefined;
  const app = await buildApp(services, https ? { https } : {});
  const sweepStaged = async (olderThanMs: number) => {
    try {
      const removed = await parts.store.sweepStaged(olderThanMs);
      if (removed > 0) app.log.info({ removed }, 'removed staged uploads left by an interrupted upload');
    } catch (error) {
      app.log.warn({ err: error }, 'could not sweep staged uploads');
    }
  };
  await sweepStaged(parts.store.kind === 'local' ? 0 : STALE_STAGING_MS);
  const sweeper = setInterval(() => void sweepStaged(STALE_STAGING_MS), STAGING_SWEEP_INTERVAL_MS);
  sweeper.unref();
  // Listening before anything can change: every change of this process is seen here too.
  await services.feed.start();
  await services.tunnel.start();
  await services.relay.start();
  await app.listen({ host: config.host, port: config.port, backlog: config.listenBacklog });
  services.engine.start();
  services.scheduler.start();
  services.deviceEffects.start();
  services.upkeep.start();
  services.webhookWorker.start();

  services.audit.start();
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const url = `${config.tls ? 'https' : 'http'}://${config.host === '0.0.0.0' ? 'localhost' : config.host}:${port}`;
  // A port chosen by the system (PORT=0) is known only now; links must point at it.
  if (config.port === 0 && parts.store instanceof LocalBlobStore) parts.store.setPublicUrl(url);
  let closing: Promise<void> | undefined;
  return {
    app,
    services,
    url,
    generatedAdminKey: parts.generatedAdminKey,
    configuredAdminKeyIgnored: parts.configuredAdminKeyIgnored ?? false,
    close: () => {
      closing ??= (async () => {
        clearInterval(sweeper);
        await app.close();
        await parts.store.close();
        await parts.db.close();
      })();
      return closing;
    },
  };
}

/**
 * The data directory holds the embedded database (no DATABASE_URL) or the local store; only
 * one server may use it. Rejects with DataDirLockedError when another one does.
 */
export async function startServer(config: Config): Promise<RunningServer> {
  const usesDataDir = config.databaseUrl === undefined || config.store === 'local';
  let server: RunningServer | undefined;
  const lock: DataDirLock | undefined = usesDataDir
    ? await lockDataDir(config.dataDir, {
        onLost: (reason) => {
          // Another process serves this directory now: stop at once rather than split it.
          console.error(`edgeflow-ota: ${reason}; shutting down`);
          process.exitCode = 1;
          void server?.close();
        },
      })
    : undefined;
  try {
    const db = await openConfiguredDb(config);
    try {
      const { generatedAdminKey, linkSigningSecret, configuredAdminKeyIgnored } = await bootstrap(db, config.adminKey);
      const store = await createStore(config, linkSigningSecret);
      const running = await startOn({ config, db, store, generatedAdminKey, configuredAdminKeyIgnored });
      if (configuredAdminKeyIgnored) {
        running.app.log.warn(
          'EDGEFLOW_ADMIN_KEY is set but is not the stored system administrator key: it is IGNORED ' +
            '(it only seeds the first start); reset the key with `edgeflow-ota admin reset-key`',
        );
      }
      server = {
        ...running,
        close: async () => {
          await running.close();
          await lock?.release();
        },
      };
      return server;
    } catch (error) {
      await db.close();
      throw error;
    }
  } catch (error) {
    await lock?.release();
    throw error;
  }
}

/** Stops on the first SIGINT/SIGTERM: stop accepting, close tunnels (going away), finish writes. */
export function closeOnSignals(server: RunningServer, timeoutMs: number): void {
  const stop = (signal: string) => {
    server.app.log.info({ signal }, 'shutting down');
    const timer = setTimeout(() => {
      server.app.log.error('shutdown timed out; exiting');
      process.exit(1);
    }, timeoutMs);
    timer.unref();
    server.close().then(
      () => process.exit(0),
      (error: Error) => {
        server.app.log.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}
