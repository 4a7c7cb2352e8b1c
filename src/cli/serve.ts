import type { Command } from 'commander';
import { ConfigError, loadConfig } from '../server/infra/config.ts';
import { CliError } from './errors.ts';

/** The environment `serve` reads (the README's configuration table has them all, with defaults). */
const ENVIRONMENT = `
Environment (all optional; see README "Configuration" for defaults):
  PORT, HOST                         where the API and the tunnel listen (8080, 0.0.0.0)
  EDGEFLOW_PUBLIC_URL                base URL devices use for download links
  EDGEFLOW_DATA_DIR                  PGlite database and local firmware store (./data)
  EDGEFLOW_ADMIN_KEY                 system administrator key, used on the first start only
                                     (later: edgeflow-ota admin reset-key)
  DATABASE_URL                       PostgreSQL instead of the embedded PGlite
  EDGEFLOW_STORE, S3_BUCKET, S3_REGION, S3_ENDPOINT, S3_PUBLIC_ENDPOINT,
  S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, S3_FORCE_PATH_STYLE
                                     firmware in S3 / MinIO instead of the data directory
  TLS_CERT_FILE, TLS_KEY_FILE        serve HTTPS and WSS
  LOG_LEVEL                          pino level (info)
  EDGEFLOW_FIRMWARE_MAX_BYTES, EDGEFLOW_LINK_TTL_SECONDS, EDGEFLOW_UPDATE_TIMEOUT_SECONDS,
  EDGEFLOW_HEARTBEAT_MS, EDGEFLOW_TUNNEL_*, EDGEFLOW_HTTP_*, EDGEFLOW_TRUST_PROXY,
  EDGEFLOW_HEALTH_CHECK_TIMEOUT_MS, EDGEFLOW_DISPATCH_INTERVAL_MS, EDGEFLOW_SHUTDOWN_TIMEOUT_MS
                                     limits and timeouts
  EDGEFLOW_WEBHOOKS_*                webhook timeouts, retries, concurrency, ALLOW_PRIVATE, ALLOW_HTTP, CA_FILE
`;

export function registerServeCommand(program: Command): void {
  program
    .command('serve')
    .description('start the server (embedded PGlite and local store unless DATABASE_URL / S3_BUCKET are set)')
    .option('--port <port>', 'listen port (PORT)')
    .option('--host <host>', 'listen address (HOST)')
    .option('--data-dir <dir>', 'data directory (EDGEFLOW_DATA_DIR)')
    .addHelpText('after', ENVIRONMENT)
    .action(async (options: { port?: string; host?: string; dataDir?: string }) => {
      let config: ReturnType<typeof loadConfig>;
      try {
        config = loadConfig({
          ...process.env,
          ...(options.port ? { PORT: options.port } : {}),
          ...(options.host ? { HOST: options.host } : {}),
          ...(options.dataDir ? { EDGEFLOW_DATA_DIR: options.dataDir } : {}),
        });
      } catch (error) {
        if (error instanceof ConfigError) throw new CliError(`configuration error: ${error.message}`, 2);
        throw error;
      }
      // Loaded here, not at the top: a device runs `agent` without the server's dependencies.
      const { closeOnSignals, startServer } = await import('../server/server.ts');
      const { DataDirLockedError } = await import('../server/infra/errors.ts');
      let server: Awaited<ReturnType<typeof startServer>>;
      try {
        server = await startServer(config);
      } catch (error) {
        if (error instanceof DataDirLockedError) {
          console.error(`edgeflow-ota: ${error.message}`);
          process.exit(1);
        }
        throw error;
      }
      closeOnSignals(server, config.shutdownTimeoutMs);
      const store = config.store === 's3' ? `s3://${config.s3.bucket}` : `${config.dataDir}/firmware`;
      const database = config.databaseUrl ? 'PostgreSQL' : `PGlite in ${config.dataDir}/db`;
      process.stdout.write(`EdgeFlow OTA listening on ${server.url}  (database: ${database}; firmware: ${store})\n`);
      process.stdout.write(`Dashboard: ${server.url}/  (sign in with an organization's API key)\n`);
      process.stdout.write(`API docs: ${server.url}/docs\n`);
      if (server.configuredAdminKeyIgnored) {
        const where = config.databaseUrl ? 'DATABASE_URL=… ' : `--data-dir ${config.dataDir} `;
        process.stderr.write(
          '\n*** WARNING: EDGEFLOW_ADMIN_KEY is set but differs from the system administrator key stored in ' +
            `${config.databaseUrl ? 'the database' : config.dataDir}.\n` +
            '*** It is IGNORED: it only seeds the key on the first start, and every call made with it answers 401.\n' +
            `*** To make it the key, stop the server and run: edgeflow-ota admin reset-key ${where}--from-env\n\n`,
        );
      }
      if (server.generatedAdminKey) {
        process.stdout.write(
          `\nSystem administrator key (shown once, keep it safe):\n  ${server.generatedAdminKey}\n` +
            'Create an organization with it:\n' +
            `  curl -s -X POST ${server.url}/api/v1/orgs -H "Authorization: Bearer <key>" ` +
            `-H 'content-type: application/json' -d '{"name":"acme"}'\n\n`,
        );
      }
    });
}
