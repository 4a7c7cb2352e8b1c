/**
 * What P1 and P2 share: a real server child process (embedded, or on PostgreSQL in a schema of
 * its own), an organization, a fleet of simulated devices (the real agent, in child processes)
 * registered through the API and connected, and firmware uploaded through the API.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { runSimulation } from '../../src/simulator/processes.ts';
import { registerDevices } from '../../src/simulator/register.ts';
import { freePort, metricOf, serveArgs, serveEnv, until, untilHealthy } from '../lib.ts';

const ADMIN_KEY = 'fleet-bench-admin-key';
export const DATABASE_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

export interface Fleet {
  base: string;
  key: string;
  server: ChildProcess;
  simulation: ReturnType<typeof runSimulation>;
  /** The value of one counter of the server's /metrics. */
  metric(name: string): Promise<number>;
  api<T>(method: string, urlPath: string, body?: unknown): Promise<T>;
  uploadFirmware(version: string, content: Buffer): Promise<void>;
  close(): Promise<void>;
}

export async function startFleet(options: {
  devices: number;
  database: 'pglite' | 'postgres';
  perProcess: number;
  log: (line: string) => void;
  /**
   * The simulated devices' CPU priority (a nice level, 0–19) where the figure is the server's
   * own time: in a fleet they are other machines, here they share the server's two cores.
   */
  nice?: number;
}): Promise<Fleet> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'edgeflow-fleet-bench-'));
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  let schema: string | undefined;
  if (options.database === 'postgres') {
    schema = `bench_${Date.now()}`;
    const admin = new pg.Client({ connectionString: DATABASE_URL });
    await admin.connect();
    await admin.query(`CREATE SCHEMA ${schema}`);
    await admin.end();
  }
  // BENCH_PROFILE_DIR=<dir>: the server writes a V8 CPU profile there when it stops (open it in
  // Chrome DevTools); NODE_OPTIONS cannot carry --cpu-prof.
  const profile = process.env.BENCH_PROFILE_DIR
    ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE_DIR}`]
    : [];
  const server = spawn(process.execPath, serveArgs(profile), {
    env: serveEnv(dataDir, port, ADMIN_KEY, {
      EDGEFLOW_PUBLIC_URL: base,
      DATABASE_URL: schema ? `${DATABASE_URL}?options=${encodeURIComponent(`-c search_path=${schema}`)}` : '',
    }),
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  // A benchmark stopped from outside (Ctrl-C, a timeout) must not leave its server running.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      server.kill('SIGKILL');
      process.exit(130);
    });
  }
  await untilHealthy(base, 'server healthy');
  const { key, api, uploadFirmware } = await fleetApi(base, ADMIN_KEY);
  const devices = await registerDevices({ server: base, key, count: options.devices, prefix: 'b-', concurrency: 50 });
  options.log(`registered ${options.devices} devices`);
  const simulation = runSimulation({
    server: base,
    devices,
    allowInsecure: true,
    allowUnsigned: true,
    perProcess: options.perProcess,
    waveSize: 1000,
  });
  for (const pid of options.nice ? simulation.pids : []) os.setPriority(pid, options.nice!);
  await until('fleet connected', () => simulation.counters().connected === options.devices, 5 * 60_000);
  options.log(`all ${options.devices} devices connected`);
  return {
    base,
    key,
    server,
    simulation,
    metric: (name) => metricOf(base, name),
    api,
    uploadFirmware,
    async close() {
      await simulation.stop().catch(() => {});
      if (server.exitCode === null && server.signalCode === null) {
        server.kill('SIGTERM');
        await once(server, 'exit');
      }
      await rm(dataDir, { recursive: true, force: true });
      if (schema) {
        const admin = new pg.Client({ connectionString: DATABASE_URL });
        await admin.connect();
        await admin.query(`DROP SCHEMA ${schema} CASCADE`);
        await admin.end();
      }
    },
  };
}

/** An organization made with the system administrator key, and its API: calls and firmware uploads. */
export async function fleetApi(base: string, adminKey: string): Promise<Pick<Fleet, 'key' | 'api' | 'uploadFirmware'>> {
  const call = async <T>(key: string, method: string, urlPath: string, body?: unknown): Promise<T> => {
    const response = await fetch(`${base}${urlPath}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${urlPath}: ${response.status} ${text}`);
    return (text ? JSON.parse(text) : undefined) as T;
  };
  const org = await call<{ admin_key: string }>(adminKey, 'POST', '/api/v1/orgs', { name: 'bench' });
  const key = org.admin_key;
  return {
    key,
    api: (method, urlPath, body) => call(key, method, urlPath, body),
    async uploadFirmware(version, content) {
      const form = new FormData();
      form.append('version', version);
      form.append('sha256', createHash('sha256').update(content).digest('hex'));
      form.append('file', new Blob([new Uint8Array(content)]), 'firmware.bin');
      const response = await fetch(`${base}/api/v1/firmware`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}` },
        body: form,
      });
      if (response.status !== 201) throw new Error(`upload: ${response.status} ${await response.text()}`);
    },
  };
}
