/**
 * P3: progress reports persisted per second, and the API's latency meanwhile.
 *
 * A real server (startOn: HTTP listener, event feed, engine) on each database, 10,000 devices
 * with an update in progress. Reports go through what the tunnel's `ota_progress` handler uses:
 * the engine's Batcher (same window and size) into `UpdateTransitions.reportProgress` — one
 * conditional UPDATE per burst that keeps progress monotonic and announces each change on the
 * event feed (which this process also listens to). Not included: decoding the frames off the
 * WebSocket (measured by P4/P8's tunnel work), so this is the persistence path's ceiling.
 *
 * Baseline, same run, same database: a raw batched `UPDATE … FROM unnest(…)` of the same
 * reports in bursts of the same size (no status check, no event). Meanwhile two clients call
 * the API (device list, OTA record) back to back; their p99 is reported.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { pino } from 'pino';
import { Batcher } from '../src/server/infra/batcher.ts';
import { LocalBlobStore } from '../src/server/infra/blobstore/index.ts';
import { loadConfig } from '../src/server/infra/config.ts';
import { type Db, openDb } from '../src/server/infra/db.ts';
import { migrate } from '../src/server/infra/migrate.ts';
import { bootstrap, createOrganization } from '../src/server/orgs/service.ts';
import { startOn } from '../src/server/server.ts';
import type { ProgressReport } from '../src/server/updates/transitions.ts';
import { type Figure, percentile, report } from './lib.ts';

const DEVICES = Number(process.env.P3_DEVICES ?? 10_000);
const REPORTS = Number(process.env.P3_REPORTS ?? 300_000);
const TARGET_PER_SECOND = 50_000;
const TARGET_RATIO = 0.3;
const TARGET_P99_MS = 100;
const DATABASE_URL = process.env.P3_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const log = (line: string) => console.log(`p3  ${line}`);
/** The burst of the batched progress path: reports within 5 ms, up to 2,000, share one statement. */
const PROGRESS_BATCH = { maxDelayMs: 5, maxSize: 2000 };

async function openBench(kind: 'pglite' | 'postgres'): Promise<{ db: Db; drop(): Promise<void> }> {
  if (kind === 'pglite') {
    const db = await openDb({});
    return { db, drop: async () => {} };
  }
  const schema = `p3_${Date.now()}`;
  const admin = new pg.Client({ connectionString: DATABASE_URL });
  await admin.connect();
  await admin.query(`CREATE SCHEMA ${schema}`);
  const db = await openDb({ databaseUrl: DATABASE_URL, schema, poolSize: 10 });
  return {
    db,
    drop: async () => {
      await admin.query(`DROP SCHEMA ${schema} CASCADE`);
      await admin.end();
    },
  };
}

/** Devices and their updates straight into the tables (setup, not what is measured). */
async function seed(db: Db, organizationId: string): Promise<string[]> {
  await db.query(
    `INSERT INTO devices (organization_id, device_id, current_version, key_hash)
     SELECT $1, 'dev-' || g, '1.0.0', md5($1 || g) FROM generate_series(1, $2::int) g`,
    [organizationId, DEVICES],
  );
  await db.query(
    `INSERT INTO ota_updates (id, organization_id, device_id, kind, target_version, from_version, force, status,
       dispatched_at, deadline_at)
     SELECT 'upd-' || g, $1, 'dev-' || g, 'update', '2.0.0', '1.0.0', false, 'in_progress', now(), now() + interval '1 hour'
     FROM generate_series(1, $2::int) g`,
    [organizationId, DEVICES],
  );
  return Array.from({ length: DEVICES }, (_, i) => String(i + 1));
}

function reportsOf(organizationId: string, ids: string[], round: number): ProgressReport[] {
  return ids.map((n) => ({
    organizationId,
    id: `upd-${n}`,
    deviceId: `dev-${n}`,
    phase: 'downloading',
    progress: Math.min(99, round),
  }));
}

