import { Command, CommanderError } from 'commander';
import { registerAgentCommand } from '../agent/cli.ts';
import { packageVersion } from '../installation.ts';
import { escapeControlCharacters } from '../protocol/text.ts';
import { registerSimulateCommand } from '../simulator/cli.ts';
import { registerAdminCommands } from './admin.ts';
import { registerApprovalCommands } from './approvals.ts';
import { registerAuditCommand } from './audit.ts';
import { registerDemoCommand } from './demo.ts';
import { registerDeploymentCommands } from './deployments.ts';
import { CliError, describeCliError } from './errors.ts';
import { registerOperatorCommands } from './operator.ts';
import { registerServeCommand } from './serve.ts';
import { registerSettingsCommands } from './settings.ts';
import { registerWebhookCommands } from './webhooks.ts';

const program: Command = new Command('edgeflow-ota')
  .description('EdgeFlow OTA: over-the-air firmware updates for fleets of edge devices')
  .version(packageVersion, '-V, --version', 'print the version')
  // `firmware upload --version 1.2.0` is the firmware's version, not a request for ours.
  .enablePositionalOptions()
  .showHelpAfterError()
  // Usage errors (an unknown option or command, a missing argument) come back here as a
  // CommanderError, for one exit code: 2, as every usage error of ours (CliError(…, 2)).
  // Subcommands registered below inherit it.
  .exitOverride();

/** Exit code of a usage error (the command line itself is wrong), as opposed to a failure (1). */
const USAGE_ERROR = 2;

registerServeCommand(program);
registerAgentCommand(program);
registerOperatorCommands(program);
registerDeploymentCommands(program);
registerWebhookCommands(program);
registerAuditCommand(program);
registerSettingsCommands(program);
registerSimulateCommand(program);
registerAdminCommands(program);
registerDemoCommand(program);
registerApprovalCommands(program);

try {
  // No default command: bare `edgeflow-ota` prints help instead of starting a server by surprise. (An
  // action on the program itself would take a mistyped command as its argument: "too many arguments".)
  if (process.argv.length <= 2) program.help();
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    // Commander printed its message (and the help, or --help's and --version's output) already.
    process.exit(error.exitCode === 0 ? 0 : USAGE_ERROR);
  }
  // Whatever a command could not handle itself: one line with the cause and a hint, no stack.
  process.stderr.write(`error: ${escapeControlCharacters(describeCliError(error))}\n`);
  process.exit(error instanceof CliError ? error.exitCode : 1);
}
