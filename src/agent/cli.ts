import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { access, chown, mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Command, Option } from 'commander';
import {
  AGENT_VERSION,
  Agent,
  type AgentOptions,
  ANSWER_SUFFIX,
  type BootloaderKind,
  bootloaderKinds,
  CONTROL_DIR,
  type InstallerKind,
  installerKinds,
  PID_FILE,
  REQUEST_SUFFIX,
} from './agent.ts';
import { writeJsonAtomic } from './atomic-file.ts';
import { type AgentConfigFile, loadAgentConfigFile } from './config-file.ts';
import {
  DEFAULT_HOLDER,
  defaultLockDir,
  holderProblem,
  parseUntil,
  readLockState,
  releaseLock,
  takeLock,
} from './device-lock.ts';
import { createJsonLogger } from './logger.ts';
import { InsecureServerUrlError } from './tunnel-client.ts';

interface AgentCommandFlags {
  config?: string;
  server?: string;
  deviceId?: string;
  key?: string;
  keyFile?: string;
  dataDir?: string;
  allowInsecure?: boolean;
  publicKey?: string;
  organizationId?: string;
  allowUnsigned?: boolean;
  installer?: string;
  installScript?: string;
  slotA?: string;
  slotB?: string;
  fwEnvConfig?: string;
  grubEnvFile?: string;
  swupdateArgs?: string;
  bootloader?: string;
  bootIdFile?: string;
  cmdlineFile?: string;
  user?: string;
  bootLimit?: number;
  rebootCommand?: string;
  healthCommand?: string;
  healthTimeoutSeconds?: number;
  initialVersion?: string;
  heartbeatSeconds?: number;
  ca?: string;
  model?: string;
  lockDir?: string;
}

function positiveNumber(value: string): number {
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed <= 0) throw new Error(`expected a positive number, got ${value}`);
  return parsed;
}

/** `edgeflow-ota agent …`: runs the device agent until SIGINT/SIGTERM; `agent lock|unlock` hold off updates. */
export function registerAgentCommand(program: Command): Command {
  const agent = registerAgentRun(program);
  registerLockCommands(agent);
  registerInstallCommand(agent);
  return agent;
}

