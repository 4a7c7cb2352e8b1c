/**
 * `edgeflow-ota settings approvals`: the organization's approval policy for deployments, shown,
 * or set (admin) when a flag is given. The decisions are `deployments approve|reject <id>`.
 */
import type { Command } from 'commander';
import type { ApprovalPolicy } from '../server/approvals/schemas.ts';
import { CliError } from './errors.ts';
import { action, client, type GlobalFlags, print, withConnection } from './operator.ts';

/** The `settings` group: made once, whichever setting registers first. */
export function settingsCommand(program: Command): Command {
  return (
    program.commands.find((command) => command.name() === 'settings') ??
    program.command('settings').description("your organization's settings (changing them needs the admin role)")
  );
}

/** `when any of: it takes at least 50 devices; it touches devices tagged prod`. */
export function describePolicy(policy: ApprovalPolicy): string {
  if (!policy.required) return 'approval: not required';
  const conditions = [
    ...(policy.min_devices !== undefined ? [`it takes at least ${policy.min_devices} devices`] : []),
    ...(policy.tags ? [`it touches devices tagged ${policy.tags.join(' or ')}`] : []),
  ];
  const when = conditions.length > 0 ? `when ${conditions.join(', or ')}` : 'for every deployment';
  return `approval: required ${when}, by an admin key of another person than the creator`;
}

interface Flags extends GlobalFlags {
  required?: boolean;
  minDevices?: string;
  tags?: string;
}

export function registerApprovalCommands(program: Command): void {
  withConnection(
    settingsCommand(program)
      .command('approvals')
      .description(
        'the approval policy for deployments: shown, or set with --required (optionally only from --min-devices ' +
          'or for --tags: either one applies) or --no-required',
      ),
  )
    .option('--required', 'deployments wait for the approval of an admin of another person')
    .option('--no-required', 'deployments need no approval')
    .option('--min-devices <n>', 'only deployments taking at least this many devices (with --required)')
    .option('--tags <t1,t2>', 'only deployments that select or take a device with one of these tags (with --required)')
    .action(
      action(async (flags: Flags) => {
        const api = client(flags);
        let policy: ApprovalPolicy;
        if (flags.required === undefined) {
          if (flags.minDevices !== undefined || flags.tags !== undefined) {
            throw new CliError('--min-devices and --tags narrow a policy: give --required with them', 2);
          }
          policy = await api.call<ApprovalPolicy>('GET', '/api/v1/settings/approvals');
        } else {
          const minDevices = flags.minDevices === undefined ? undefined : Number(flags.minDevices);
          if (minDevices !== undefined && !(Number.isInteger(minDevices) && minDevices >= 1)) {
            throw new CliError(`--min-devices takes a whole number of devices, 1 or more; got ${flags.minDevices}`, 2);
          }
          const tags = flags.tags
            ?.split(',')
            .map((tag) => tag.trim())
            .filter(Boolean);
          if (!flags.required && (minDevices !== undefined || tags !== undefined)) {
            throw new CliError('--no-required takes no --min-devices or --tags', 2);
          }
          policy = await api.call<ApprovalPolicy>('PUT', '/api/v1/settings/approvals', {
            required: flags.required,
            ...(minDevices !== undefined ? { min_devices: minDevices } : {}),
            ...(tags?.length ? { tags } : {}),
          });
        }
        print(flags, policy, () => describePolicy(policy));
      }),
    );
}
