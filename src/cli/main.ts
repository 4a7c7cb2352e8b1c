import { Command } from 'commander';
import { registerAgentCommand } from '../agent/cli.ts';
import { registerSimulateCommand } from '../simulator/cli.ts';
import { registerOperatorCommands } from './operator.ts';
import { registerServeCommand } from './serve.ts';

const program = new Command('edgeflow-ota')
  .description('EdgeFlow OTA: over-the-air firmware updates for fleets of edge devices')
  .showHelpAfterError();

registerServeCommand(program);
registerAgentCommand(program);
registerOperatorCommands(program);
registerSimulateCommand(program);

await program.parseAsync(process.argv);
