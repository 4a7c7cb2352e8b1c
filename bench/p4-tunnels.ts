/**
 * P4: concurrent tunnels on one server process, and the server's RSS per connected device.
 *
 * The real server (`bin/edgeflow-ota.js serve`, embedded PGlite) runs as a child process; the
 * devices are registered through the API and connected by the simulator (the real agent) from
 * child processes of 3,750 sockets each, in two halves. Baseline, same run: a bare `ws` server holding
 * as many sockets from clients that only open them and send a connect frame.
 *
 * RSS is read after a full GC (the processes run with --expose-gc; the server gets SIGUSR2 through
 * a preload), once when every device is connected and again after 10 s idle.
 */
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { runSimulation } from '../src/simulator/processes.ts';
import { registerDevices } from '../src/simulator/register.ts';
import { type Figure, freePort, REPO_ROOT, report, rssBytes, serveArgs, serveEnv, until, untilHealthy } from './lib.ts';

const DEVICES = Number(process.env.P4_DEVICES ?? 15_000);
/**
 * Every socket is a file, and a process may open 20,000 here; smaller slices also keep every half
 * in child processes, so this process only watches.
 */
const PER_PROCESS = 3_750;
const CONNECT_TIMEOUT_MS = 5 * 60_000;
const IDLE_MS = 10_000;
const TARGET_DEVICES = 15_000;
const TARGET_KIB_PER_DEVICE = 20;
const ADMIN_KEY = 'p4-bench-admin-key';

const kib = (bytes: number) => bytes / 1024;
const mib = (bytes: number) => bytes / 1024 / 1024;
const log = (line: string) => console.log(`p4  ${line}`);

/** What a process holds at one moment, after a full GC. */
interface Reading {
  rss: number;
  /** Live JS objects. */
  heapUsed: number;
  /** Off the JS heap: buffers and native objects V8 knows of (not the WASM database's memory). */
  external: number;
}

/**
 * A reading once RSS has settled: a full GC, then again every second until two readings in a row
 * agree within 1 MiB. V8 and the allocator hand memory back lazily, so one reading right after a
 * burst of work (registering thousands of devices) still counts garbage about to be returned.
 */
async function settledReading(
  pid: number,
  collect: () => Promise<NodeJS.MemoryUsage>,
  maxMs = 30_000,
): Promise<Reading> {
  const deadline = Date.now() + maxMs;
  let previous = Number.POSITIVE_INFINITY;
  let steady = 0;
  for (;;) {
    const memory = await collect();
    const rss = rssBytes(pid);
    steady = Math.abs(rss - previous) < 1024 * 1024 ? steady + 1 : 0;
    previous = rss;
    if (steady >= 2 || Date.now() > deadline) return { rss, heapUsed: memory.heapUsed, external: memory.external };
  }
}

interface Measurement {
  /** Before any device connected, with half of them, with all of them, and after 10 s idle. */
  before: Reading;
  half: Reading;
  connected: Reading;
  idle: Reading;
  /** Time spent connecting (both halves, not the pause to measure between them). */
  connectSeconds: number;
}

/** The devices connect in two halves, so the second half's growth shows the marginal cost per device. */
const halves = (count: number): [number, number][] => [
  [0, Math.ceil(count / 2)],
  [Math.ceil(count / 2), count],
];

