/** `edgeflow-ota simulate`: registers (or reuses) virtual devices, brings them online, shows how they fare. */
import { createHash } from 'node:crypto';
import path from 'node:path';
import type { Command } from 'commander';
import { tunnelUrl } from '../agent/index.ts';
import { CliError, describeCliError } from '../cli/errors.ts';
import { isStrictSemver } from '../protocol/version.ts';
import { defaultFaultTuning, FAULTS, type Fault, type FaultPercentages, validateFaultPercentages } from './faults.ts';
import { DEFAULT_DEVICES_PER_PROCESS, runSimulation } from './processes.ts';
import { fetchSigningKey, RegistrationInterrupted, registerDevices } from './register.ts';
import type { DeviceCredentials, FleetCounters } from './simulator.ts';

interface SimulateFlags {
  server: string;
  key: string;
  devices: number;
  prefix: string;
  model?: string;
  tags?: string[];
  initialVersion: string;
  credentials?: string;
  allowInsecure?: boolean;
  allowUnsigned?: boolean;
  seed: number;
  perProcess: number;
  duration?: number;
  downloadDrop?: number;
  corrupt?: number;
  installFailure?: number;
  bootFailure?: number;
  offline?: number;
  slowLink?: number;
  downloadError?: number;
  healthCheckFailure?: number;
  bakeOffline?: number;
  bakeRevert?: number;
  faultVersion?: string;
  bakeCrashAfter?: number;
}

function wholeNumber(min: number) {
  return (value: string): number => {
    const parsed = Number(value);
    if (!Number.isSafeInteger(parsed) || parsed < min)
      throw new Error(`expected a whole number ≥ ${min}, got ${value}`);
    return parsed;
  };
}

function seconds(value: string): number {
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed < 0) throw new Error(`expected seconds ≥ 0, got ${value}`);
  return parsed;
}

function semver(value: string): string {
  if (!isStrictSemver(value)) throw new Error(`expected a version like 2.0.0, got ${value}`);
  return value;
}

function percentage(value: string): number {
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed < 0 || parsed > 100) throw new Error(`expected 0–100, got ${value}`);
  return parsed;
}

const faultFlags: Record<Fault, string> = {
  downloadDrop: 'download-drop',
  corrupt: 'corrupt',
  installFailure: 'install-failure',
  bootFailure: 'boot-failure',
  offline: 'offline',
  slowLink: 'slow-link',
  downloadError: 'download-error',
  healthCheckFailure: 'health-check-failure',
  bakeOffline: 'bake-offline',
  bakeRevert: 'bake-revert',
};

const faultHelp: Record<Fault, string> = {
  downloadDrop: 'the download connection drops once mid-way (resumes with Range)',
  corrupt: 'downloaded bytes arrive corrupted (checksum_mismatch)',
  installFailure: 'the installer fails (install_failed)',
  bootFailure: 'the new version fails to boot and is reverted (boot_failed)',
  offline: 'never connects',
  slowLink: 'throttled downloads',
  downloadError: 'every download attempt fails; the agent gives up (download_failed)',
  healthCheckFailure: 'the new version fails its trial health check and is reverted (health_check_failed)',
  bakeOffline: 'completes the update, then dies within the bake and stays offline',
  bakeRevert: 'completes the update, then crashes within the bake and falls back to the old version (unhealthy)',
};

