/**
 * Server replicas as they run in production: N `edgeflow-ota serve` processes on one PostgreSQL
 * schema and one S3-protocol server (s3rver), behind a real HAProxy run with deploy/haproxy.cfg
 * (only its frontend port and the replicas' addresses changed). Devices and clients talk to the
 * balancer; a test can also reach each replica directly, kill one with SIGKILL and start it again
 * on the same port (the balancer's entry for it stays valid), and read its metrics and event stream.
 *
 * Devices download firmware from the bucket through a counting front (S3_PUBLIC_ENDPOINT, what
 * a CDN or the bucket's public name is in production), so a test can tell where the bytes went.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { ApiClient } from '../../src/cli/client.ts';
import { type Db, openDb } from '../../src/server/infra/db.ts';
import { CLI } from './cli.ts';
import { eventually } from './raw-device.ts';
import { type RunningS3rver, startS3rverProcess } from './s3rver.ts';
import { backendsUnderTest, dropSchema, TEST_DATABASE_URL } from './server.ts';
import { tempDir } from './temp.ts';

const IN_CI = process.env.CI === 'true' || process.env.CI === '1';
const SAMPLE_CONFIG = path.resolve('deploy/haproxy.cfg');

/** Debian installs HAProxy in /usr/sbin, which is not on every user's PATH. */
export function haproxyBinary(): string | undefined {
  const found = spawnSync('sh', ['-c', 'command -v haproxy'], { encoding: 'utf8' }).stdout.trim();
  if (found) return found;
  return existsSync('/usr/sbin/haproxy') ? '/usr/sbin/haproxy' : undefined;
}

/**
 * Why the scale-out suite cannot run here, or false. Under CI a missing HAProxy (or PostgreSQL,
 * through backendsUnderTest) fails the run instead of skipping it: .ci/run installs both.
 */
export async function replicasSkipReason(): Promise<string | false> {
  if (!(await backendsUnderTest()).some((backend) => backend.db === 'postgres')) return 'PostgreSQL is not reachable';
  if (!haproxyBinary()) {
    if (IN_CI) throw new Error('haproxy is not installed; CI needs it (.ci/run installs it)');
    console.warn('\n*** haproxy is not installed: skipping the scale-out suite ***\n');
    return 'haproxy is not installed';
  }
  return false;
}

/**
 * A free loopback port below the ephemeral range: bound, read and let go (the replica binds it a
 * moment later, and again when restarted). Ports the system hands out (PORT=0 servers of other
 * test files, every outgoing connection's local end) come from the ephemeral range, so one of
 * them cannot take a killed replica's port before it is started again.
 */
async function freePort(): Promise<number> {
  const range = '/proc/sys/net/ipv4/ip_local_port_range';
  const ephemeralStart = existsSync(range) ? Number(readFileSync(range, 'utf8').trim().split(/\s+/)[0]) : 32768;
  const low = Math.max(1024, Math.min(20_000, ephemeralStart - 10_000));
  for (let tries = 0; tries < 100; tries++) {
    const port = low + Math.floor(Math.random() * (ephemeralStart - low));
    const server = net.createServer();
    const bound = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (bound) {
      await new Promise((resolve) => server.close(resolve));
      return port;
    }
  }
  throw new Error('no free loopback port below the ephemeral range');
}

export interface Replica {
  /** r1, r2 … as in the balancer's configuration. */
  readonly name: string;
  readonly port: number;
  /** The replica itself, bypassing the balancer. */
  readonly url: string;
  /** Its id in server_nodes and devices.connected_node; a new one at each start. */
  nodeId: string;
  child: ChildProcess | undefined;
  /** What it printed (stdout and stderr), for a failure's message. */
  readonly output: string[];
}

export type StreamedEvent = { event: string; data: Record<string, unknown> };

export interface EventWatch {
  events: StreamedEvent[];
  /** Resolves once the replica accepted the stream: changes after it are all seen. */
  opened: Promise<void>;
  stop(): void;
}

/** The bucket as devices reach it: every firmware GET and the bytes it returned. */
export interface BucketFront {
  endpoint: string;
  firmwareGets: number;
  firmwareBytes: number;
}