async function measureServer(): Promise<Measurement & { clientRss: number[]; registerSeconds: number }> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'edgeflow-p4-'));
  const memoryFile = path.join(dataDir, 'p4-memory.json');
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const server = spawn(
    process.execPath,
    serveArgs(['--expose-gc', '--import', path.join(REPO_ROOT, 'bench/support/p4-gc-on-signal.mjs')]),
    {
      env: serveEnv(dataDir, port, ADMIN_KEY, { EDGEFLOW_PUBLIC_URL: base, P4_MEMORY_FILE: memoryFile }),
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  );
  const gc = async () => {
    server.kill('SIGUSR2');
    await sleep(1000);
    return JSON.parse(await readFile(memoryFile, 'utf8')) as NodeJS.MemoryUsage;
  };
  try {
    await untilHealthy(base, 'server healthy');
    const org = await fetch(`${base}/api/v1/orgs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'p4' }),
    }).then((r) => r.json() as Promise<{ admin_key: string }>);

    const registerStarted = performance.now();
    const devices = await registerDevices({ server: base, key: org.admin_key, count: DEVICES, prefix: 'p4-' });
    const registerSeconds = (performance.now() - registerStarted) / 1000;
    log(`registered ${DEVICES} devices through the API in ${registerSeconds.toFixed(1)} s`);

    const before = await settledReading(server.pid!, gc);
    const simulations: ReturnType<typeof runSimulation>[] = [];
    try {
      let connectSeconds = 0;
      const readings: Reading[] = [];
      for (const [from, to] of halves(DEVICES)) {
        const started = performance.now();
        const simulation = runSimulation({
          server: base,
          devices: devices.slice(from, to),
          allowInsecure: true,
          allowUnsigned: true,
          perProcess: PER_PROCESS,
        });
        simulations.push(simulation);
        let lastLog = 0;
        await until(
          `devices ${from}–${to} connected`,
          () => {
            const { connected } = simulation.counters();
            if (performance.now() - lastLog > 5000) {
              lastLog = performance.now();
              log(`  ${from + connected}/${DEVICES} connected`);
            }
            return connected === to - from;
          },
          CONNECT_TIMEOUT_MS,
        );
        connectSeconds += (performance.now() - started) / 1000;
        readings.push(await settledReading(server.pid!, gc));
      }
      log(`all ${DEVICES} connected in ${connectSeconds.toFixed(1)} s`);
      const metrics = await fetch(`${base}/metrics`).then((r) => r.text());
      const held = Number(/^edgeflow_connected_devices (\d+)/m.exec(metrics)?.[1]);
      if (held !== DEVICES) throw new Error(`the server reports ${held} connected devices, expected ${DEVICES}`);
      await sleep(IDLE_MS);
      const idle = await settledReading(server.pid!, gc);
      const clientRss = simulations.flatMap((simulation) => simulation.pids.map(rssBytes));
      return { before, half: readings[0]!, connected: readings[1]!, idle, connectSeconds, clientRss, registerSeconds };
    } finally {
      await Promise.all(simulations.map((simulation) => simulation.stop()));
    }
  } finally {
    server.kill('SIGTERM');
    await once(server, 'exit');
    await rm(dataDir, { recursive: true, force: true });
  }
}

function forkSupport(file: string): ChildProcess {
  return fork(path.join(REPO_ROOT, 'bench/support', file), [], {
    execArgv: ['--import', 'tsx', '--expose-gc'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
}

async function measureBareWs(): Promise<Measurement> {
  const server = forkSupport('p4-bare-ws-server.ts');
  const [{ port }] = (await once(server, 'message')) as [{ port: number }];
  const gc = async () => {
    server.send({ type: 'gc' });
    const [{ memory }] = (await once(server, 'message')) as [{ memory: NodeJS.MemoryUsage }];
    await sleep(1000);
    return memory;
  };
  const clients: ChildProcess[] = [];
  try {
    const before = await settledReading(server.pid!, gc);
    let connectSeconds = 0;
    const readings: Reading[] = [];
    for (const [from, to] of halves(DEVICES)) {
      const started = performance.now();
      const client = forkSupport('p4-raw-clients.ts');
      clients.push(client);
      let connected = 0;
      client.on('message', (message: { connected: number }) => {
        connected = message.connected;
      });
      client.send({ type: 'start', url: `ws://127.0.0.1:${port}/tunnel`, count: to - from, prefix: `raw-${from}-` });
      await until(`baseline sockets ${from}–${to} connected`, () => connected === to - from, CONNECT_TIMEOUT_MS);
      connectSeconds += (performance.now() - started) / 1000;
      readings.push(await settledReading(server.pid!, gc));
    }
    log(`baseline: ${DEVICES} bare sockets connected in ${connectSeconds.toFixed(1)} s`);
    await sleep(IDLE_MS);
    const idle = await settledReading(server.pid!, gc);
    return { before, half: readings[0]!, connected: readings[1]!, idle, connectSeconds };
  } finally {
    for (const client of clients) {
      if (client.connected) client.send({ type: 'stop' });
    }
    await Promise.all(clients.map((client) => (client.exitCode === null ? once(client, 'exit') : undefined)));
    server.kill();
  }
}

