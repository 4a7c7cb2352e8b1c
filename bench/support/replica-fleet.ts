/**
 * P7's fleet: N `serve` replicas on one PostgreSQL schema and one S3-protocol server (s3rver, in
 * a process of its own), behind HAProxy configured from deploy/haproxy.cfg, and simulated devices
 * connected through it. A process may open at most 20,000 files here and every proxied tunnel
 * takes two of HAProxy's, so there is one HAProxy process per 5,000 devices (a pair of load
 * balancers, as a production setup would run), each simulator process connecting through one
 * (`maxconn 9000`: two descriptors per connection stay under the 20,000 a process may open).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { runSimulation } from '../../src/simulator/processes.ts';
import { registerDevices } from '../../src/simulator/register.ts';
import { addCounters, emptyCounters, type Simulation } from '../../src/simulator/simulator.ts';
import { balancerConfig } from '../../test/helpers/replicas.ts';
import { startS3rverProcess } from '../../test/helpers/s3rver.ts';
import { freePort, metricOf, serveArgs, serveEnv, until, untilHealthy } from '../lib.ts';
import { DATABASE_URL, type Fleet, fleetApi } from './fleet.ts';

const ADMIN_KEY = 'replica-bench-admin-key';
const DEVICES_PER_BALANCER = 5_000;

export interface ReplicaInFleet {
  name: string;
  port: number;
  url: string;
  node: string;
  child: ChildProcess;
}

export interface ReplicaFleet extends Fleet {
  replicas: ReplicaInFleet[];
  /** One counter of every replica's /metrics. */
  metrics(name: string): Promise<number[]>;
  /** Statements on the replicas' schema (the bench's own connection). */
  query<Row>(text: string, params?: unknown[]): Promise<Row[]>;
}

export async function startReplicaFleet(options: {
  devices: number;
  replicas: number;
  log: (line: string) => void;
  nice?: number;
}): Promise<ReplicaFleet> {
  const children: ChildProcess[] = [];
  const stops: (() => Promise<void>)[] = [];
  const dirs: string[] = [];
  const schema = `bench_r${Date.now()}`;
  const admin = new pg.Client({ connectionString: DATABASE_URL });
  await admin.connect();
  await admin.query(`CREATE SCHEMA ${schema}`);
  await admin.query(`SET search_path = ${schema}`);
  const stopAll = async () => {
    for (const child of children.reverse()) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await Promise.race([once(child, 'exit'), new Promise((resolve) => setTimeout(resolve, 15_000))]);
        child.kill('SIGKILL');
      }
    }
    for (const stop of stops) await stop().catch(() => {});
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
    await admin.query(`DROP SCHEMA ${schema} CASCADE`).catch(() => {});
    await admin.end();
  };
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      for (const child of children) child.kill('SIGKILL');
      process.exit(130);
    });
  }
  try {
    const bucket = await startS3rverProcess();
    stops.push(() => bucket.stop());
    const balancers = Math.ceil(options.devices / DEVICES_PER_BALANCER);
    const fronts = await Promise.all(Array.from({ length: balancers }, () => freePort()));
    const base = `http://127.0.0.1:${fronts[0]}`;
    const replicas: ReplicaInFleet[] = [];
    for (let index = 0; index < options.replicas; index++) {
      const port = await freePort();
      const dataDir = await mkdtemp(path.join(os.tmpdir(), 'edgeflow-replica-bench-'));
      dirs.push(dataDir);
      const child = spawn(process.execPath, serveArgs(), {
        env: serveEnv(dataDir, port, ADMIN_KEY, {
          EDGEFLOW_PUBLIC_URL: base,
          EDGEFLOW_TRUST_PROXY: 'true',
          EDGEFLOW_STORE: 's3',
          S3_BUCKET: bucket.bucket,
          S3_ENDPOINT: bucket.endpoint,
          S3_ACCESS_KEY_ID: bucket.accessKeyId,
          S3_SECRET_ACCESS_KEY: bucket.secretAccessKey,
          DATABASE_URL: `${DATABASE_URL}?options=${encodeURIComponent(`-c search_path=${schema}`)}`,
        }),
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      children.push(child);
      const url = `http://127.0.0.1:${port}`;
      // One after the other: the first migrates the schema.
      await untilHealthy(url, 'replica healthy');
      const { node } = (await fetch(`${url}/healthz`).then((r) => r.json())) as { node: string };
      replicas.push({ name: `r${index + 1}`, port, url, node, child });
    }
    const configDir = await mkdtemp(path.join(os.tmpdir(), 'edgeflow-haproxy-bench-'));
    dirs.push(configDir);
    for (const [index, front] of fronts.entries()) {
      const file = path.join(configDir, `haproxy-${index}.cfg`);
      await writeFile(file, balancerConfig(front, replicas, { maxconn: 9_000 }));
      const balancer = spawn('haproxy', ['-db', '-f', file], { stdio: ['ignore', 'ignore', 'inherit'] });
      children.push(balancer);
      await untilHealthy(`http://127.0.0.1:${front}`, 'balancer answers');
    }
    options.log(
      `${options.replicas} replicas (${replicas.map((replica) => replica.url).join(', ')}) behind ${balancers} HAProxy processes, S3-protocol store`,
    );
    const api = await fleetApi(base, ADMIN_KEY);
    const devices = await registerDevices({
      server: base,
      key: api.key,
      count: options.devices,
      prefix: 'r-',
      concurrency: 50,
    });
    options.log(`registered ${options.devices} devices`);
    const simulations: (Simulation & { pids: number[] })[] = fronts.map((front, index) =>
      runSimulation({
        server: `http://127.0.0.1:${front}`,
        devices: devices.slice(index * DEVICES_PER_BALANCER, (index + 1) * DEVICES_PER_BALANCER),
        allowInsecure: true,
        allowUnsigned: true,
        perProcess: DEVICES_PER_BALANCER,
        waveSize: 1000,
      }),
    );
    for (const simulation of simulations) {
      for (const pid of options.nice ? simulation.pids : []) os.setPriority(pid, options.nice!);
    }
    const simulation = {
      counters: () => simulations.reduce((sum, one) => addCounters(sum, one.counters()), emptyCounters()),
      stop: async () => {
        await Promise.all(simulations.map((one) => one.stop()));
      },
      pids: simulations.flatMap((one) => one.pids),
    };
    await until('fleet connected', () => simulation.counters().connected === options.devices, 5 * 60_000);
    options.log(`all ${options.devices} devices connected`);
    const metrics = (name: string) => Promise.all(replicas.map((replica) => metricOf(replica.url, name)));
    return {
      ...api,
      base,
      server: replicas[0]!.child,
      simulation,
      replicas,
      metrics,
      async metric(name) {
        return (await metrics(name)).reduce((sum, value) => sum + value, 0);
      },
      async query<Row>(text: string, params: unknown[] = []) {
        return (await admin.query(text, params)).rows as Row[];
      },
      async close() {
        await simulation.stop().catch(() => {});
        await stopAll();
      },
    };
  } catch (error) {
    await stopAll();
    throw error;
  }
}
