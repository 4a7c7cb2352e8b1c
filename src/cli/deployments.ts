/**
 * Fleet deployments from the command line: `deploy <version>` (with --dry-run and --wait) and
 * `deployments list|show|devices|target|pause|resume|cancel|promote|rollback`. The flags are
 * parsed and the plan drawn by deployment-format.ts, the status block by deployment-status.ts;
 * `--wait` follows like `watch <id>`. Which controls apply is the server's answer (`controls`),
 * never a rule kept here.
 */
import type { Command } from 'commander';
import type { DeploymentDevice, DeploymentPlan } from '../server/deployments/schemas.ts';
import {
  type ApprovalControl,
  BAKE_FAILURES,
  type Control,
  DEPLOYMENT_STATES,
  DEVICE_STATES,
  failedOf,
  type OperatorControl,
  SKIP_REASONS,
} from '../server/model/deployment.ts';
import { ApiError } from './client.ts';
import { type DeployFlags, deploymentRequestOf, renderPlan } from './deployment-format.ts';
import { type DeploymentView, renderDeployment } from './deployment-status.ts';
import { followDeployment } from './deployment-watch.ts';
import { action, client, type GlobalFlags, print, type Row, table, withConnection } from './operator.ts';

const CONTROLS: Record<OperatorControl, string> = {
  pause: 'pause: no new batch or device starts; devices already updating finish',
  resume: 'resume a paused deployment (after a failed gate: accept its failures and go on)',
  cancel: 'cancel: devices not started are never touched; running ones are stopped where still safe',
  promote: 'start the next batch now, skipping the current gate and bake',
  rollback: 'stop, and roll every device this deployment updated (and that still runs its version) back',
};

/**
 * A mistyped flag is one line, not the help page: commander's message with its suggestion
 * ("(Did you mean --canary-percent?)") on the same line.
 */
export const oneLineErrors = {
  outputError: (text: string, write: (text: string) => void) => write(`${text.trimEnd().replace(/\s*\n\s*/g, ' ')}\n`),
};

const path = (id: string, rest = '') => `/api/v1/deployments/${encodeURIComponent(id)}${rest}`;

const columns = () => (process.stdout.isTTY ? (process.stdout.columns ?? 100) : 100);

/** One line for the deployments table: the summary counts next to the settings. */
function listRow(deployment: DeploymentView): Row {
  return {
    ...deployment,
    completed: deployment.counts.completed,
    failed: failedOf(deployment.counts),
    controls: deployment.controls.length > 0 ? deployment.controls : null,
  };
}

/** `--state failed,timed_out` (or the flag repeated): each state once in the query. */
const states = (value: string, previous: string[] = []) => [
  ...previous,
  ...value
    .split(',')
    .map((state) => state.trim())
    .filter(Boolean),
];

/**
 * POSTs a control. A refusal (409: it does not apply now) is the server's one line, followed by
 * the controls the deployment does offer now, as the server answers them.
 */
