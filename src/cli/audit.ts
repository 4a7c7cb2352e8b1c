/**
 * `edgeflow-ota audit`: the audit log, newest first, one line per entry (admin key of an
 * organization, or the system administrator's with --org). Server text is escaped (`shown`).
 */
import type { Command } from 'commander';
import { CliError } from './errors.ts';
import { action, client, type GlobalFlags, print, type Row, shown, withConnection } from './operator.ts';

interface AuditFlags extends GlobalFlags {
  actor?: string;
  action?: string;
  target?: string;
  outcome?: string;
  since?: string;
  until?: string;
  org?: string;
  limit: string;
}

const PAGE = 500;
const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `--since 2h` / `7d`: that long ago; anything else is passed on as a date-time for the server to judge. */
export function sinceValue(value: string, now = Date.now()): string {
  const relative = /^(\d{1,6})([smhd])$/.exec(value);
  return relative ? new Date(now - Number(relative[1]) * UNIT_MS[relative[2]!]!).toISOString() : value;
}

/** The flags as the API's query (without paging). */
export function auditQuery(flags: Omit<AuditFlags, 'server' | 'key' | 'limit'>): URLSearchParams {
  const query = new URLSearchParams();
  if (flags.actor) query.set('actor', flags.actor);
  if (flags.action) query.set('action', flags.action);
  if (flags.target) {
    const [type, ...id] = flags.target.split(':');
    if (type) query.set('target_type', type);
    if (id.length) query.set('target_id', id.join(':'));
  }
  if (flags.outcome) query.set('outcome', flags.outcome);
  if (flags.since) query.set('since', sinceValue(flags.since));
  if (flags.until) query.set('until', sinceValue(flags.until));
  if (flags.org) query.set('organization_id', flags.org);
  return query;
}

/** One entry as a line: when, outcome, action, target, who, from where, what changed. */
export function auditLine(entry: Row): string {
  const at = String(entry.at).replace(/\.\d+Z$/, 'Z');
  const target = entry.target_type ? `${shown(entry.target_type)}:${shown(entry.target_id ?? '-')}` : '-';
  const who = entry.actor_key_id
    ? `${shown(entry.actor_key_name ?? entry.actor_key_id)} (${shown(entry.actor_key_id)}, ${shown(entry.actor_role)})`
    : 'unknown key';
  const outcome = `${shown(entry.outcome)} ${shown(entry.status)}`;
  const changes =
    entry.changes === null || entry.changes === undefined ? '' : `  ${shown(JSON.stringify(entry.changes))}`;
  const created = entry.created_id ? `  created ${shown(entry.created_id)}` : '';
  return `${at}  ${outcome.padEnd(11)} ${shown(entry.action).padEnd(24)} ${target.padEnd(28)} by ${who} from ${shown(entry.source_address)}${created}${changes}`;
}

export function registerAuditCommand(program: Command): void {
  withConnection(
    program
      .command('audit')
      .description('the audit log, newest first: who changed what, when, from where (admin key)')
      .option('--actor <key-id>', 'only what this key did')
      .option('--action <action>', 'an action (deployment.pause) or every action of a kind (deployment.*)')
      .option('--target <type[:id]>', 'only entries about this target (device:gw-1, deployment, firmware:1.2.0)')
      .option('--outcome <outcome>', 'success, or denied (refused: the key may not)')
      .option('--since <when>', 'a date-time (2030-01-31T02:00:00Z) or how long ago (30m, 2h, 7d)')
      .option('--until <when>', 'the same, for the end')
      .option('--org <organization-id>', "the system administrator's key: one organization's entries")
      .option('--limit <n>', 'at most this many entries', '50'),
  ).action(
    action(async (flags: AuditFlags) => {
      const limit = Number(flags.limit);
      if (!Number.isInteger(limit) || limit < 1) throw new CliError('--limit takes a positive whole number', 2);
      const query = auditQuery(flags);
      const entries: Row[] = [];
      let before: string | null = null;
      do {
        const page = new URLSearchParams(query);
        page.set('limit', String(Math.min(PAGE, limit - entries.length)));
        if (before) page.set('before', before);
        const answer: { entries: Row[]; next_before: string | null } = await client(flags).call(
          'GET',
          `/api/v1/audit?${page}`,
        );
        entries.push(...answer.entries);
        before = answer.next_before;
      } while (before && entries.length < limit);
      print(flags, entries, () => (entries.length ? entries.map(auditLine).join('\n') : '(no entries)'));
    }),
  );
}
