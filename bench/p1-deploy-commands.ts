/**
 * P1: an all-at-once deployment to 10,000 connected simulated devices, from the POST until the
 * server has written the last `ota_update` command (its `edgeflow_commands_dispatched_total`
 * reaching 10,000, polled from /metrics every 50 ms; the time is the server's own record of its last
 * write, edgeflow_last_command_dispatched_timestamp_seconds), on PostgreSQL (≤ 1 s) and on the embedded
 * database (≤ 2 s). The real server runs as a child process; the devices are real agents in child
 * processes.
 *
 * Baseline, same run: a bare `ws` server broadcasting one message of the same size to as many
 * sockets (bench/support/p4-bare-ws-server.ts), until every write was handed to the kernel.
 *
 * The devices (and the baseline's clients) run at nice P1_FLEET_NICE (10; 0 for the server's own
 * priority): the figure is the server's time, and in a fleet the devices are other machines. Here
 * they share its two cores, and 10,000 agents handling their commands at the server's priority took
 * a third to a half of the CPU it was sending them with (per-process CPU sampled during the send).
 */
import { type ChildProcess, fork } from 'node:child_process';
import { once } from 'node:events';
import os from 'node:os';
import path from 'node:path';
import { type Figure, REPO_ROOT, report, until } from './lib.ts';
import { startFleet } from './support/fleet.ts';

const DEVICES = Number(process.env.P1_DEVICES ?? 10_000);
const PER_PROCESS = 5_000;
const TARGET_SECONDS = 1;
const TARGET_RATIO = 5;
/** About the size of an ota_update command (manifest, signature, link). */
const COMMAND_BYTES = 1_300;
const FLEET_NICE = Number(process.env.P1_FLEET_NICE ?? 10);
const log = (line: string) => console.log(`p1  ${line}`);

function forkSupport(file: string): ChildProcess {
  return fork(path.join(REPO_ROOT, 'bench/support', file), [], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
}

async function bareBroadcastSeconds(): Promise<number> {
  const server = forkSupport('p4-bare-ws-server.ts');
  const clients: ChildProcess[] = [];
  try {
    const [{ port }] = (await once(server, 'message')) as [{ port: number }];
    let connected = 0;
    for (let from = 0; from < DEVICES; from += PER_PROCESS) {
      const client = forkSupport('p4-raw-clients.ts');
      clients.push(client);
      let mine = 0;
      client.on('message', (message: { connected: number }) => {
        connected += message.connected - mine;
        mine = message.connected;
      });
      if (FLEET_NICE) os.setPriority(client.pid!, FLEET_NICE);
      const count = Math.min(PER_PROCESS, DEVICES - from);
      client.send({ type: 'start', url: `ws://127.0.0.1:${port}/tunnel`, count, prefix: `raw-${from}-` });
    }
    await until('baseline sockets connected', () => connected === DEVICES, 5 * 60_000);
    server.send({ type: 'broadcast', text: JSON.stringify({ type: 'command', payload: 'x'.repeat(COMMAND_BYTES) }) });
    const [{ ms }] = (await once(server, 'message')) as [{ ms: number }];
    return ms / 1000;
  } finally {
    for (const client of clients) if (client.connected) client.send({ type: 'stop' });
    server.kill();
  }
}

/** POST → the last command written, on one database. */
async function deploymentSeconds(database: 'pglite' | 'postgres'): Promise<number> {
  const fleet = await startFleet({ devices: DEVICES, database, perProcess: PER_PROCESS, log, nice: FLEET_NICE });
  try {
    await fleet.uploadFirmware('2.0.0', Buffer.alloc(1024, 7));
    const before = await fleet.metric('edgeflow_commands_dispatched_total');
    const startedAtMs = Date.now();
    const started = performance.now();
    await fleet.api('POST', '/api/v1/deployments', {
      version: '2.0.0',
      target: { all: true },
      strategy: 'all_at_once',
    });
    log(`${database}: POST answered after ${((performance.now() - started) / 1000).toFixed(2)} s`);
    let lastLog = performance.now();
    const done = await until(
      'every command written',
      async () => {
        const written = (await fleet.metric('edgeflow_commands_dispatched_total')) - before;
        if (performance.now() - lastLog > 500) {
          lastLog = performance.now();
          log(`${database}: ${written} commands written after ${((lastLog - started) / 1000).toFixed(2)} s`);
        }
        return written >= DEVICES;
      },
      5 * 60_000,
      50,
    );
    // When the server wrote the last command (its own clock, this machine's), not when a scrape saw
    // it: a scrape waits behind the devices' answers the commands set off, 50–300 ms after.
    const writtenAt = await fleet.metric('edgeflow_last_command_dispatched_timestamp_seconds');
    const seconds = (writtenAt * 1000 - startedAtMs) / 1000;
    log(
      `${database}: deployment to ${DEVICES} devices: last command written ${seconds.toFixed(2)} s after the POST ` +
        `(seen by the scrape after ${((done - started) / 1000).toFixed(2)} s)`,
    );
    return seconds;
  } finally {
    await fleet.close();
  }
}

/** The target per database: PostgreSQL takes the statements off the server's event loop; PGlite runs them on it. */
const TARGETS = { postgres: TARGET_SECONDS, pglite: 2 * TARGET_SECONDS } as const;
const databases = (process.env.P1_DATABASES ?? 'postgres,pglite').split(',') as ('pglite' | 'postgres')[];
const measured: [(typeof databases)[number], number][] = [];
for (const database of databases) measured.push([database, await deploymentSeconds(database)]);
const baseline = await bareBroadcastSeconds();
log(`bare ws broadcast to ${DEVICES} sockets: ${baseline.toFixed(3)} s`);
const figures: Figure[] = measured.map(([database, seconds]) => ({
  name: `${database}: all-at-once deployment to ${DEVICES} devices, POST → last ota_update written`,
  value: seconds,
  unit: 's',
  baseline: { name: 'bare ws broadcast of a same-size message', value: baseline, unit: 's' },
  ratio: seconds / baseline,
  target: `≤ ${TARGETS[database]} s and ≤ ${TARGET_RATIO}× the baseline`,
  met: seconds <= TARGETS[database] && seconds / baseline <= TARGET_RATIO,
}));
report('p1-deploy-commands', figures, {
  devices: DEVICES,
  command_bytes_baseline: COMMAND_BYTES,
  fleet_nice: FLEET_NICE,
});
