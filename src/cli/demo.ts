/**
 * `edgeflow-ota demo` (`npm run demo`): the product in one command, for a first look. A server on
 * the embedded defaults in a temporary directory, an organization with an admin and a viewer key,
 * a simulated fleet at three sites, firmware 1.0.0 and 2.0.0, and a canary of 2.0.0 that stops
 * itself on injected failures and rolls back — all through the same pieces an operator uses (the
 * server `serve` starts, the simulator's process runner, the API client), until Ctrl-C.
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Command } from 'commander';
import { loadConfig } from '../server/infra/config.ts';
import { isEnded } from '../server/model/deployment.ts';
import type { RunningServer } from '../server/server.ts';
import {
  type DeviceSpec,
  fetchSigningKey,
  registerDevices,
  runSimulation,
  type Simulation,
} from '../simulator/index.ts';
import { ApiClient } from './client.ts';
import {
  deploymentRequestOf,
  describeRollback,
  describeSettings,
  describeStrategy,
  formatMinutes,
  parseDuration,
  rollbackUnderWay,
} from './deployment-format.ts';
import { type DeploymentView, summarizeCounts } from './deployment-status.ts';
import { CliError, describeCliError } from './errors.ts';

const DEFAULT_PORT = 8080;
const ENDING_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
/** How the printed commands call the CLI: from the repository, where `npm run demo` runs. */
const CLI = 'node bin/edgeflow-ota.js';
const MAX_DEVICES = 10_000;
const ONLINE_WAIT_MS = 60_000;

/**
 * The fleet's sites, in device-id order. The server plans a deployment's devices by id, so the
 * canary (the first 10 %) is made of Austin gateways: the site where 2.0.0 fails.
 */
const SITES = [
  { name: 'austin', model: 'rpi4' },
  { name: 'berlin', model: 'rpi4' },
  { name: 'lyon', model: 'rpi5' },
] as const;
const FAILING_SITE = SITES[0].name;
const NEW_VERSION = '2.0.0';
/** The canary, as `deploy` flags (the bake is the demo's --bake). */
const CANARY = { all: true, canaryPercent: '10', threshold: '10', minSample: '5', onFailure: 'rollback' };
const FIRMWARE_BYTES = 300 * 1024;

/**
 * One Austin gateway in five (austin-1, austin-6, …) takes 2.0.0, passes its trial boot, then
 * crashes within its bake and falls back to 1.0.0. Spread by number rather than by a seeded
 * shuffle, so that every fleet size puts more than 10 % of them into the canary (austin-1 always
 * leads it): the gate trips for sure. A bake fault rather than a failed trial health check: with
 * min_sample 5, five immediate failures would trip the gate before any device had baked, and
 * the bake is part of what the demo shows.
 */
function faultOf(site: string, number: number): DeviceSpec['fault'] {
  return site === FAILING_SITE && number % 5 === 1 ? 'bakeRevert' : null;
}

/** The canary's fault strikes this far into the bake: late enough to watch the canary bake first. */
const CRASH_AT_BAKE_FRACTION = 0.75;

interface DemoOptions {
  /** Undefined: 8080 when free, else one the system picks. */
  port: number | undefined;
  devices: number;
  bake: string;
  bakeMinutes: number;
  keepData: boolean;
}

const HELP = `
What it does: starts the server (embedded database and firmware store, in a fresh temporary
directory; the server's environment variables are not read), creates an organization with an
admin and a viewer key, runs the simulated devices at three sites (tags site:austin,
site:berlin, site:lyon) on 1.0.0, uploads firmware 1.0.0 and 2.0.0, and starts a canary of
2.0.0 to the whole fleet (10 %, bake, threshold 10 %, min sample 5, on failure rollback).
One Austin gateway in five crashes on 2.0.0 during its bake: watch the canary stop itself and
roll back in the dashboard at the printed URL. Ctrl-C stops everything and removes the
directory (unless --keep-data).
`;

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('a server, a simulated fleet and a canary that rolls itself back: the product in one command')
    .option('--port <port>', `listen port (default ${DEFAULT_PORT}, or a free one when it is taken)`)
    .option('--devices <n>', 'simulated devices, spread over three sites', '500')
    .option('--bake <duration>', 'how long a canary device must stay healthy: 30s, 1m, 2m30s', '1m')
    .option('--keep-data', 'keep the temporary directory on exit (serve it again with `serve --data-dir`)')
    .showHelpAfterError(false)
    .addHelpText('after', HELP)
    .action((flags: { port?: string; devices: string; bake: string; keepData?: boolean }) =>
      runDemo(demoOptionsOf(flags)),
    );
}

