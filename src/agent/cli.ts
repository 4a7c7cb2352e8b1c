import { readFile } from 'node:fs/promises';
import { type Command, Option } from 'commander';
import { Agent, type AgentOptions } from './agent.ts';
import { createJsonLogger } from './logger.ts';
import { InsecureServerUrlError } from './tunnel-client.ts';

interface AgentCommandFlags {
  server: string;
  deviceId: string;
  key: string;
  dataDir: string;
  allowInsecure?: boolean;
  publicKey?: string;
  organizationId?: string;
  allowUnsigned?: boolean;
  installer: 'ab' | 'script';
  installScript?: string;
  rebootCommand?: string;
  healthCommand?: string;
  initialVersion?: string;
  heartbeatSeconds?: number;
  ca?: string;
}

function positiveNumber(value: string): number {
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed <= 0) throw new Error(`expected a positive number, got ${value}`);
  return parsed;
}

/** `edgeflow-ota agent …`: runs the device agent until SIGINT/SIGTERM. */
export function registerAgentCommand(program: Command): Command {
  return program
    .command('agent')
    .description('run the device agent: tunnel to the server, receive and apply OTA updates')
    .addOption(
      new Option('--server <url>', '(required) server base URL, wss:// or https://')
        .env('EDGEFLOW_URL')
        .makeOptionMandatory(),
    )
    .addOption(
      new Option('--device-id <id>', '(required) this device id').env('EDGEFLOW_DEVICE_ID').makeOptionMandatory(),
    )
    .addOption(
      new Option('--key <key>', '(required) this device API key (the environment keeps it out of `ps`)')
        .env('EDGEFLOW_DEVICE_KEY')
        .makeOptionMandatory(),
    )
    .addOption(
      new Option('--data-dir <dir>', '(required) where the agent keeps its state, downloads and slots')
        .env('EDGEFLOW_AGENT_DATA_DIR')
        .makeOptionMandatory(),
    )
    .option('--allow-insecure', 'allow ws:// and http:// (development only)')
    .option('--public-key <pem-file>', 'pinned Ed25519 public key (PEM) that firmware manifests must be signed with')
    .option('--organization-id <id>', 'refuse manifests of any other organization')
    .option('--allow-unsigned', 'install unsigned firmware when no key is pinned (development only)')
    .option('--installer <kind>', 'ab (A/B slots) or script (your own updater)', 'ab')
    .option('--install-script <path>', 'for --installer script: called with install|commit|revert|current-version')
    .option('--reboot-command <cmd>', 'how to reboot into the new image, e.g. "systemctl reboot"')
    .option('--health-command <cmd>', 'must exit 0 on a trial boot of a new version (EDGEFLOW_VERSION is set)')
    .option('--initial-version <semver>', 'the factory image version, before any update', '0.0.0')
    .option('--heartbeat-seconds <n>', 'tunnel heartbeat interval', positiveNumber)
    .option('--ca <pem-file>', 'extra CA certificate to trust (self-signed server)')
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
      if (flags.installer !== 'ab' && flags.installer !== 'script') {
        fail(`--installer must be ab or script, not ${flags.installer}`);
      }
      const logger = createJsonLogger({ device_id: flags.deviceId });
      if (!flags.publicKey) {
        logger.warn(
          flags.allowUnsigned
            ? 'no public key pinned (--public-key): unsigned firmware will be installed (development only)'
            : 'no public key pinned (--public-key): every update will be refused; pin the organization signing key',
        );
      }
      const options: AgentOptions = {
        server: flags.server,
        deviceId: flags.deviceId,
        apiKey: flags.key,
        dataDir: flags.dataDir,
        allowInsecure: flags.allowInsecure ?? false,
        publicKeyPem: flags.publicKey ? await readFile(flags.publicKey, 'utf8') : undefined,
        organizationId: flags.organizationId,
        allowUnsigned: flags.allowUnsigned ?? false,
        installer: flags.installer,
        installScript: flags.installScript,
        rebootCommand: flags.rebootCommand,
        healthCommand: flags.healthCommand,
        initialVersion: flags.initialVersion,
        heartbeatIntervalMs: flags.heartbeatSeconds === undefined ? undefined : flags.heartbeatSeconds * 1000,
        ca: flags.ca ? await readFile(flags.ca) : undefined,
        logger,
      };
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