export function registerSimulateCommand(program: Command): Command {
  const command: Command = program
    .command('simulate')
    .description('run thousands of virtual devices (the real agent, in memory) against a server, with fault injection')
    .requiredOption('--server <url>', 'server base URL (https://…, or http://… with --allow-insecure)')
    .requiredOption('--key <api key>', 'an operator or admin API key of the organization')
    .requiredOption('--devices <n>', 'how many devices', wholeNumber(1))
    .option('--prefix <prefix>', 'device ids are <prefix>1 … <prefix>N', 'sim-')
    .option('--model <model>', 'device model of registered devices')
    .option('--tags <a,b>', 'tags of registered devices', (value: string) =>
      value
        .split(',')
        .map((tag) => tag.trim())
        .filter(Boolean),
    )
    .option('--initial-version <semver>', 'the version every device runs at start', '1.0.0')
    .option(
      '--credentials <file>',
      'device keys: read when present (reuse), written after registration ' +
        '(default: .edgeflow-simulate/<server>-<prefix>-<key id>.json, so a second run reuses the fleet)',
    )
    .option('--allow-insecure', 'allow http:// and ws:// (development only)')
    .option('--allow-unsigned', 'pin no signing key and install unsigned firmware (development only)')
    .option('--seed <n>', 'which devices get which fault', wholeNumber(0), 1)
    .option('--per-process <n>', 'devices per process; more are spread over child processes', wholeNumber(1))
    .option('--duration <seconds>', 'stop after this long (default: until Ctrl-C)', wholeNumber(1));
  for (const fault of FAULTS) {
    command.option(`--${faultFlags[fault]} <pct>`, `% of devices: ${faultHelp[fault]}`, percentage);
  }
  command
    .option(
      '--fault-version <semver>',
      'faults strike only updates to this version, so a rollback (or a fixed version) succeeds (default: every update)',
      semver,
    )
    .option(
      '--bake-crash-after <seconds>',
      `how long after a completed update the bake faults strike (default ${defaultFaultTuning.bakeCrashAfterMs / 1000})`,
      seconds,
    );
  return command.action(async (flags: SimulateFlags) => {
    const faults: FaultPercentages = {};
    for (const fault of FAULTS) if (flags[fault] !== undefined) faults[fault] = flags[fault];
    try {
      validateFaultPercentages(faults);
      tunnelUrl(flags.server, flags.allowInsecure);
    } catch (error) {
      const hint = /unencrypted/.test((error as Error).message) ? ' (or pass --allow-insecure)' : '';
      throw new CliError(`${(error as Error).message}${hint}`, 2);
    }
    const credentials = flags.credentials ?? defaultCredentialsFile(flags.server, flags.prefix, flags.key);

    let devices: DeviceCredentials[];
    let publicKeyPem: string | undefined;
    // Ctrl-C while registering: the devices created so far keep their keys (they exist nowhere
    // else), so the same command run again goes on with them instead of refusing them.
    const interrupt = new AbortController();
    const stop = () => interrupt.abort();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    try {
      devices = await registerDevices({
        server: flags.server,
        key: flags.key,
        count: flags.devices,
        prefix: flags.prefix,
        model: flags.model,
        tags: flags.tags,
        initialVersion: flags.initialVersion,
        credentialsFile: credentials,
        onProgress: throttled((done, total) => status(`registering devices ${done}/${total}`)),
        signal: interrupt.signal,
      });
      status(`${devices.length} devices ready`, true);
      publicKeyPem = flags.allowUnsigned ? undefined : await fetchSigningKey(flags.server, flags.key);
    } catch (error) {
      if (error instanceof RegistrationInterrupted) throw new CliError(error.message, 130);
      throw new CliError(describeCliError(error, { server: flags.server }));
    } finally {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
    }
    if (interrupt.signal.aborted) throw new CliError('interrupted before the devices started', 130);
    process.stdout.write(nextSteps(flags, credentials));

    const startedAt = Date.now();
    const simulation = runSimulation({
      server: flags.server,
      devices,
      allowInsecure: flags.allowInsecure,
      allowUnsigned: flags.allowUnsigned,
      publicKeyPem,
      initialVersion: flags.initialVersion,
      faults,
      seed: flags.seed,
      faultVersion: flags.faultVersion,
      ...(flags.bakeCrashAfter === undefined ? {} : { faultTuning: { bakeCrashAfterMs: flags.bakeCrashAfter * 1000 } }),
      perProcess: flags.perProcess ?? DEFAULT_DEVICES_PER_PROCESS,
    });
    const seconds = () => Math.round((Date.now() - startedAt) / 1000);
    const ticker = setInterval(() => status(`[${seconds()}s] ${describe(simulation.counters())}`), 1000);

    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
      if (flags.duration) setTimeout(resolve, flags.duration * 1000).unref();
    });
    clearInterval(ticker);
    status(`[${seconds()}s] stopping: ${describe(simulation.counters())}`, true);
    await simulation.stop();
  });
}

/**
 * Where a run keeps its device keys unless told: per server, prefix and calling key, so running
 * the same command again reuses the same devices instead of failing on them.
 */
function defaultCredentialsFile(server: string, prefix: string, key: string): string {
  const host = new URL(server).host.replace(/[^\w.-]+/g, '_');
  const keyId = createHash('sha256').update(key).digest('hex').slice(0, 8);
  return path.join('.edgeflow-simulate', `${host}-${prefix.replace(/[^\w.-]+/g, '_')}-${keyId}.json`);
}

/** What to do with the fleet now that it runs. */
function nextSteps(flags: SimulateFlags, credentials: string): string {
  const connection = `--server ${flags.server} --key <key>`;
  return (
    `\nDevice keys are kept in ${credentials}; run the same command again to reuse these devices.\n` +
    'While they run, in another terminal:\n' +
    `  edgeflow-ota firmware upload fw.bin --version 1.1.0 ${connection}\n` +
    `  edgeflow-ota update ${flags.prefix}1 1.1.0 --wait ${connection}\n` +
    `  edgeflow-ota watch ${connection}\n` +
    `  edgeflow-ota devices list ${connection}\n` +
    (flags.allowUnsigned
      ? ''
      : 'Devices pin the organization signing key: updates must be signed by the server (they are).\n') +
    'Ctrl-C stops the devices (they go offline); --duration <s> stops after a while.\n\n'
  );
}

function describe(counters: FleetCounters): string {
  const online = counters.devices - counters.heldOffline;
  const held = counters.heldOffline ? ` (${counters.heldOffline} held offline)` : '';
  const crashed = counters.crashed ? `, crashed in bake ${counters.crashed}` : '';
  const { idle, updating, completed, failed } = counters.ota;
  const codes = Object.entries(counters.failures)
    .sort(([, a], [, b]) => b - a)
    .map(([code, count]) => `${code} ${count}`)
    .join(', ');
  return (
    `online ${counters.connected}/${online}${held}  ` +
    `ota: idle ${idle}, updating ${updating}, completed ${completed}, failed ${failed}${crashed}` +
    (codes ? ` (${codes})` : '')
  );
}

/** On a terminal the status line is rewritten in place; in a log, one line each time. */
function status(line: string, final = false): void {
  if (process.stdout.isTTY) process.stdout.write(`\r\x1b[K${line}${final ? '\n' : ''}`);
  else process.stdout.write(`${line}\n`);
}

function throttled(report: (done: number, total: number) => void): (done: number, total: number) => void {
  let lastAt = 0;
  return (done, total) => {
    const now = Date.now();
    if (done < total && now - lastAt < 1000) return;
    lastAt = now;
    report(done, total);
  };
}
