/**
 * P8: how fast a fleet comes back after a server restart.
 *
 * The real server (`bin/edgeflow-ota.js serve`, embedded PGlite) runs as a child process; 1,000
 * devices are registered through the API and connected by the simulator (the real agent) from
 * two child processes. The server is then stopped gracefully (SIGTERM: tunnels closed with 1012)
 * and started again on the same data directory and port. Measured: the time from the new
 * server's first answer on /healthz until every device is connected again, and the peak connect
 * rate (connects per second, over a sliding 1 s window) while they come back.
 *
 * Baseline, same run: the same devices connecting for the first time to a fresh server, all at
 * once (time until all connected and its peak connect rate) — what the server is known to handle.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { runSimulation } from '../src/simulator/processes.ts';
import { registerDevices } from '../src/simulator/register.ts';
import { type Figure, freePort, report, serveArgs, until } from './lib.ts';

const DEVICES = Number(process.env.P8_DEVICES ?? 1_000);
const PER_PROCESS = Math.ceil(DEVICES / 2);
const TARGET_SECONDS = 20;
const ADMIN_KEY = 'p8-bench-admin-key';
const SAMPLE_MS = 100;
const log = (line: string) => console.log(`p8  ${line}`);

function startServer(dataDir: string, port: number): ChildProcess {
  return spawn(process.execPath, serveArgs(), {
    env: {
      ...process.env,
      EDGEFLOW_DATA_DIR: dataDir,
      PORT: String(port),
      HOST: '127.0.0.1',
      EDGEFLOW_PUBLIC_URL: `http://127.0.0.1:${port}`,
      EDGEFLOW_ADMIN_KEY: ADMIN_KEY,
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

const answers = (base: string) =>
  fetch(`${base}/healthz`).then(
    (response) => response.ok,
    () => false,
  );

/** Polls until `check` holds, every SAMPLE_MS; returns when (performance.now()) it first held. */

/** Samples a connected count until it reaches `total`; returns the peak rate over any 1 s window. */
class RateMeter {
  readonly #samples: { at: number; connected: number }[] = [];
  add(connected: number): void {
    this.#samples.push({ at: performance.now(), connected });
  }
  peakPerSecond(): number {
    let peak = 0;
    let from = 0;
    for (let to = 0; to < this.#samples.length; to++) {
      const end = this.#samples[to]!;
      while (end.at - this.#samples[from]!.at > 1000) from++;
      // The first sample inside the window counts from the one just before it.
      const start = this.#samples[Math.max(0, from - 1)]!;
      const seconds = Math.max(1, (end.at - start.at) / 1000);
      peak = Math.max(peak, (end.connected - start.connected) / seconds);
    }
    return peak;
  }
}

const dataDir = await mkdtemp(path.join(os.tmpdir(), 'edgeflow-p8-'));
const port = await freePort();
const base = `http://127.0.0.1:${port}`;
let server = startServer(dataDir, port);
let simulation: ReturnType<typeof runSimulation> | undefined;
try {
  await until('server healthy', () => answers(base), 60_000);
  const org = await fetch(`${base}/api/v1/orgs`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'p8' }),
  }).then((r) => r.json() as Promise<{ admin_key: string }>);
  const devices = await registerDevices({ server: base, key: org.admin_key, count: DEVICES, prefix: 'p8-' });
  log(`registered ${DEVICES} devices`);

  // Baseline: first connect of the whole fleet, all at once.
  const firstStart = performance.now();
  simulation = runSimulation({
    server: base,
    devices,
    allowInsecure: true,
    allowUnsigned: true,
    perProcess: PER_PROCESS,
    waveSize: DEVICES,
  });
  const fleet = simulation;
  const firstRate = new RateMeter();
  const firstDone = await until(
    'first connect',
    () => {
      const { connected } = fleet.counters();
      firstRate.add(connected);
      return connected === DEVICES;
    },
    5 * 60_000,
    SAMPLE_MS,
  );
  const firstSeconds = (firstDone - firstStart) / 1000;
  log(`first connect: all ${DEVICES} in ${firstSeconds.toFixed(1)} s, peak ${firstRate.peakPerSecond().toFixed(0)}/s`);
  await sleep(2000);

  // The restart: SIGTERM (tunnels closed with 1012), then the same data directory and port.
  const stopAt = performance.now();
  server.kill('SIGTERM');
  await once(server, 'exit');
  await until('devices notice', () => fleet.counters().connected === 0, 60_000);
  const downSeconds = (performance.now() - stopAt) / 1000;
  server = startServer(dataDir, port);
  const restartAt = performance.now();
  const restartRate = new RateMeter();
  const answeredAt = await until('server answers again', () => answers(base), 60_000);
  const backAt = await until(
    'every device back',
    () => {
      const { connected } = fleet.counters();
      restartRate.add(connected);
      return connected === DEVICES;
    },
    5 * 60_000,
    SAMPLE_MS,
  );
  const metrics = await fetch(`${base}/metrics`).then((r) => r.text());
  const held = Number(/^edgeflow_connected_devices (\d+)/m.exec(metrics)?.[1]);
  if (held !== DEVICES) throw new Error(`the server reports ${held} connected devices, expected ${DEVICES}`);
  const backSeconds = (backAt - answeredAt) / 1000;
  log(
    `restart: server answered ${((answeredAt - restartAt) / 1000).toFixed(1)} s after start; ` +
      `all ${DEVICES} back ${backSeconds.toFixed(1)} s later, peak ${restartRate.peakPerSecond().toFixed(0)}/s`,
  );

  const figures: Figure[] = [
    {
      name: 'time from the restarted server answering until every device is online again',
      value: backSeconds,
      unit: 's',
      baseline: { name: 'first connect of the fleet, all at once', value: firstSeconds, unit: 's' },
      ratio: backSeconds / firstSeconds,
      target: `≤ ${TARGET_SECONDS} s`,
      met: backSeconds <= TARGET_SECONDS,
    },
    {
      name: 'peak connect rate while the fleet comes back (1 s window)',
      value: restartRate.peakPerSecond(),
      unit: 'connects/s',
      baseline: {
        name: 'peak of the first connect, all at once',
        value: firstRate.peakPerSecond(),
        unit: 'connects/s',
      },
      ratio: restartRate.peakPerSecond() / firstRate.peakPerSecond(),
    },
  ];
  report('p8-reconnect', figures, {
    devices: DEVICES,
    simulator_processes: Math.ceil(DEVICES / PER_PROCESS),
    server_start_to_answer_seconds: (answeredAt - restartAt) / 1000,
    stop_until_all_noticed_seconds: downSeconds,
    note: 'connect rates from the simulator counters sampled every 100 ms (children report every 500 ms)',
  });
} finally {
  await simulation?.stop();
  if (server.exitCode === null && server.signalCode === null) {
    server.kill('SIGTERM');
    await once(server, 'exit');
  }
  await rm(dataDir, { recursive: true, force: true });
}