function demoOptionsOf(flags: { port?: string; devices: string; bake: string; keepData?: boolean }): DemoOptions {
  const whole = (flag: string, text: string, min: number, max: number) => {
    const value = Number(text);
    if (!/^\d+$/.test(text.trim()) || value < min || value > max) {
      throw new CliError(`${flag} must be a whole number from ${min} to ${max} (got ${JSON.stringify(text)})`, 2);
    }
    return value;
  };
  const bakeMinutes = parseDuration('--bake', flags.bake);
  if (bakeMinutes * 60 < 5) throw new CliError(`--bake must be at least 5s (got ${JSON.stringify(flags.bake)})`, 2);
  return {
    port: flags.port === undefined ? undefined : whole('--port', flags.port, 0, 65535),
    devices: whole('--devices', flags.devices, SITES.length, MAX_DEVICES),
    bake: flags.bake,
    bakeMinutes,
    keepData: flags.keepData ?? false,
  };
}

/** What runs, for the cleanup: whatever was started by the time Ctrl-C came. */
interface Running {
  server?: RunningServer;
  simulation?: Simulation;
  stopped: AbortController;
}

async function runDemo(options: DemoOptions): Promise<void> {
  const running: Running = { stopped: new AbortController() };
  // Ctrl-C, a kill, or the terminal closing (SIGHUP) all end the demo the same way, cleaning up.
  // The handlers stay for the whole run: a second signal during the cleanup (the terminal's
  // SIGHUP after a SIGINT, a second Ctrl-C) must not kill it halfway and leave the directory.
  const interrupted = new Promise<void>((resolve) => {
    for (const signal of ENDING_SIGNALS) process.on(signal, () => resolve());
    process.once('SIGHUP', () => {
      terminalGone = true;
    });
    for (const stream of [process.stdout, process.stderr]) {
      stream.on('error', () => {
        terminalGone = true;
      });
    }
  }).then(() => say('\nStopping the devices and the server…'));
  if (options.port && !(await portIsFree(options.port))) {
    throw new CliError(
      `port ${options.port} is in use: choose another with --port, or leave --port out for a free one`,
    );
  }
  const port = options.port ?? ((await portIsFree(DEFAULT_PORT)) ? DEFAULT_PORT : 0);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'edgeflow-demo-'));
  // The last resort, should the process end any other way than through the cleanup below (an
  // error thrown while the terminal is gone): the directory still goes.
  const removeOnExit = () => {
    if (!options.keepData) rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', removeOnExit);
  try {
    running.server = await startDemoServer(path.join(dir, 'data'), port);
    const showing = showcase(running.server, dir, options, running);
    // After a Ctrl-C in the middle of the setup, its calls fail against the stopped server: expected.
    showing.catch(() => {});
    await Promise.race([showing.then(() => interrupted), interrupted]);
  } finally {
    running.stopped.abort();
    // Each step whatever the one before did (the terminal's SIGHUP may have killed the device
    // processes already): the directory is removed in the end.
    await running.simulation?.stop().catch(() => {});
    await running.server?.close().catch(() => {});
    process.removeListener('exit', removeOnExit);
    if (options.keepData) say(`Kept ${dir}; serve it again: ${CLI} serve --data-dir ${path.join(dir, 'data')}`);
    else await rm(dir, { recursive: true, force: true });
  }
}

