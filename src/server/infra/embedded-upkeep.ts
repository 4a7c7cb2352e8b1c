/**
 * What PostgreSQL's autovacuum does, for the embedded database, which has none (PGlite runs one
 * backend, no background workers): every pass reads the tables' activity counters and vacuums
 * (and analyzes) a table whose dead rows passed autovacuum's default threshold, or analyzes one
 * whose changes did. Without it the embedded database never learns how big its tables are, and
 * plans a claim over 10,000 queued updates as 10,000 scans of them; and updated rows are never
 * reclaimed. PostgreSQL does this itself: the upkeep runs only on PGlite.
 */
import type { Logger } from 'pino';
import type { Db } from './db.ts';

/** autovacuum's defaults: 50 rows plus a fifth of the table dead, or a tenth of it changed. */
const VACUUM = { rows: 50, share: 0.2 };
const ANALYZE = { rows: 50, share: 0.1 };
export const UPKEEP_INTERVAL_MS = 10_000;

interface TableActivity {
  relname: string;
  n_live_tup: number;
  n_dead_tup: number;
  n_mod_since_analyze: number;
}

/** The tables' activity counters, flushed first (a lone backend flushes them only when asked). */
async function readActivity(db: Db): Promise<TableActivity[]> {
  await db.query('SELECT pg_stat_force_next_flush()');
  return db.query<TableActivity>(
    `SELECT relname, n_live_tup::int, n_dead_tup::int, n_mod_since_analyze::int FROM pg_stat_user_tables
     WHERE schemaname = current_schema()`,
  );
}

/** The statement a table needs now, if any. Table names come from the catalog, quoted. */
export function upkeepOf(table: TableActivity): string | null {
  const name = `"${table.relname.replace(/"/g, '""')}"`;
  if (table.n_dead_tup > VACUUM.rows + VACUUM.share * table.n_live_tup) return `VACUUM (ANALYZE) ${name}`;
  if (table.n_mod_since_analyze > ANALYZE.rows + ANALYZE.share * table.n_live_tup) return `ANALYZE ${name}`;
  return null;
}

export class EmbeddedUpkeep {
  readonly #db: Db;
  readonly #log: Logger;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;

  constructor(deps: { db: Db; log: Logger }) {
    this.#db = deps.db;
    this.#log = deps.log;
  }

  start(): void {
    if (this.#db.kind !== 'pglite') return;
    this.#timer = setInterval(() => void this.run(), UPKEEP_INTERVAL_MS);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#running;
  }

  /** One pass (also called when a burst of writes asks for it); never two at once. */
  run(): Promise<void> {
    if (this.#db.kind !== 'pglite') return Promise.resolve();
    this.#running ??= (async () => {
      try {
        for (const table of await readActivity(this.#db)) {
          const statement = upkeepOf(table);
          if (!statement) continue;
          const started = Date.now();
          await this.#db.exec(statement);
          this.#log.debug({ statement, ms: Date.now() - started }, 'embedded database upkeep');
        }
      } catch (error) {
        this.#log.warn({ err: error }, 'embedded database upkeep failed');
      } finally {
        this.#running = undefined;
      }
    })();
    return this.#running;
  }
}
