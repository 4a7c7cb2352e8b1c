/**
 * The packaged agent's entry point (`npm run build:agent` bundles it into one file):
 * `edgeflow-agent [--config /etc/edgeflow/agent.json] [flags]`, the same flags as
 * `edgeflow-ota agent`; `edgeflow-agent install <bundle>` hands an offline bundle to the running
 * agent. Kept free of top-level await so that it also bundles as CommonJS, the only format a
 * Node 20 single executable runs.
 */
import { Command } from 'commander';
import { registerAgentCommand } from './cli.ts';

const program = new Command('edgeflow-agent').showHelpAfterError();
registerAgentCommand(program);
program.parseAsync([process.argv[0] ?? 'node', 'edgeflow-agent', 'agent', ...process.argv.slice(2)]).catch((error) => {
  process.stderr.write(
    `${JSON.stringify({ level: 'error', msg: 'agent failed to start', error: String(error?.message ?? error) })}\n`,
  );
  process.exit(1);
});