/** Whether a server could listen on `port` now (where the demo's server listens: every address). */
async function portIsFree(port: number): Promise<boolean> {
  const probe = net.createServer();
  probe.listen(port, '0.0.0.0');
  try {
    await once(probe, 'listening');
  } catch (error) {
    // Any other refusal (a port below 1024 without privileges) is told as what it is.
    if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') return false;
    throw error;
  }
  probe.close();
  await once(probe, 'close');
  return true;
}

/**
 * The server `serve` starts, on the embedded defaults in `dataDir`, with the engine's timers
 * short so that the demo moves briskly. Not configured from the environment: a DATABASE_URL or
 * S3_BUCKET exported in this shell must not receive the demo's data.
 */
async function startDemoServer(dataDir: string, port: number): Promise<RunningServer> {
  const config = loadConfig({
    PORT: String(port),
    EDGEFLOW_DATA_DIR: dataDir,
    LOG_LEVEL: 'error',
    EDGEFLOW_DISPATCH_INTERVAL_MS: '250',
    EDGEFLOW_HEARTBEAT_MS: '10000',
    EDGEFLOW_UPDATE_TIMEOUT_SECONDS: '120',
  });
  // Loaded here, not at the top: a device runs `agent` without the server's dependencies.
  const { startServer } = await import('../server/server.ts');
  try {
    return await startServer(config);
  } catch (error) {
    throw new CliError(`the demo server did not start: ${describeCliError(error)}`);
  }
}

async function showcase(server: RunningServer, dir: string, options: DemoOptions, running: Running): Promise<void> {
  // A fresh data directory: the server generated the system administrator key, and hands it over once.
  if (!server.generatedAdminKey) throw new CliError('the demo server did not generate an administrator key');
  const system = new ApiClient({ server: server.url, key: server.generatedAdminKey });
  const org = await system.call<{ id: string; admin_key: string }>('POST', '/api/v1/orgs', { name: 'demo' });
  const api = new ApiClient({ server: server.url, key: org.admin_key });
  const viewer = await api.call<{ key: string }>('POST', '/api/v1/api-keys', { role: 'viewer', name: 'demo viewer' });
  say(
    'EdgeFlow OTA demo',
    `  dashboard      ${server.url}/`,
    `  admin key      ${org.admin_key}`,
    `  viewer key     ${viewer.key}   (read only: the dashboard without its buttons)`,
    `  data           ${dir} (${options.keepData ? 'kept' : 'removed'} on exit)`,
    '',
  );

  const fleet = await registerFleet(server.url, org.admin_key, options.devices);
  const publicKeyPem = await fetchSigningKey(server.url, org.admin_key);
  // Checked right before the processes start: a Ctrl-C during the setup must not leave them running.
  if (running.stopped.signal.aborted) return;
  running.simulation = runSimulation({
    server: server.url,
    devices: fleet,
    allowInsecure: true,
    publicKeyPem,
    faultVersion: NEW_VERSION,
    faultTuning: { bakeCrashAfterMs: options.bakeMinutes * 60_000 * CRASH_AT_BAKE_FRACTION },
    // Two child processes: the server keeps this one (and a core) to itself.
    perProcess: Math.ceil(fleet.length / 2),
  });
  await untilOnline(running.simulation, fleet.length, running.stopped.signal);

  for (const [version, notes] of [
    ['1.0.0', 'the factory image, kept for rollback'],
    [NEW_VERSION, 'the new release'],
  ] as const) {
    const file = path.join(dir, `firmware-${version}.bin`);
    await writeFile(file, randomBytes(FIRMWARE_BYTES));
    await api.uploadFirmware(file, { version, release_notes: notes }, () => {});
  }
  say(`Firmware 1.0.0 and ${NEW_VERSION} uploaded (${FIRMWARE_BYTES / 1024} KiB each).`);

  const deployment = await api.call<DeploymentView>(
    'POST',
    '/api/v1/deployments',
    deploymentRequestOf(NEW_VERSION, { ...CANARY, bake: options.bake }),
  );
  const canary = deployment.batches[0]!.size;
  say(
    `Deployment ${deployment.id}: ${NEW_VERSION} to all ${deployment.total} devices, ${describeStrategy(deployment)}`,
    `  ${describeSettings(deployment)}`,
    '',
    'What to watch in the dashboard (Deployments, then the deployment):',
    `  - the canary, the first ${canary} devices by id (Austin gateways), updates within seconds,`,
    `    then bakes ${formatMinutes(options.bakeMinutes)};`,
    `  - about ${formatMinutes(options.bakeMinutes * CRASH_AT_BAKE_FRACTION)} into the bake, one Austin gateway in five crashes and falls back to 1.0.0;`,
    `  - the failures cross the ${deployment.failure_threshold_percent} % threshold: the deployment stops itself (rolled_back) and rolls`,
    `    the canary back to 1.0.0; the other ${deployment.total - canary} devices are never touched.`,
    `Or in a terminal: ${CLI} watch ${deployment.id} --server ${server.url} --key ${viewer.key}`,
    'Ctrl-C stops the devices and the server, and removes the data.',
    '',
  );
  await reportProgress(api, deployment.id, running.stopped.signal);
}