async function applyControl(
  flags: GlobalFlags,
  id: string,
  control: Control,
  body?: { comment?: string },
): Promise<DeploymentView> {
  const api = client(flags);
  try {
    return await api.call<DeploymentView>('POST', path(id, `/${control}`), body);
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 409) throw error;
    const now = await api.call<DeploymentView>('GET', path(id)).catch(() => undefined);
    if (!now) throw error;
    const offered = now.controls.length > 0 ? now.controls.join(', ') : 'none';
    throw new ApiError(error.status, error.code, `${error.message}; controls now: ${offered}`);
  }
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
    .option(
      '--window <spec>',
      "send each device only in this window of its own local time, e.g. 'mon-fri 02:00-05:00' (repeatable; " +
        "default: the organization's windows; 'none': any time)",
      (value: string, all: string[] = []) => [...all, value],
    )
    .option('--max-downloads <n>', 'at most this many devices downloading at once')
    .option('--max-bandwidth <rate>', 'all its devices together download at most this fast: 10MB/s, 512KiB/s')
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
    .option('--status <status>', `only these: ${DEPLOYMENT_STATES.join(', ')}`)
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
            'controls',
            'created_at',
          ]),
        );
      }),
    );
  withConnection(
    deployments
      .command('show <id>')
      .description(
        'a deployment: status, counts, its rollback, the devices left out, why it stopped, the controls it offers now, and a bar per batch',
      ),
  ).action(
    action(async (id: string, flags: GlobalFlags) => {
      const deployment = await client(flags).call<DeploymentView>('GET', path(id));
      print(flags, deployment, () => renderDeployment(deployment, columns()).join('\n'));
    }),
  );
  withConnection(
    deployments
      .command('devices <id>')
      .description(
        'every device the target matched, where it stands and why (left out ones too), a page at a time; ' +
          'filter by state, reason, batch',
      ),
  )
    .option(
      '--state <state>',
      `only devices in these states (comma-separated or repeated): ${DEVICE_STATES.join(', ')}`,
      states,
    )
    .option(
      '--reason <reason>',
      `only devices with this reason: why it was left out (${SKIP_REASONS.join(', ')}), bake_failed ` +
        `(or ${BAKE_FAILURES.join(', ')}), or an error code`,
    )
    .option('--batch <n>', 'only the devices of this batch (0 is the first)')
    .option('--failing', 'only devices that failed or timed out, in the update or in the bake')
    .option('--after <device-id>', 'the page after this device (printed at the end of a page)')
    .option('--limit <n>', 'devices per page', '100')
    .action(
      action(
        async (
          id: string,
          flags: GlobalFlags & {
            state?: string[];
            reason?: string;
            batch?: string;
            failing?: boolean;
            after?: string;
            limit: string;
          },
        ) => {
          const query = new URLSearchParams({ limit: flags.limit });
          for (const state of flags.state ?? []) query.append('state', state);
          if (flags.reason) query.set('reason', flags.reason);
          if (flags.batch !== undefined) query.set('batch', flags.batch);
          if (flags.failing) query.set('failing', 'true');
          if (flags.after) query.set('after', flags.after);
          const page = await client(flags).call<{ devices: DeploymentDevice[]; next_after: string | null }>(
            'GET',
            path(id, `/devices?${query}`),
          );
          print(flags, page, () => {
            const rows = table(page.devices as unknown as Row[], [
              'device_id',
              'batch',
              'state',
              'reason',
              'current_version',
              'online',
              'explanation',
            ]);
            return page.next_after ? `${rows}\nmore: --after ${page.next_after}` : rows;
          });
        },
      ),
    );
  withConnection(
    deployments
      .command('target <id>')
      .description("the device ids a deployment's target lists, in its order, and whether each names a device"),
  )
    .option('--after <n>', 'the page after this position (printed at the end of a page)')
    .option('--limit <n>', 'ids per page', '1000')
    .action(
      action(async (id: string, flags: GlobalFlags & { after?: string; limit: string }) => {
        const query = new URLSearchParams({ limit: flags.limit });
        if (flags.after) query.set('after', flags.after);
        const page = await client(flags).call<{
          device_ids: { device_id: string; found: boolean }[];
          next_after: number | null;
        }>('GET', path(id, `/target?${query}`));
        print(flags, page, () => {
          const rows = table(page.device_ids, ['device_id', 'found']);
          return page.next_after !== null ? `${rows}\nmore: --after ${page.next_after}` : rows;
        });
      }),
    );
  const decisions: Record<ApprovalControl, string> = {
    approve: 'approve a deployment awaiting approval (an admin key of another person than its creator)',
    reject: 'reject a deployment awaiting approval, saying why (an admin key of another person than its creator)',
  };
  for (const [decision, description] of Object.entries(decisions) as [ApprovalControl, string][]) {
    const command = withConnection(deployments.command(`${decision} <id>`).description(description));
    if (decision === 'reject')
      command.requiredOption('--comment <text>', 'why it is rejected (kept with the deployment)');
    else command.option('--comment <text>', 'a comment kept with the approval');
    command.action(
      action(async (id: string, flags: GlobalFlags & { comment?: string }) => {
        const body = flags.comment !== undefined ? { comment: flags.comment } : {};
        const deployment = await applyControl(flags, id, decision, body);
        print(flags, deployment, () => renderDeployment(deployment, columns()).join('\n'));
      }),
    );
  }
  for (const [control, description] of Object.entries(CONTROLS) as [OperatorControl, string][]) {
    withConnection(
      deployments
        .command(`${control} <id>`)
        .description(`${description} (when \`deployments show <id>\` lists ${control} under controls)`),
    ).action(
      action(async (id: string, flags: GlobalFlags) => {
        const deployment = await applyControl(flags, id, control);
        print(flags, deployment, () => renderDeployment(deployment, columns()).join('\n'));
      }),
    );
  }
}