function registerAgentRun(program: Command): Command {
  return program
    .command('agent')
    .description('run the device agent: tunnel to the server, receive and apply OTA updates')
    .version(AGENT_VERSION, '-V, --version', 'print the agent version')
    .option('--config <file>', 'JSON config, e.g. /etc/edgeflow/agent.json; flags override it (docs/devices.md)')
    .addOption(
      new Option('--server <url>', '(required) server base URL, wss:// or https:// (or "server" in --config)').env(
        'EDGEFLOW_URL',
      ),
    )
    .addOption(new Option('--device-id <id>', '(required) this device id').env('EDGEFLOW_DEVICE_ID'))
    .addOption(
      new Option(
        '--key <key>',
        '(required) this device API key, or --key-file (the environment keeps it out of `ps`)',
      ).env('EDGEFLOW_DEVICE_KEY'),
    )
    .option('--key-file <file>', 'a file holding this device API key')
    .addOption(
      new Option('--data-dir <dir>', '(required) where the agent keeps its state, downloads and slots').env(
        'EDGEFLOW_AGENT_DATA_DIR',
      ),
    )
    .option('--allow-insecure', 'allow ws:// and http:// (development only)')
    .option('--public-key <pem-file>', 'pinned Ed25519 public key (PEM) that firmware manifests must be signed with')
    .option('--organization-id <id>', 'refuse manifests of any other organization')
    .option('--allow-unsigned', 'install unsigned firmware when no key is pinned (development only)')
    .option(
      '--installer <kind>',
      'ab (slot directories), uboot, grub (partitions + boot loader), rauc, swupdate or script (default ab)',
    )
    .option('--install-script <path>', 'for --installer script: called with install|commit|revert|current-version')
    .option('--slot-a <device>', 'for uboot/grub: partition of slot A, e.g. /dev/mmcblk0p2')
    .option('--slot-b <device>', 'for uboot/grub: partition of slot B, e.g. /dev/mmcblk0p3')
    .option('--fw-env-config <file>', 'for uboot: libubootenv config (default /etc/fw_env.config)')
    .option('--grub-env-file <file>', 'for grub: environment block (default /boot/grub/grubenv)')
    .option(
      '--swupdate-args <args>',
      'for swupdate: arguments before -i, space-separated, e.g. "-k /etc/swupdate/public.pem"',
    )
    .option('--bootloader <kind>', 'for swupdate: uboot or grub, the boot loader that tries the new slot')
    .option('--user <name>', 'started as root: drop to this user once the key is read (installers needing no root)')
    .option('--boot-id-file <file>', 'the kernel boot id (default /proc/sys/kernel/random/boot_id)')
    .option('--cmdline-file <file>', 'the kernel command line (default /proc/cmdline)')
    .option('--boot-limit <n>', 'boots of a new image before the boot loader falls back (default 3)', positiveNumber)
    .option(
      '--reboot-command <cmd>',
      'how to reboot into the new image (default for uboot/grub/rauc/swupdate: "systemctl reboot")',
    )
    .option('--health-command <cmd>', 'must exit 0 on a trial boot of a new version (EDGEFLOW_VERSION is set)')
    .option(
      '--health-timeout-seconds <n>',
      'the health command is killed and failed after this (default 60)',
      positiveNumber,
    )
    .option('--initial-version <semver>', 'the factory image version, before any update (default 0.0.0)')
    .option('--heartbeat-seconds <n>', 'tunnel heartbeat interval', positiveNumber)
    .option('--model <model>', "this device's model: offline bundles for other models are refused")
    .option('--ca <pem-file>', 'extra CA certificate to trust (self-signed server)')
    .option('--lock-dir <dir>', 'update-lock directory, one file per holder (default <data-dir>/locks)')
    .addHelpText(
      'after',
      '\nEnvironment: EDGEFLOW_URL, EDGEFLOW_DEVICE_ID, EDGEFLOW_DEVICE_KEY, EDGEFLOW_AGENT_DATA_DIR stand in for\n' +
        'the required options above. Logs are JSON lines on stderr.',
    )
    .action(async (flags: AgentCommandFlags) => {
      // One line, no usage dump: the flags were understood, their values are wrong.
      const fail = (message: string): never => {
        process.stderr.write(`error: ${message}\n`);
        process.exit(2);
      };
      let options: AgentOptions;
      try {
        const resolved = await resolveAgentOptions(flags);
        options = resolved.options;
        if (resolved.user) await dropPrivileges(resolved.user, options.dataDir!);
      } catch (error) {
        return fail((error as Error).message);
      }
      if (!options.publicKeyPem) {
        options.logger?.warn(
          options.allowUnsigned
            ? 'no public key pinned (--public-key): unsigned firmware will be installed (development only)'
            : 'no public key pinned (--public-key): every update will be refused; pin the organization signing key',
        );
      }
      let agent: Agent;
      try {
        agent = new Agent(options);
      } catch (error) {
        if (error instanceof InsecureServerUrlError) {
          const hint = /unencrypted/.test(error.message) ? ' (or pass --allow-insecure, development only)' : '';
          return fail(`${error.message}${hint}`);
        }
        throw error;
      }
      let stopping = false;
      const shutdown = (signal: string) => {
        if (stopping) return;
        stopping = true;
        process.stderr.write(`${JSON.stringify({ level: 'info', msg: 'stopping agent', signal })}\n`);
        agent.stop().then(
          () => process.exit(0),
          () => process.exit(1),
        );
      };
      process.once('SIGINT', () => shutdown('SIGINT'));
      process.once('SIGTERM', () => shutdown('SIGTERM'));
      await agent.start();
    });
}

/**
 * `edgeflow-agent install <bundle>` (`edgeflow-ota agent install`): hands an offline bundle to
 * the agent running with this data directory, through its control directory, and prints its
 * answer in one line. The agent checks and installs it (ota-handler.ts installOffline); the
 * command never touches the slots or the agent's state itself, so the two never race.
 */
