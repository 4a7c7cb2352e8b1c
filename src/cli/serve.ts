import type { Command } from 'commander';
import { ConfigError, loadConfig } from '../server/infra/config.ts';

export function registerServeCommand(program: Command): void {
  program
    .command('serve', { isDefault: true })
    .description('start the server (embedded PGlite and local store unless DATABASE_URL / S3_BUCKET are set)')
    .option('--port <port>', 'listen port (PORT)')
    .option('--host <host>', 'listen address (HOST)')
    .option('--data-dir <dir>', 'data directory (EDGEFLOW_DATA_DIR)')
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
        if (error instanceof ConfigError) {
          console.error(`configuration error: ${error.message}`);
          process.exit(2);
        }
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
      process.stdout.write(`API docs: ${server.url}/docs\n`);
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
