/**
 * `edgeflow-ota admin reset-key`: replaces the system administrator key directly in the
 * database (the embedded one in the data directory, or DATABASE_URL), for an operator who lost
 * it or set EDGEFLOW_ADMIN_KEY after the first start.
 */
import type { Command } from 'commander';
import { ConfigError, loadConfig } from '../server/infra/config.ts';
import { CliError } from './errors.ts';

export function registerAdminCommands(program: Command): void {
  const admin = program.command('admin').description('server administration against its database (no server needed)');
  admin
    .command('reset-key')
    .description(
      'replace the system administrator key (every earlier one stops working) and print the new one once; ' +
        'stop the server first when it uses the embedded database',
    )
    .option('--data-dir <dir>', 'data directory of the embedded database (EDGEFLOW_DATA_DIR, default ./data)')
    .option('--from-env', 'make EDGEFLOW_ADMIN_KEY the key instead of generating one')
    .addHelpText(
      'after',
      '\nEnvironment: DATABASE_URL (PostgreSQL instead of the data directory), EDGEFLOW_DATA_DIR, EDGEFLOW_ADMIN_KEY.',
    )
    .action(async (options: { dataDir?: string; fromEnv?: boolean }) => {
      let config: ReturnType<typeof loadConfig>;
      try {
        config = loadConfig({
          ...process.env,
          ...(options.dataDir ? { EDGEFLOW_DATA_DIR: options.dataDir } : {}),
        });
      } catch (error) {
        if (error instanceof ConfigError) throw new CliError(`configuration error: ${error.message}`, 2);
        throw error;
      }
      if (options.fromEnv && !config.adminKey) throw new CliError('--from-env needs EDGEFLOW_ADMIN_KEY to be set', 2);
      const { existsSync } = await import('node:fs');
      const path = await import('node:path');
      if (!config.databaseUrl && !existsSync(path.join(config.dataDir, 'db'))) {
        throw new CliError(
          `no database in ${config.dataDir} (no ${path.join(config.dataDir, 'db')}): pass the server's --data-dir, or set DATABASE_URL`,
          2,
        );
      }
      const { openConfiguredDb } = await import('../server/server.ts');
      const { resetSystemAdminKey } = await import('../server/orgs/service.ts');
      const db = await openConfiguredDb(config);
      try {
        const key = await resetSystemAdminKey(db, options.fromEnv ? config.adminKey : undefined);
        const where = config.databaseUrl ? 'the database at DATABASE_URL' : `${config.dataDir}/db`;
        process.stderr.write(`System administrator key replaced in ${where}; earlier keys no longer work.\n`);
        if (!options.fromEnv) process.stdout.write(`${key}\n`);
        else process.stderr.write('The key is now the value of EDGEFLOW_ADMIN_KEY.\n');
      } finally {
        await db.close();
      }
    });
}