function registerInstallCommand(agent: Command): void {
  agent
    .command('install <bundle>')
    .description(
      'install an offline bundle (edgeflow-ota firmware export) through the agent running with --data-dir ' +
        '(or --config): it reboots into the image and commits it after its health check',
    )
    .option('--config <file>', 'the agent\'s JSON config: its "data_dir" names the running agent\'s')
    .addOption(new Option('--data-dir <dir>', "the running agent's data directory").env('EDGEFLOW_AGENT_DATA_DIR'))
    .option(
      '--timeout-seconds <n>',
      'give up when the agent has not answered within this (default 300)',
      positiveNumber,
    )
    .action(async (bundle: string, flags: { config?: string; dataDir?: string; timeoutSeconds?: number }) => {
      const fail = (message: string, exitCode = 1): void => {
        process.stderr.write(`error: ${message}\n`);
        process.exitCode = exitCode;
      };
      let dataDir: string | undefined;
      try {
        dataDir = flags.dataDir ?? (flags.config ? (await loadAgentConfigFile(flags.config)).data_dir : undefined);
      } catch (error) {
        return fail((error as Error).message, 2);
      }
      if (!dataDir) return fail('--data-dir is required (or "data_dir" in --config)', 2);
      const bundlePath = resolve(bundle);
      if (
        !(await access(bundlePath).then(
          () => true,
          () => false,
        ))
      )
        return fail(`${bundlePath} does not exist`);
      if (!(await agentRunsIn(dataDir))) {
        return fail(`no agent is running with data dir ${dataDir}: start it first, the install goes through it`);
      }
      const id = randomUUID();
      const controlDir = join(dataDir, CONTROL_DIR);
      const answerFile = join(controlDir, `${id}${ANSWER_SUFFIX}`);
      await writeJsonAtomic(join(controlDir, `${id}${REQUEST_SUFFIX}`), { bundle: bundlePath });
      const deadline = Date.now() + (flags.timeoutSeconds ?? 300) * 1000;
      for (;;) {
        const text = await readFile(answerFile, 'utf8').catch(() => undefined);
        if (text !== undefined) {
          await rm(answerFile, { force: true });
          const answer = JSON.parse(text) as InstallAnswer;
          if (!answer.ok) return fail(`refused (${answer.code}): ${answer.message}`);
          process.stdout.write(
            answer.status === 'already_installed'
              ? `${answer.version} already runs on this device: nothing to do\n`
              : `installing ${answer.version} from bundle ${answer.bundle_id} (running ${answer.from_version}): ` +
                  'the agent reboots into it and commits it after its health check\n',
          );
          return;
        }
        if (Date.now() > deadline) {
          await rm(join(controlDir, `${id}${REQUEST_SUFFIX}`), { force: true });
          return fail(`the agent did not answer within ${flags.timeoutSeconds ?? 300} s`);
        }
        await sleep(100);
      }
    });
}

type InstallAnswer =
  | { ok: true; status: 'installing' | 'already_installed'; bundle_id: string; version: string; from_version: string }
  | { ok: false; code: string; message: string };