export interface ReplicaSet {
  /** The balancer: what devices, the CLI and browsers use. */
  readonly url: string;
  readonly adminKey: string;
  readonly schema: string;
  readonly replicas: Replica[];
  readonly bucket: BucketFront;
  /** What HAProxy logged (requests, tunnels as they close, servers going down and up). */
  balancerLog(): string;
  /** The last state HAProxy announced for a replica's server entry ('UP' / 'DOWN'), or undefined. */
  balancerState(replica: Replica): 'UP' | 'DOWN' | undefined;
  /** SIGKILL: no shutdown, no goodbye to its devices or to server_nodes. */
  kill(replica: Replica): Promise<void>;
  /** Starts it again on its port, with the same environment; resolves once it listens. */
  restart(replica: Replica): Promise<void>;
  /** Its /metrics, as text. */
  metrics(replica: Replica): Promise<string>;
  /** The sum of every sample of one metric (all label sets) on the replica. */
  metric(replica: Replica, name: string): Promise<number>;
  /** An SSE client of the replica's /api/v1/events with `key`. */
  watch(replica: Replica, key: string): EventWatch;
  /** The replica whose node id this is, if it is a current one. */
  replicaOfNode(nodeId: string | null): Replica | undefined;
  /** SQL on the replicas' schema. */
  db: Db;
  /** Everything down and removed: watchers, balancer, replicas, bucket, schema, directories. */
  stop(): Promise<void>;
}

export interface ReplicaSetOptions {
  count: number;
  /** More environment for every replica (timings). */
  env?: Record<string, string>;
}

/** The sum of every sample of `name` in a Prometheus text exposition. */
export function sumMetric(text: string, name: string): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const next = line.charAt(name.length);
    if (next !== '{' && next !== ' ') continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/**
 * deploy/haproxy.cfg with this run's ports: the frontend on a free loopback port, one `server`
 * line per replica. The process gets a smaller `maxconn`: the sample's 50,000 needs an open-file
 * limit a test machine (or an unprivileged CI user) may not be allowed to raise to.
 */
export function balancerConfig(
  frontendPort: number,
  replicas: readonly Pick<Replica, 'name' | 'port'>[],
  options: { maxconn?: number } = {},
): string {
  const lines: string[] = [];
  let serversWritten = false;
  for (const line of readFileSync(SAMPLE_CONFIG, 'utf8').split('\n')) {
    const trimmed = line.trim();
    if (/^bind\s/.test(trimmed)) lines.push(`    bind 127.0.0.1:${frontendPort}`);
    else if (/^maxconn\s/.test(trimmed)) lines.push(`    maxconn ${options.maxconn ?? 2000}`);
    else if (/^server\s/.test(trimmed)) {
      if (!serversWritten) {
        for (const replica of replicas) lines.push(`    server ${replica.name} 127.0.0.1:${replica.port}`);
        serversWritten = true;
      }
    } else lines.push(line);
  }
  if (!serversWritten) throw new Error(`${SAMPLE_CONFIG} has no server line to replace`);
  return lines.join('\n');
}