log(`${DEVICES} devices, ${Math.ceil(DEVICES / PER_PROCESS)} simulator processes of ≤ ${PER_PROCESS}`);
const bare = await measureBareWs();
const edgeflow = await measureServer();

const secondHalf = DEVICES - Math.ceil(DEVICES / 2);
/** Per device, (all connected − none) / all and (all − half) / second half: the larger, so reuse of memory freed before connecting flatters neither. */
const perDevice = (m: Measurement, field: keyof Reading) => {
  const overall = (Math.min(m.connected[field], m.idle[field]) - m.before[field]) / DEVICES;
  const marginal = (m.connected[field] - m.half[field]) / secondHalf;
  return kib(Math.max(overall, marginal));
};
const serverKib = perDevice(edgeflow, 'rss');
const bareKib = perDevice(bare, 'rss');
const breakdown = (m: Measurement) => ({
  rss_mib: Object.fromEntries(
    (['before', 'half', 'connected', 'idle'] as const).map((moment) => [moment, mib(m[moment].rss)]),
  ),
  kib_per_device: {
    rss: perDevice(m, 'rss'),
    rss_overall: kib(Math.min(m.connected.rss, m.idle.rss) - m.before.rss) / DEVICES,
    rss_second_half: kib(m.connected.rss - m.half.rss) / secondHalf,
    js_heap: perDevice(m, 'heapUsed'),
    external: perDevice(m, 'external'),
  },
});
const figures: Figure[] = [
  {
    name: 'concurrent tunnels held by one server process',
    value: DEVICES,
    unit: 'devices',
    target: `≥ ${TARGET_DEVICES}`,
    met: DEVICES >= TARGET_DEVICES,
  },
  {
    name: 'server RSS per connected device',
    value: serverKib,
    unit: 'KiB',
    baseline: { name: 'bare ws server, per socket', value: bareKib, unit: 'KiB' },
    ratio: serverKib / bareKib,
    target: `≤ ${TARGET_KIB_PER_DEVICE} KiB`,
    met: serverKib <= TARGET_KIB_PER_DEVICE,
  },
  {
    name: 'server JS heap per connected device',
    value: perDevice(edgeflow, 'heapUsed'),
    unit: 'KiB',
    baseline: { name: 'bare ws server, per socket', value: perDevice(bare, 'heapUsed'), unit: 'KiB' },
    ratio: perDevice(edgeflow, 'heapUsed') / perDevice(bare, 'heapUsed'),
  },
  {
    name: 'time until every device connected',
    value: edgeflow.connectSeconds,
    unit: 's',
    baseline: { name: 'bare ws sockets', value: bare.connectSeconds, unit: 's' },
    ratio: edgeflow.connectSeconds / bare.connectSeconds,
  },
];
report('p4-tunnels', figures, {
  devices: DEVICES,
  simulator_processes: edgeflow.clientRss.length,
  server: breakdown(edgeflow),
  bare_ws: breakdown(bare),
  simulator_kib_per_device: edgeflow.clientRss.map((rss) => kib(rss) / Math.ceil(DEVICES / edgeflow.clientRss.length)),
  register_seconds: edgeflow.registerSeconds,
  note:
    'after a full GC, settled; per device = max((min(all connected, after 10 s idle) − before) / devices, ' +
    '(all connected − half connected) / second half)',
});
