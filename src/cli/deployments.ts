/**
 * Fleet deployments from the command line: `deploy <version>` (with --dry-run and --wait) and
 * `deployments list|show|devices|pause|resume|cancel|promote|rollback`. The flags are parsed
 * and the answers drawn by deployment-format.ts; `--wait` follows like `watch <id>`.
 */
import type { Command } from 'commander';
import type { DeploymentPlan } from '../server/deployments/schemas.ts';
import {
  type DeployFlags,
  type DeploymentView,
  deploymentRequestOf,
  renderDeployment,
  renderPlan,
} from './deployment-format.ts';
import { followDeployment } from './deployment-watch.ts';
import { action, client, type GlobalFlags, print, type Row, table, withConnection } from './operator.ts';

const CONTROLS = {
  pause: 'pause: no new batch or device starts; devices already updating finish',
  resume: 'resume a paused deployment (after a failed gate: accept its failures and go on)',
  cancel: 'cancel: devices not started are never touched; running ones finish',
  promote: 'start the next batch now, skipping the current gate and bake',
  rollback: 'stop, and roll every device this deployment updated back to the version it ran before',
} as const;

/**
 * A mistyped flag is one line, not the help page: commander's message with its suggestion
 * ("(Did you mean --canary-percent?)") on the same line.
 */
const oneLineErrors = {
  outputError: (text: string, write: (text: string) => void) => write(`${text.trimEnd().replace(/\s*\n\s*/g, ' ')}\n`),
};

const path = (id: string, rest = '') => `/api/v1/deployments/${encodeURIComponent(id)}${rest}`;

const columns = () => (process.stdout.isTTY ? (process.stdout.columns ?? 100) : 100);

/** One line for the deployments table: the summary counts next to the settings. */
function listRow(deployment: DeploymentView): Row {
  return {
    ...deployment,
    completed: deployment.counts.completed,
    failed: deployment.counts.failed + deployment.counts.timed_out,
  };
}

export function registerDeploymentCommands(program: Command): void {
  withConnection(
    program
      .command('deploy <version>')
      .description('deploy a firmware version to a fleet: all at once, rolling or canary, gated on device health')
      .showHelpAfterError(false)
      .configureOutput(oneLineErrors),
  )
    .option('--devices <a,b>', 'these device ids')
    .option('--tags <t1,t2>', 'devices carrying all of these tags')
    .option('--models <m>', 'devices of one of these models')
    .option('--current-versions <v>', 'devices running one of these versions')
    .option('--all', 'every device of the organization')
    .option('--dynamic', 'also take devices that come to match while the deployment is active')
    .option('--strategy <name>', 'all_at_once | rolling | canary (default: from the other flags)')
    .option('--batch-size <n|p%>', 'rolling batch size: a count (50) or a share (10%)')
    .option('--canary-percent <p>', 'canary: this share of the devices first')
    .option('--canary-count <n>', 'canary: this many devices first')
    .option('--rest <name>', "a canary's rest: all_at_once (default) | rolling (with --batch-size)")
    .option('--bake <duration>', 'how long an updated device must stay healthy to count: 30s, 10m, 1h')
    .option('--threshold <percent>', 'failure threshold of a batch, in percent')
    .option('--min-sample <n>', 'no verdict on the failure rate before this many devices of a batch have one')
    .option('--on-failure <action>', 'pause | abort | rollback')
    .option('--max-per-minute <n>', 'dispatch at most this many devices a minute')
    .option('--device-timeout <duration>', "a device's update times out after this long: 30m")
    .option('--retries <n>', 'retry a failed or timed-out device this many times')
    .option('--start-at <time>', 'start then (ISO 8601, e.g. 2030-01-31T02:00:00Z)')
    .option('--force', 're-install on devices that already run the version')
    .option('--dry-run', 'print the plan; create nothing')
    .option('--wait', 'follow it like `watch` until it ends; exit 0 only when completed')
    .action(
      action(async (version: string, flags: GlobalFlags & DeployFlags & { wait?: boolean }) => {
        const body = deploymentRequestOf(version, flags);
        const api = client(flags);
        const answer = await api.call<DeploymentView | DeploymentPlan>('POST', '/api/v1/deployments', body);
        if ('dry_run' in answer) {
          print(flags, answer, () => renderPlan(answer));
          return;
        }
        if (flags.wait) {
          await followDeployment(api, answer.id, { json: flags.json });
          return;
        }
        print(flags, answer, () =>
          [...renderDeployment(answer, columns()), `follow it: edgeflow-ota watch ${answer.id}`].join('\n'),
        );
      }),
    );

  const deployments = program
    .command('deployments')
    .description('fleet deployments: list, show, their devices, and the operator controls')
    .showHelpAfterError(false)
    .configureOutput(oneLineErrors);
  withConnection(deployments.command('list').description('deployments, newest first'))
    .option('--status <status>', 'only these: scheduled, running, paused, completed, failed, cancelled, rolled_back')
    .action(
      action(async (flags: GlobalFlags & { status?: string }) => {
        const query = flags.status ? `?${new URLSearchParams({ status: flags.status })}` : '';
        const { deployments: rows } = await client(flags).call<{ deployments: DeploymentView[] }>(
          'GET',
          `/api/v1/deployments${query}`,
        );
        print(flags, rows, () =>
          table(rows.map(listRow), [
            'id',
            'version',
            'status',
            'strategy',
            'total',
            'completed',
            'failed',
            'created_at',
          ]),
        );
      }),
    );
  withConnection(
    deployments.command('show <id>').description('a deployment: status, counts and a bar per batch'),
  ).action(
    action(async (id: string, flags: GlobalFlags) => {
      const deployment = await client(flags).call<DeploymentView>('GET', path(id));
      print(flags, deployment, () => renderDeployment(deployment, columns()).join('\n'));
    }),
  );
  withConnection(deployments.command('devices <id>').description("a deployment's devices, a page at a time"))
    .option('--status <status>', 'only devices in this status (pending, queued, in_progress, completed, failed …)')
    .option('--after <device-id>', 'the page after this device (printed at the end of a page)')
    .option('--limit <n>', 'devices per page', '100')
    .action(
      action(async (id: string, flags: GlobalFlags & { status?: string; after?: string; limit: string }) => {
        const query = new URLSearchParams({ limit: flags.limit });
        if (flags.status) query.set('status', flags.status);
        if (flags.after) query.set('after', flags.after);
        const page = await client(flags).call<{ devices: Row[]; next_after: string | null }>(
          'GET',
          path(id, `/devices?${query}`),
        );
        print(flags, page, () => {
          const rows = table(page.devices, [
            'device_id',
            'batch',
            'status',
            'from_version',
            'current_version',
            'online',
            'error_code',
            'bake_failure',
          ]);
          return page.next_after ? `${rows}\nmore: --after ${page.next_after}` : rows;
        });
      }),
    );
  for (const [control, description] of Object.entries(CONTROLS)) {
    withConnection(deployments.command(`${control} <id>`).description(description)).action(
      action(async (id: string, flags: GlobalFlags) => {
        const deployment = await client(flags).call<DeploymentView>('POST', path(id, `/${control}`));
        print(flags, deployment, () => renderDeployment(deployment, columns()).join('\n'));
      }),
    );
  }
}