/** Registers the fleet through the API, site by site, each device with its fault. */
async function registerFleet(server: string, key: string, count: number): Promise<DeviceSpec[]> {
  const fleet: DeviceSpec[] = [];
  const sizes: string[] = [];
  for (const [index, site] of SITES.entries()) {
    // The first sites take the remainder: Austin is never the smaller one.
    const size = Math.floor(count / SITES.length) + (index < count % SITES.length ? 1 : 0);
    const devices = await registerDevices({
      server,
      key,
      count: size,
      prefix: `${site.name}-`,
      model: site.model,
      tags: [`site:${site.name}`],
    });
    fleet.push(...devices.map((device, i) => ({ ...device, fault: faultOf(site.name, i + 1) })));
    sizes.push(`${site.name} ${size} (${site.model})`);
  }
  say(`Registered ${count} devices on 1.0.0: ${sizes.join(', ')}.`);
  return fleet;
}

/**
 * Waits for the fleet to connect, a minute at most: a device still offline then stays in the
 * deployment, which updates it when it comes online.
 */
async function untilOnline(simulation: Simulation, count: number, signal: AbortSignal): Promise<void> {
  const deadline = Date.now() + ONLINE_WAIT_MS;
  while (!signal.aborted && simulation.counters().connected < count && Date.now() < deadline) {
    await sleep(250, undefined, { signal }).catch(() => {});
  }
  say(`${simulation.counters().connected}/${count} devices online.`);
}

/**
 * One line each time the deployment's status, a batch's state or its rollback's progress changes,
 * until it ended and its rollback (if any) is done.
 */
async function reportProgress(api: ApiClient, id: string, signal: AbortSignal): Promise<void> {
  let previous = '';
  while (!signal.aborted) {
    const deployment = await api.call<DeploymentView>('GET', `/api/v1/deployments/${encodeURIComponent(id)}`);
    const batches = deployment.batches.map((batch) => `${batch.kind === 'canary' ? 'canary' : 'rest'} ${batch.state}`);
    const rollback = deployment.rollback ? `; rollback: ${describeRollback(deployment.rollback)}` : '';
    const line = `${deployment.status}: ${batches.join(', ')}${rollback}`;
    if (line !== previous) {
      const why = deployment.stop_reason ? ` — stopped: ${deployment.stop_reason}` : '';
      const counts = summarizeCounts(deployment.counts, deployment.bake_failed);
      say(`${new Date().toISOString().slice(11, 19)}  ${line} (${counts})${why}`);
    }
    previous = line;
    if (isEnded(deployment.status) && !rollbackUnderWay(deployment.rollback)) return;
    await sleep(1000, undefined, { signal }).catch(() => {});
  }
}

/** The terminal closed (SIGHUP, or writing to it failed): nothing more is printed. */
let terminalGone = false;

function say(...lines: string[]): void {
  if (!terminalGone) process.stdout.write(`${lines.join('\n')}\n`);
}
