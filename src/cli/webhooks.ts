/**
 * Signed webhooks from the command line (admin key): `webhooks add <url> --events …`, `list`,
 * `remove`, `enable`/`disable`, `ping`, `deliveries <id>`, `replay <id> <delivery>`,
 * `rotate-secret <id>`. The secret is printed once, by `add` and `rotate-secret`.
 */
import type { Command } from 'commander';
import { WEBHOOK_DELIVERY_STATUSES, WEBHOOK_EVENT_TYPES } from '../server/model/webhook-events.ts';
import { oneLineErrors } from './deployments.ts';
import { CliError } from './errors.ts';
import { action, client, type GlobalFlags, print, type Row, shown, table, withConnection } from './operator.ts';

const path = (id: string, rest = '') => `/api/v1/webhooks/${encodeURIComponent(id)}${rest}`;

function eventList(value: string, previous: string[] = []): string[] {
  const events = [
    ...previous,
    ...value
      .split(',')
      .map((event) => event.trim())
      .filter(Boolean),
  ];
  const unknown = events.filter((event) => !(WEBHOOK_EVENT_TYPES as readonly string[]).includes(event));
  if (unknown.length > 0) {
    throw new CliError(`--events: unknown ${unknown.join(', ')}; known: ${WEBHOOK_EVENT_TYPES.join(', ')}`, 2);
  }
  return events;
}

function secretLines(endpoint: Row): string {
  return [
    `webhook ${shown(endpoint.id)} → ${shown(endpoint.url)} (${shown((endpoint.events as string[]).join(', '))})`,
    `secret: ${shown(endpoint.secret)}`,
    'keep it now: it is not shown again (rotate-secret makes a new one)',
  ].join('\n');
}

function deliveryLine(delivery: Row): string {
  const last = delivery.last_status_code ?? delivery.last_error ?? '-';
  return `${shown(delivery.id)} ${shown(delivery.event_type)} ${shown(delivery.status)} after ${shown(delivery.attempts)} attempt(s), last: ${shown(last)}`;
}

export function registerWebhookCommands(program: Command): void {
  const webhooks = program
    .command('webhooks')
    .description('signed webhooks: HTTPS endpoints that receive deployment, update and fall-back events (admin key)')
    .showHelpAfterError(false)
    .configureOutput(oneLineErrors);

  withConnection(webhooks.command('add <url>').description('register an endpoint; prints its signing secret once'))
    .requiredOption('--events <types>', `comma-separated (or repeated): ${WEBHOOK_EVENT_TYPES.join(', ')}`, eventList)
    .option('--description <text>', 'what it is for')
    .option('--disabled', 'register it disabled')
    .action(
      action(
        async (url: string, flags: GlobalFlags & { events: string[]; description?: string; disabled?: boolean }) => {
          const endpoint = await client(flags).call<Row>('POST', '/api/v1/webhooks', {
            url,
            events: flags.events,
            ...(flags.description !== undefined ? { description: flags.description } : {}),
            ...(flags.disabled ? { enabled: false } : {}),
          });
          print(flags, endpoint, () => secretLines(endpoint));
        },
      ),
    );

  withConnection(webhooks.command('list').description("the organization's endpoints")).action(
    action(async (flags: GlobalFlags) => {
      const { webhooks: rows } = await client(flags).call<{ webhooks: Row[] }>('GET', '/api/v1/webhooks');
      print(flags, rows, () => table(rows, ['id', 'url', 'events', 'enabled', 'description']));
    }),
  );

  withConnection(webhooks.command('remove <id>').description('remove an endpoint and its deliveries')).action(
    action(async (id: string, flags: GlobalFlags) => {
      await client(flags).call('DELETE', path(id));
      print(flags, { removed: id }, () => `removed webhook ${shown(id)}`);
    }),
  );

  for (const [name, enabled] of [
    ['enable', true],
    ['disable', false],
  ] as const) {
    withConnection(webhooks.command(`${name} <id>`).description(`${name} an endpoint`)).action(
      action(async (id: string, flags: GlobalFlags) => {
        const endpoint = await client(flags).call<Row>('PATCH', path(id), { enabled });
        print(flags, endpoint, () => `webhook ${shown(id)} ${enabled ? 'enabled' : 'disabled'}`);
      }),
    );
  }

  withConnection(
    webhooks.command('rotate-secret <id>').description('a new signing secret, printed once; the old one stops now'),
  ).action(
    action(async (id: string, flags: GlobalFlags) => {
      const endpoint = await client(flags).call<Row>('POST', path(id, '/rotate-secret'));
      print(flags, endpoint, () => secretLines(endpoint));
    }),
  );

  withConnection(webhooks.command('ping <id>').description('send a test delivery (event ping)')).action(
    action(async (id: string, flags: GlobalFlags) => {
      const delivery = await client(flags).call<Row>('POST', path(id, '/ping'));
      print(
        flags,
        delivery,
        () => `ping queued as delivery ${shown(delivery.id)} (see: webhooks deliveries ${shown(id)})`,
      );
    }),
  );

  withConnection(webhooks.command('deliveries <id>').description("an endpoint's deliveries, newest first"))
    .option('--status <status>', `only these: ${WEBHOOK_DELIVERY_STATUSES.join(', ')}`)
    .option('--limit <n>', 'how many (1-200)', '50')
    .option('--before <delivery>', 'the page after this delivery (next_before)')
    .action(
      action(async (id: string, flags: GlobalFlags & { status?: string; limit: string; before?: string }) => {
        const limit = Number(flags.limit);
        if (!Number.isInteger(limit) || limit < 1 || limit > 200) {
          throw new CliError(`--limit must be a whole number from 1 to 200 (got ${JSON.stringify(flags.limit)})`, 2);
        }
        const query = new URLSearchParams({ limit: String(limit) });
        if (flags.status) for (const status of flags.status.split(',')) query.append('status', status.trim());
        if (flags.before) query.set('before', flags.before);
        const page = await client(flags).call<{ deliveries: Row[]; next_before: string | null }>(
          'GET',
          path(id, `/deliveries?${query}`),
        );
        print(flags, page, () =>
          [
            table(
              page.deliveries.map((delivery) => ({
                ...delivery,
                last: delivery.last_status_code ?? delivery.last_error,
              })),
              ['id', 'event_type', 'status', 'attempts', 'last', 'created_at', 'replay_of'],
            ),
            ...(page.next_before ? [`more: --before ${shown(page.next_before)}`] : []),
          ].join('\n'),
        );
      }),
    );

  withConnection(
    webhooks
      .command('replay <id> <delivery>')
      .description('send a recorded delivery again (a new delivery naming the original: replay_of)'),
  ).action(
    action(async (id: string, deliveryId: string, flags: GlobalFlags) => {
      const delivery = await client(flags).call<Row>(
        'POST',
        path(id, `/deliveries/${encodeURIComponent(deliveryId)}/replay`),
      );
      print(flags, delivery, () => `replay queued: ${deliveryLine(delivery)}`);
    }),
  );
}