async function measure(kind: 'pglite' | 'postgres'): Promise<Figure[]> {
  const { db, drop } = await openBench(kind);
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'edgeflow-p3-'));
  try {
    await migrate(db);
    const { linkSigningSecret } = await bootstrap(db, 'p3-bench-admin-key');
    const org = await createOrganization(db, 'p3');
    const ids = await seed(db, org.id);
    const config = loadConfig({ HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'silent', EDGEFLOW_DATA_DIR: dataDir });
    const store = new LocalBlobStore({
      rootDir: dataDir,
      publicUrl: 'http://127.0.0.1',
      signingSecret: linkSigningSecret,
    });
    const server = await startOn({ config, db, store, log: pino({ level: 'silent' }) });
    const rounds = Math.ceil(REPORTS / DEVICES);
    try {
      // The API meanwhile: two clients back to back until ingest ends.
      let ingesting = true;
      const latencies: number[] = [];
      const headers = { authorization: `Bearer ${org.admin_key}` };
      const client = async (which: number) => {
        for (let i = 0; ingesting; i++) {
          const url =
            (i + which) % 2 === 0
              ? `${server.url}/api/v1/devices?limit=50`
              : `${server.url}/api/v1/devices/dev-${1 + (i % DEVICES)}/ota`;
          const started = performance.now();
          await (await fetch(url, { headers })).arrayBuffer();
          latencies.push(performance.now() - started);
        }
      };
      const batcher = new Batcher(async (reports: ProgressReport[]) => {
        await server.services.transitions.reportProgress(reports, config.updateTimeoutSeconds);
        return reports.map(() => undefined);
      }, PROGRESS_BATCH);
      const clients = [client(0), client(1)];
      const started = performance.now();
      for (let round = 1; round <= rounds; round++) {
        await Promise.all(reportsOf(org.id, ids, round).map((one) => batcher.add(one)));
      }
      const seconds = (performance.now() - started) / 1000;
      ingesting = false;
      await Promise.all(clients);
      const [check] = await db.query<{ progress: number }>('SELECT min(progress) AS progress FROM ota_updates');
      if (check?.progress !== Math.min(99, rounds)) throw new Error(`not every report persisted: ${check?.progress}`);

      const raw = async () => {
        const rawStarted = performance.now();
        for (let round = 1; round <= rounds; round++) {
          const reports = reportsOf(org.id, ids, round + rounds);
          for (let i = 0; i < reports.length; i += PROGRESS_BATCH.maxSize) {
            const burst = reports.slice(i, i + PROGRESS_BATCH.maxSize);
            await db.query(
              `UPDATE ota_updates AS u SET phase = r.phase, progress = r.progress, updated_at = now()
               FROM unnest($1::text[], $2::text[], $3::int[]) AS r(id, phase, progress) WHERE u.id = r.id`,
              [burst.map((r) => r.id), burst.map((r) => r.phase), burst.map((r) => r.progress)],
            );
          }
        }
        return (performance.now() - rawStarted) / 1000;
      };
      const rawSeconds = await raw();
      const perSecond = (rounds * DEVICES) / seconds;
      const rawPerSecond = (rounds * DEVICES) / rawSeconds;
      const p99 = percentile(latencies, 99);
      log(`${kind}: ${rounds * DEVICES} reports in ${seconds.toFixed(2)} s; raw in ${rawSeconds.toFixed(2)} s`);
      log(
        `${kind}: API ${latencies.length} calls, p50 ${percentile(latencies, 50).toFixed(1)} ms, p99 ${p99.toFixed(1)} ms`,
      );
      return [
        {
          name: `${kind} progress reports persisted`,
          value: perSecond,
          unit: 'reports/s',
          baseline: { name: 'raw batched UPDATE … FROM unnest', value: rawPerSecond, unit: 'reports/s' },
          ratio: perSecond / rawPerSecond,
          target: `≥ ${TARGET_PER_SECOND} reports/s and ratio ≥ ${TARGET_RATIO}`,
          met: perSecond >= TARGET_PER_SECOND && perSecond / rawPerSecond >= TARGET_RATIO,
        },
        {
          name: `${kind} API p99 during ingest`,
          value: p99,
          unit: 'ms',
          target: `< ${TARGET_P99_MS} ms`,
          met: p99 < TARGET_P99_MS,
        },
      ];
    } finally {
      await server.close();
    }
  } finally {
    await db.close().catch(() => {});
    await drop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

const kinds = (process.env.P3_DATABASES ?? 'pglite,postgres').split(',') as ('pglite' | 'postgres')[];
const figures: Figure[] = [];
for (const kind of kinds) figures.push(...(await measure(kind)));
report('p3-progress', figures, { devices: DEVICES, reports: REPORTS });