/** The agent writes its pid at start and removes it when it stops; a pid of a process gone is no agent. */
async function agentRunsIn(dataDir: string): Promise<boolean> {
  const pid = Number((await readFile(join(dataDir, PID_FILE), 'utf8').catch(() => '')).trim());
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it runs, as another user.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The command line over the config file; fails naming the first setting missing from both. */
async function resolveAgentOptions(flags: AgentCommandFlags): Promise<{ options: AgentOptions; user?: string }> {
  const file: AgentConfigFile = flags.config ? await loadAgentConfigFile(flags.config) : {};
  const required = (value: string | undefined, flag: string, field: string): string => {
    if (value === undefined) throw new Error(`${flag} is required (or "${field}" in --config)`);
    return value;
  };
  const installer = flags.installer ?? file.installer ?? 'ab';
  if (!(installerKinds as readonly string[]).includes(installer)) {
    throw new Error(`--installer must be one of ${installerKinds.join(', ')}, not ${installer}`);
  }
  const keyFile = flags.keyFile ?? file.key_file;
  const apiKey =
    flags.key ?? (keyFile ? (await readConfigured(keyFile, 'key_file', 'the device API key')).trim() : undefined);
  const deviceId = required(flags.deviceId ?? file.device_id, '--device-id', 'device_id');
  const publicKey = flags.publicKey ?? file.public_key_file;
  const bootloader = flags.bootloader ?? file.bootloader;
  if (bootloader !== undefined && !(bootloaderKinds as readonly string[]).includes(bootloader)) {
    throw new Error(`--bootloader must be one of ${bootloaderKinds.join(', ')}, not ${bootloader}`);
  }
  if (installer === 'swupdate' && bootloader === undefined) {
    throw new Error('--installer swupdate needs --bootloader uboot or grub (or "bootloader" in --config)');
  }
  const user = flags.user ?? file.user;
  const bootIdFile = flags.bootIdFile ?? file.boot_id_file;
  const cmdlineFile = flags.cmdlineFile ?? file.cmdline_file;
  const ca = flags.ca ?? file.ca_file;
  const slotA = flags.slotA ?? file.slot_a;
  const slotB = flags.slotB ?? file.slot_b;
  const onPartitions = installer === 'uboot' || installer === 'grub';
  if (onPartitions && (!slotA || !slotB)) throw new Error(`--installer ${installer} needs --slot-a and --slot-b`);
  const heartbeatSeconds = flags.heartbeatSeconds ?? file.heartbeat_seconds;
  const healthTimeoutSeconds = flags.healthTimeoutSeconds ?? file.health_timeout_seconds;
  const options: AgentOptions = {
    server: required(flags.server ?? file.server, '--server', 'server'),
    deviceId,
    apiKey: required(apiKey, '--key', 'key_file'),
    dataDir: required(flags.dataDir ?? file.data_dir, '--data-dir', 'data_dir'),
    allowInsecure: flags.allowInsecure ?? file.allow_insecure ?? false,
    publicKeyPem: publicKey ? await readConfigured(publicKey, 'public_key_file', 'the signing key') : undefined,
    organizationId: flags.organizationId ?? file.organization_id,
    allowUnsigned: flags.allowUnsigned ?? false,
    installer: installer as InstallerKind,
    installScript: flags.installScript ?? file.install_script,
    slotDevices: slotA && slotB ? { a: slotA, b: slotB } : undefined,
    fwEnvConfig: flags.fwEnvConfig ?? file.fw_env_config,
    grubEnvFile: flags.grubEnvFile ?? file.grub_env_file,
    swupdateArgs: flags.swupdateArgs?.split(' ').filter(Boolean) ?? file.swupdate_args,
    bootloader: bootloader as BootloaderKind | undefined,
    bootIdentity:
      bootIdFile || cmdlineFile
        ? { ...(bootIdFile ? { bootIdFile } : {}), ...(cmdlineFile ? { cmdlineFile } : {}) }
        : undefined,
    maxBootTries: flags.bootLimit ?? file.boot_limit,
    // A real boot loader only changes slots at a real reboot.
    rebootCommand:
      flags.rebootCommand ??
      file.reboot_command ??
      (onPartitions || installer === 'rauc' || installer === 'swupdate' ? 'systemctl reboot' : undefined),
    healthCommand: flags.healthCommand ?? file.health_command,
    healthTimeoutMs: healthTimeoutSeconds === undefined ? undefined : healthTimeoutSeconds * 1000,
    initialVersion: flags.initialVersion ?? file.initial_version,
    ...(file.timezone ? { timezone: file.timezone } : {}),
    heartbeatIntervalMs: heartbeatSeconds === undefined ? undefined : heartbeatSeconds * 1000,
    ca: ca ? await readConfigured(ca, 'ca_file', 'the CA certificate', null) : undefined,
    model: flags.model ?? file.model,
    lockDir: flags.lockDir ?? file.lock_dir,
    logger: createJsonLogger({ device_id: deviceId }),
  };
  return { options, ...(user ? { user } : {}) };
}

/**
 * Root reads the key files (they stay readable by root only) and hands `dataDir` to `user`; then
 * the process becomes that user, with its groups (e.g. `disk`, if the owner grants it), for good.
 */
async function dropPrivileges(user: string, dataDir: string): Promise<void> {
  const { setgid, setgroups, setuid } = process;
  if (!setgid || !setgroups || !setuid) throw new Error('"user" needs a system with user ids');
  const { username } = userInfo();
  if (username === user) return;
  if (process.getuid?.() !== 0) {
    throw new Error(`"user": "${user}" needs the agent started as root; it runs as ${username}`);
  }
  const id = (flag: string) => execFileSync('id', [flag, user], { encoding: 'utf8', stdio: 'pipe' }).trim();
  let ids: { uid: number; gid: number; groups: number[] };
  try {
    ids = { uid: Number(id('-u')), gid: Number(id('-g')), groups: id('-G').split(/\s+/).map(Number) };
  } catch {
    throw new Error(`"user": there is no user ${user} on this system`);
  }
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  await chownTree(dataDir, ids.uid, ids.gid);
  setgroups(ids.groups);
  setgid(ids.gid);
  setuid(ids.uid);
}

async function chownTree(path: string, uid: number, gid: number): Promise<void> {
  await chown(path, uid, gid);
  for (const entry of await readdir(path, { withFileTypes: true })) {
    const child = join(path, entry.name);
    if (entry.isDirectory()) await chownTree(child, uid, gid);
    else await chown(child, uid, gid);
  }
}

/** A file the configuration names, or one line saying which setting names what is missing. */
async function readConfigured(path: string, field: string, what: string): Promise<string>;
async function readConfigured(path: string, field: string, what: string, encoding: null): Promise<Buffer>;
async function readConfigured(
  path: string,
  field: string,
  what: string,
  encoding: 'utf8' | null = 'utf8',
): Promise<string | Buffer> {
  try {
    return encoding ? await readFile(path, encoding) : await readFile(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? 'does not exist'
        : code === 'EACCES'
          ? 'is not readable by this user'
          : (error as Error).message;
    throw new Error(`${what} file ${path} (${field}) ${why}`);
  }
}

interface LockFlags {
  reason?: string;
  until?: string;
  name?: string;
  status?: boolean;
}

/**
 * `agent lock --reason "…" [--until <ISO | 2h>] [--name <holder>]`, `agent lock --status`,
 * `agent unlock [--name <holder>]`: write or remove the holder's file in the lock directory
 * (device-lock.ts), which the running agent watches. They take --lock-dir, --data-dir or
 * --config from the agent command (also after the subcommand's name).
 */
function registerLockCommands(agent: Command): void {
  const usage = (message: string): never => {
    process.stderr.write(`error: ${message}\n`);
    process.exit(2);
  };
  const failed = (message: string): never => {
    process.stderr.write(`error: ${message}\n`);
    process.exit(1);
  };
  const lockDirOf = async (command: Command): Promise<string> => {
    // `edgeflow-agent lock --data-dir …` hands the flag to the agent command, `edgeflow-ota agent lock
    // --data-dir …` (positional options) to this one: whichever has it.
    const own = Object.fromEntries(Object.entries(command.opts()).filter(([, value]) => value !== undefined));
    const flags = { ...command.parent?.opts(), ...own } as AgentCommandFlags;
    let file: AgentConfigFile = {};
    try {
      file = flags.config ? await loadAgentConfigFile(flags.config) : {};
    } catch (error) {
      return usage((error as Error).message);
    }
    const explicit = flags.lockDir ?? file.lock_dir;
    if (explicit) return explicit;
    const dataDir = flags.dataDir ?? file.data_dir;
    if (!dataDir) return usage('--lock-dir or --data-dir is required (or "lock_dir"/"data_dir" in --config)');
    return defaultLockDir(dataDir);
  };
  const holderOf = (name: string | undefined): string => {
    const holder = name ?? DEFAULT_HOLDER;
    const problem = holderProblem(holder);
    return problem ? usage(problem) : holder;
  };
  agent
    .command('lock')
    .description('hold off updates on this device until unlocked (or --until passes); --status shows the lock')
    .option('--reason <text>', 'why updates must wait (shown to the operator)')
    .option('--until <time>', 'release by itself at this ISO time, or after a duration: 90s, 30m, 2h, 1d')
    .option('--name <holder>', `who holds it: one lock file per holder (default ${DEFAULT_HOLDER})`)
    .option('--status', 'print the lock in force (JSON) and exit')
    .option('--lock-dir <dir>', 'the lock directory (default <data-dir>/locks)')
    .option('--data-dir <dir>', "the agent's data directory")
    .option('--config <file>', "the agent's JSON config (its lock_dir or data_dir)")
    .action(async (flags: LockFlags, command: Command) => {
      const dir = await lockDirOf(command);
      if (flags.status) {
        const state = await readLockState(dir).catch((error: Error) => failed(error.message));
        process.stdout.write(`${JSON.stringify(state, null, 2)}\n`);
        return;
      }
      const holder = holderOf(flags.name);
      const reason = flags.reason?.trim();
      if (!reason) return usage('--reason is required (or --status)');
      let until: Date | undefined;
      if (flags.until !== undefined) {
        until = parseUntil(flags.until);
        if (!until) return usage(`--until must be an ISO date-time or a duration like 2h, not ${flags.until}`);
        if (until.getTime() <= Date.now()) return usage(`--until ${flags.until} has already passed`);
      }
      await takeLock(dir, holder, reason, until).catch((error: Error) => failed(error.message));
      process.stdout.write(`locked (${holder}): ${reason}${until ? ` until ${until.toISOString()}` : ''}\n`);
    });
  agent
    .command('unlock')
    .description('release the lock this holder took')
    .option('--name <holder>', `whose lock (default ${DEFAULT_HOLDER})`)
    .option('--lock-dir <dir>', 'the lock directory (default <data-dir>/locks)')
    .option('--data-dir <dir>', "the agent's data directory")
    .option('--config <file>', "the agent's JSON config (its lock_dir or data_dir)")
    .action(async (flags: { name?: string }, command: Command) => {
      const dir = await lockDirOf(command);
      const holder = holderOf(flags.name);
      const held = await releaseLock(dir, holder).catch((error: Error) => failed(error.message));
      process.stdout.write(held ? `unlocked (${holder})\n` : `${holder} held no lock\n`);
    });
}
