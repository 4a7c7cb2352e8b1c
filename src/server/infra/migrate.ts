/**
 * Numbered SQL migrations (`migrations/NNN_name.sql`), applied in order at start, each in its
 * own transaction, under an advisory lock so replicas starting together apply each once.
 * Refuses to run against a schema newer than this code.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fromRoot } from '../../installation.ts';
import type { Db } from './db.ts';
import { SchemaTooNewError } from './errors.ts';

const MIGRATIONS_DIR = fromRoot('src', 'server', 'infra', 'migrations');
/** Arbitrary constant naming the migration lock among this database's advisory locks. */
const MIGRATION_LOCK_ID = 7_340_001;

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export function loadMigrations(dir = MIGRATIONS_DIR): Migration[] {
  return readdirSync(dir)
    .filter((file) => /^\d{3}_[\w-]+\.sql$/.test(file))
    .sort()
    .map((file) => ({
      version: Number(file.slice(0, 3)),
      name: file.slice(4, -4),
      sql: readFileSync(path.join(dir, file), 'utf8'),
    }));
}

/** Applies what is missing; returns the versions applied. */
export async function migrate(db: Db, migrations = loadMigrations()): Promise<number[]> {
  const codeVersion = migrations.at(-1)?.version ?? 0;
  return db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK_ID]);
    await tx.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version integer PRIMARY KEY,
      name text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
    const rows = await tx.query<{ version: number }>('SELECT version FROM schema_migrations');
    const applied = new Set(rows.map((row) => row.version));
    const databaseVersion = Math.max(0, ...applied);
    if (databaseVersion > codeVersion) throw new SchemaTooNewError(databaseVersion, codeVersion);
    const done: number[] = [];
    for (const migration of migrations) {
      if (applied.has(migration.version)) continue;
      await tx.exec(migration.sql);
      await tx.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [
        migration.version,
        migration.name,
      ]);
      done.push(migration.version);
    }
    return done;
  });
}
