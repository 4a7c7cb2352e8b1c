/**
 * `edgeflow-ota admin reset-key`: replaces the system administrator key directly in the
 * database (the embedded one in the data directory, or DATABASE_URL), for an operator who lost
 * it or set EDGEFLOW_ADMIN_KEY after the first start.
 *
 * An offline command on the embedded database takes the data directory's lock, as `serve` does
 * (infra/data-dir-lock.ts): beside a running server its change would be written to a database
 * the server holds its own view of, and be lost.
 */
import type { Command } from 'commander';
import type { Config } from '../server/infra/config.ts';
import { ConfigError, loadConfig } from '../server/infra/config.ts';
import type { Db } from '../server/infra/db.ts';
import { CliError } from './errors.ts';

/** Runs `work` on the configured database, holding the data directory while it is the embedded one. */
async function withOfflineDatabase<T>(config: Config, command: string, work: (db: Db) => Promise<T>): Promise<T> {
  const { lockDataDir } = await import('../server/infra/data-dir-lock.ts');
  const { DataDirLockedError } = await import('../server/infra/errors.ts');
  const { openConfiguredDb } = await import('../server/server.ts');
  let lock: Awaited<ReturnType<typeof lockDataDir>> | undefined;
  if (!config.databaseUrl) {
    try {
      lock = await lockDataDir(config.dataDir, { holder: `edgeflow-ota ${command}` });
    } catch (error) {
      if (!(error instanceof DataDirLockedError)) throw error;
      throw new CliError(
        `the data directory ${config.dataDir} is in use by ${error.holder}: stop it first, then run ${command} again`,
      );
    }
  }
  try {
    const db = await openConfiguredDb(config);
    try {
      return await work(db);
    } finally {
      await db.close();
    }
  } finally {
    await lock?.release();
  }
}

export function registerAdminCommands(program: Command): void {
  const admin = program.command('admin').description('server administration against its database (no server needed)');
  admin
    .command('reset-key')
    .description(
      'replace the system administrator key (every earlier one stops working) and print the new one once; ' +
        'refused while a server runs on the embedded database (stop it first)',
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
      const { resetSystemAdminKey } = await import('../server/orgs/service.ts');
      const key = await withOfflineDatabase(config, 'admin reset-key', (db) =>
        resetSystemAdminKey(db, options.fromEnv ? config.adminKey : undefined),
      );
      const where = config.databaseUrl ? 'the database at DATABASE_URL' : `${config.dataDir}/db`;
      process.stderr.write(`System administrator key replaced in ${where}; earlier keys no longer work.\n`);
      if (!options.fromEnv) process.stdout.write(`${key}\n`);
      else process.stderr.write('The key is now the value of EDGEFLOW_ADMIN_KEY.\n');
    });
}
