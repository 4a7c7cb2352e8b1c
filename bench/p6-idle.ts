/**
 * P6: RSS of an idle server on the embedded defaults (PGlite in <data>/db, local store), on a
 * first start (empty data directory) and on a restart (same directory), next to the same
 * server on PostgreSQL (a database created for the run and dropped after) as the baseline.
 * Target: ≤ 200 MiB idle on both starts.
 *
 * The server runs as `npm start` runs it (`node <its flags> bin/edgeflow-ota.js serve`), in a child process.
 * "Idle" is read once /readyz answers, after a pause, when two readings a second apart agree
 * within 1 MiB: what an operator sees in `ps`, garbage not yet collected included. For the
 * breakdown the server also gets a preload that runs a full GC on SIGUSR2 and writes its memory
 * figures (the JS heap, and `external`, which includes PGlite's WebAssembly memory).
 * P6_DATABASE_URL points the baseline at another PostgreSQL server. BENCH_SERVER_NODE_ARGS replaces
 * the Node.js flags npm start gives the server ("" for Node's defaults), to measure what a flag buys.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import {
  type Figure,
  freePort,
  peakRssBytes,
  REPO_ROOT,
  report,
  rssBytes,
  SERVER_NODE_ARGS,
  serveArgs,
} from './lib.ts';

const ADMIN_URL = process.env.P6_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const TARGET_MIB = 200;
const SETTLE_MS = 5_000;
const ADMIN_KEY = 'p6-bench-admin-key';

const mib = (bytes: number) => bytes / 1024 / 1024;
const log = (line: string) => console.log(`p6  ${line}`);

interface Start {
  /** From spawn until /readyz answered 200. */
  readySeconds: number;
  /** Idle, settled, without a forced GC. */
  idleRss: number;
  /** Highest RSS the process reached, startup included. */
  peakRss: number;
  /** After a forced full GC: RSS, live JS heap, and off-heap memory (WebAssembly memory included). */
  afterGc: { rss: number; heapUsed: number; external: number };
}

async function measureStart(label: string, env: Record<string, string>, dataDir: string): Promise<Start> {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const memoryFile = path.join(dataDir, 'p6-memory.json');
  const started = performance.now();
  const server = spawn(
    process.execPath,
    serveArgs(['--expose-gc', '--import', path.join(REPO_ROOT, 'bench/support/p4-gc-on-signal.mjs')]),
    {
      env: {
        ...process.env,
        ...env,
        EDGEFLOW_DATA_DIR: dataDir,
        PORT: String(port),
        HOST: '127.0.0.1',
        EDGEFLOW_PUBLIC_URL: base,
        EDGEFLOW_ADMIN_KEY: ADMIN_KEY,
        LOG_LEVEL: 'warn',
        P4_MEMORY_FILE: memoryFile,
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  );
  const exited = once(server, 'exit');
  try {
    for (;;) {
      if (server.exitCode !== null) throw new Error(`${label}: the server exited with ${server.exitCode}`);
      const ready = await fetch(`${base}/readyz`).then(
        (response) => response.ok,
        () => false,
      );
      if (ready) break;
      if (performance.now() - started > 120_000) throw new Error(`${label}: not ready within 120 s`);
      await sleep(50);
    }
    const readySeconds = (performance.now() - started) / 1000;
    // Something an operator does first: one authenticated call, so the request path is warm.
    const orgs = await fetch(`${base}/api/v1/orgs`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
    if (!orgs.ok) throw new Error(`${label}: GET /api/v1/orgs answered ${orgs.status}`);
    await sleep(SETTLE_MS);
    let idleRss = rssBytes(server.pid!);
    for (let steady = 0, tries = 0; steady < 2 && tries < 30; tries++) {
      await sleep(1000);
      const now = rssBytes(server.pid!);
      steady = Math.abs(now - idleRss) < 1024 * 1024 ? steady + 1 : 0;
      idleRss = now;
    }
    const peakRss = peakRssBytes(server.pid!);
    server.kill('SIGUSR2');
    await sleep(2000);
    const memory = JSON.parse(await readFile(memoryFile, 'utf8')) as NodeJS.MemoryUsage;
    const afterGc = { rss: rssBytes(server.pid!), heapUsed: memory.heapUsed, external: memory.external };
    log(
      `${label}: ready in ${readySeconds.toFixed(1)} s, idle ${mib(idleRss).toFixed(0)} MiB, ` +
        `peak ${mib(peakRss).toFixed(0)} MiB, after GC ${mib(afterGc.rss).toFixed(0)} MiB ` +
        `(heap ${mib(afterGc.heapUsed).toFixed(0)}, external ${mib(afterGc.external).toFixed(0)})`,
    );
    return { readySeconds, idleRss, peakRss, afterGc };
  } finally {
    if (server.exitCode === null) server.kill('SIGTERM');
    await exited;
  }
}

async function measureEmbedded(): Promise<{ first: Start; restart: Start }> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'edgeflow-p6-'));
  try {
    const first = await measureStart('PGlite, first start', {}, dataDir);
    const restart = await measureStart('PGlite, restart', {}, dataDir);
    return { first, restart };
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}

async function measurePostgres(): Promise<Start> {
  const database = `edgeflow_p6_${process.pid}_${Date.now()}`;
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'edgeflow-p6-pg-'));
  try {
    await admin.query(`CREATE DATABASE ${database}`);
    const url = new URL(ADMIN_URL);
    url.pathname = `/${database}`;
    return await measureStart('PostgreSQL', { DATABASE_URL: url.toString() }, dataDir);
  } finally {
    await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).catch(() => {});
    await admin.end();
    await rm(dataDir, { recursive: true, force: true });
  }
}

log(`server: node ${SERVER_NODE_ARGS.join(' ')} bin/edgeflow-ota.js serve`);
const embedded = await measureEmbedded();
const postgres = await measurePostgres();

const idleFigure = (name: string, start: Start): Figure => ({
  name,
  value: mib(start.idleRss),
  unit: 'MiB',
  baseline: { name: 'same server on PostgreSQL', value: mib(postgres.idleRss), unit: 'MiB' },
  ratio: start.idleRss / postgres.idleRss,
  target: `≤ ${TARGET_MIB} MiB`,
  met: mib(start.idleRss) <= TARGET_MIB,
});
const readyFigure = (name: string, start: Start): Figure => ({
  name,
  value: start.readySeconds,
  unit: 's',
  baseline: { name: 'same server on PostgreSQL', value: postgres.readySeconds, unit: 's' },
  ratio: start.readySeconds / postgres.readySeconds,
});
const breakdown = (start: Start) => ({
  ready_s: start.readySeconds,
  idle_rss_mib: mib(start.idleRss),
  peak_rss_mib: mib(start.peakRss),
  after_gc_rss_mib: mib(start.afterGc.rss),
  after_gc_heap_used_mib: mib(start.afterGc.heapUsed),
  after_gc_external_mib: mib(start.afterGc.external),
});
report(
  'p6-idle',
  [
    idleFigure('idle RSS, PGlite, first start', embedded.first),
    idleFigure('idle RSS, PGlite, restart', embedded.restart),
    readyFigure('time to ready, PGlite, first start', embedded.first),
    readyFigure('time to ready, PGlite, restart', embedded.restart),
  ],
  {
    pglite_first_start: breakdown(embedded.first),
    pglite_restart: breakdown(embedded.restart),
    postgres: breakdown(postgres),
    server: { node_args: SERVER_NODE_ARGS },
    note: 'idle = settled RSS without a forced GC; external includes the WebAssembly memory of PGlite',
  },
);
