/**
 * The running server: opens the database and the store, migrates, bootstraps the first
 * keys, builds the app, listens, and shuts down gracefully on SIGINT/SIGTERM.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { type App, buildApp } from './app.ts';
import { LocalBlobStore, S3BlobStore } from './infra/blobstore/index.ts';
import type { BlobStore } from './infra/blobstore/types.ts';
import type { Config } from './infra/config.ts';
import { type Db, openDb } from './infra/db.ts';
import { migrate } from './infra/migrate.ts';
import { bootstrap } from './orgs/service.ts';
import { createServices, type Services } from './services.ts';

/** Staged uploads older than this were left by a crash; swept at start. */
const STALE_STAGING_MS = 60 * 60 * 1000;

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

/** The configured firmware store. */
function createStore(config: Config, linkSigningSecret: string): BlobStore {
  if (config.store === 's3') {
    return new S3BlobStore({
      endpoint: config.s3.endpoint,
      publicEndpoint: config.s3.publicEndpoint,
      region: config.s3.region,
      bucket: config.s3.bucket,
      accessKeyId: config.s3.accessKeyId,
      secretAccessKey: config.s3.secretAccessKey,
      forcePathStyle: config.s3.forcePathStyle,
    });
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
  await parts.store.sweepStaged(STALE_STAGING_MS).catch((error: Error) => {
    app.log.warn({ err: error }, 'could not sweep staged uploads');
  });
  await services.tunnel.start();
  await app.listen({ host: config.host, port: config.port });
  services.engine.start();
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
        await app.close();
        await parts.store.close();
        await parts.db.close();
      })();
      return closing;
    },
  };
}

export async function startServer(config: Config): Promise<RunningServer> {
  const db = await openConfiguredDb(config);
  try {
    const { generatedAdminKey, linkSigningSecret, configuredAdminKeyIgnored } = await bootstrap(db, config.adminKey);
    const store = createStore(config, linkSigningSecret);
    if (store instanceof S3BlobStore) await store.ensureBucket();
    const server = await startOn({ config, db, store, generatedAdminKey, configuredAdminKeyIgnored });
    if (configuredAdminKeyIgnored) {
      server.app.log.warn(
        'EDGEFLOW_ADMIN_KEY is set but is not the stored system administrator key: it is IGNORED ' +
          '(it only seeds the first start); reset the key with `edgeflow-ota admin reset-key`',
      );
    }
    return server;
  } catch (error) {
    await db.close();
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