/** A pass-through HTTP proxy in front of s3rver that counts the firmware objects it serves. */
async function startBucketFront(s3: RunningS3rver): Promise<{ front: BucketFront; close(): Promise<void> }> {
  const upstream = new URL(s3.endpoint);
  const front: BucketFront = { endpoint: '', firmwareGets: 0, firmwareBytes: 0 };
  const server = http.createServer((request, response) => {
    const counted = request.method === 'GET' && (request.url ?? '').startsWith(`/${s3.bucket}/firmware/`);
    const forwarded = http.request(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: request.method,
        path: request.url,
        headers: request.headers,
      },
      (answer) => {
        response.writeHead(answer.statusCode ?? 502, answer.headers);
        if (counted && (answer.statusCode === 200 || answer.statusCode === 206)) {
          front.firmwareGets += 1;
          answer.on('data', (chunk: Buffer) => {
            front.firmwareBytes += chunk.length;
          });
        }
        answer.pipe(response);
      },
    );
    forwarded.on('error', () => response.destroy());
    request.pipe(forwarded);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  front.endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    front,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Stops a child: SIGTERM, then SIGKILL if it has not gone after `graceMs`. */
async function stopChild(child: ChildProcess | undefined, graceMs = 15_000): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const killer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited(child);
  clearTimeout(killer);
}

/**
 * Kills the replicas and the balancer if this process goes without stopping them: a test that
 * throws past its `after`, a runner that gives up on the file, a SIGKILL. A small process reads
 * the children's pids on its stdin and kills them when the stdin closes, which happens whenever
 * this process ends, however it ends.
 */
function startWatchdog(): { watch(child: ChildProcess): void; close(): void } {
  const code = `
    const pids = new Set();
    let buffer = '';
    process.stdin.setEncoding('utf8').on('data', (chunk) => {
      buffer += chunk;
      for (let end = buffer.indexOf('\\n'); end >= 0; end = buffer.indexOf('\\n')) {
        const [op, pid] = buffer.slice(0, end).split(' ');
        buffer = buffer.slice(end + 1);
        if (op === '+') pids.add(Number(pid)); else pids.delete(Number(pid));
      }
    });
    process.stdin.on('end', () => {
      for (const pid of pids) try { process.kill(pid, 'SIGKILL'); } catch {}
      process.exit(0);
    });`;
  const watchdog = spawn(process.execPath, ['-e', code], { stdio: ['pipe', 'ignore', 'ignore'] });
  watchdog.unref();
  const input = watchdog.stdin!;
  (input as unknown as { unref?: () => void }).unref?.();
  input.on('error', () => {});
  return {
    watch(child) {
      if (child.pid === undefined) return;
      input.write(`+ ${child.pid}\n`);
      child.once('exit', () => input.writable && input.write(`- ${child.pid}\n`));
    },
    close: () => input.end(),
  };
}

export async function startReplicas(options: ReplicaSetOptions): Promise<ReplicaSet> {
  const adminKey = `efo_test_${randomBytes(12).toString('hex')}`;
  const schema = `t_${randomBytes(6).toString('hex')}`;
  const databaseUrl = `${TEST_DATABASE_URL}?options=${encodeURIComponent(`-c search_path=${schema}`)}`;
  const dataDirs: string[] = [];
  const watchers: EventWatch[] = [];
  const replicas: Replica[] = [];
  let s3: RunningS3rver | undefined;
  let bucketFront: Awaited<ReturnType<typeof startBucketFront>> | undefined;
  let balancer: ChildProcess | undefined;
  const balancerOutput: string[] = [];
  let db: Db | undefined;
  const watchdog = startWatchdog();

  const stop = async () => {
    // The schema and the directories go whatever failed before them.
    try {
      for (const watcher of watchers) watcher.stop();
      await stopChild(balancer);
      await Promise.all(replicas.map((replica) => stopChild(replica.child)));
      await bucketFront?.close();
      await s3?.stop();
      await db?.close();
    } finally {
      await dropSchema(schema);
      await Promise.all(dataDirs.map((dir) => rm(dir, { recursive: true, force: true })));
      watchdog.close();
    }
  };

  try {
    const admin = await openDb({ databaseUrl: TEST_DATABASE_URL });
    await admin.exec(`CREATE SCHEMA ${schema}`);
    await admin.close();
    db = await openDb({ databaseUrl: TEST_DATABASE_URL, schema });
    s3 = await startS3rverProcess();
    bucketFront = await startBucketFront(s3);
    const frontendPort = await freePort();
    const url = `http://127.0.0.1:${frontendPort}`;
    for (let index = 1; index <= options.count; index++) {
      const port = await freePort();
      replicas.push({
        name: `r${index}`,
        port,
        url: `http://127.0.0.1:${port}`,
        nodeId: '',
        child: undefined,
        output: [],
      });
    }

    const environment = async (replica: Replica): Promise<NodeJS.ProcessEnv> => {
      const dataDir = await tempDir(`edgeflow-replica-${replica.name}-`);
      dataDirs.push(dataDir);
      return {
        ...process.env,
        PORT: String(replica.port),
        HOST: '127.0.0.1',
        DATABASE_URL: databaseUrl,
        EDGEFLOW_STORE: 's3',
        S3_BUCKET: s3!.bucket,
        S3_ENDPOINT: s3!.endpoint,
        S3_PUBLIC_ENDPOINT: bucketFront!.front.endpoint,
        S3_ACCESS_KEY_ID: s3!.accessKeyId,
        S3_SECRET_ACCESS_KEY: s3!.secretAccessKey,
        EDGEFLOW_DATA_DIR: dataDir,
        EDGEFLOW_ADMIN_KEY: adminKey,
        EDGEFLOW_PUBLIC_URL: url,
        EDGEFLOW_TRUST_PROXY: 'true',
        LOG_LEVEL: 'warn',
        ...options.env,
      };
    };

    const launch = async (replica: Replica): Promise<void> => {
      replica.output.length = 0;
      const child = spawn(process.execPath, [CLI, 'serve'], {
        env: await environment(replica),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      replica.child = child;
      watchdog.watch(child);
      child.stdout!.setEncoding('utf8').on('data', (chunk: string) => replica.output.push(chunk));
      child.stderr!.setEncoding('utf8').on('data', (chunk: string) => replica.output.push(chunk));
      const known = new Set(replicas.map((other) => other.nodeId));
      await eventually(
        async () => {
          if (child.exitCode !== null) throw new Error(`replica ${replica.name} exited: ${replica.output.join('')}`);
          return /listening on /.test(replica.output.join(''));
        },
        15_000,
        `replica ${replica.name} listening`,
      );
      // Started one at a time: the newest entry of the registry is this process (it registers
      // before it listens).
      const [newest] = await db!.query<{ id: string }>('SELECT id FROM server_nodes ORDER BY started_at DESC LIMIT 1');
      if (!newest || known.has(newest.id)) throw new Error(`replica ${replica.name} is not in server_nodes`);
      replica.nodeId = newest.id;
    };

    // One after the other: the first migrates the schema.
    for (const replica of replicas) await launch(replica);

    const configFile = path.join(await tempDir('edgeflow-haproxy-'), 'haproxy.cfg');
    dataDirs.push(path.dirname(configFile));
    await writeFile(configFile, balancerConfig(frontendPort, replicas));
    balancer = spawn(haproxyBinary()!, ['-db', '-f', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    balancer.stdout!.setEncoding('utf8').on('data', (chunk: string) => balancerOutput.push(chunk));
    balancer.stderr!.setEncoding('utf8').on('data', (chunk: string) => balancerOutput.push(chunk));
    const haproxy = balancer;
    watchdog.watch(haproxy);
    await eventually(
      async () => {
        if (haproxy.exitCode !== null) throw new Error(`haproxy exited: ${balancerOutput.join('')}`);
        return (await fetch(`${url}/readyz`).catch(() => undefined))?.status === 200;
      },
      10_000,
      'the balancer answering',
    );

    const set: ReplicaSet = {
      url,
      adminKey,
      schema,
      replicas,
      bucket: bucketFront.front,
      db,
      balancerLog: () => balancerOutput.join(''),
      balancerState(replica) {
        const states = [
          ...balancerOutput.join('').matchAll(new RegExp(`Server replicas/${replica.name} is (UP|DOWN)`, 'g')),
        ];
        return states.at(-1)?.[1] as 'UP' | 'DOWN' | undefined;
      },
      async kill(replica) {
        const child = replica.child;
        if (!child) return;
        child.kill('SIGKILL');
        await exited(child);
      },
      restart: (replica) => launch(replica),
      async metrics(replica) {
        const response = await fetch(`${replica.url}/metrics`);
        if (!response.ok) throw new Error(`${replica.name} /metrics: ${response.status}`);
        return response.text();
      },
      async metric(replica, name) {
        return sumMetric(await set.metrics(replica), name);
      },
      watch(replica, key) {
        const controller = new AbortController();
        const events: StreamedEvent[] = [];
        let open: () => void = () => {};
        const opened = new Promise<void>((resolve) => {
          open = resolve;
        });
        (async () => {
          for await (const event of new ApiClient({ server: replica.url, key }).events(controller.signal, open)) {
            events.push(event);
          }
        })().catch(() => {});
        const watcher = { events, opened, stop: () => controller.abort() };
        watchers.push(watcher);
        return watcher;
      },
      replicaOfNode: (nodeId) => replicas.find((replica) => replica.nodeId === nodeId),
      stop,
    };
    return set;
  } catch (error) {
    await stop().catch(() => {});
    throw error;
  }
}
