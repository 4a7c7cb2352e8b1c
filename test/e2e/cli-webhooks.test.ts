/**
 * Webhooks from the CLI (as child processes) against a real server delivering to a real HTTPS
 * receiver. PGlite and the local store only: the API suite (test/integration/webhooks.test.ts)
 * covers both databases, test/e2e/dashboard-operations.test.ts the Webhooks page.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { cliAgainst } from '../helpers/cli.ts';
import { eventually } from '../helpers/raw-device.ts';
import { startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook-receiver.ts';

describe('webhooks from the CLI', () => {
  let server: TestServer;
  let receiver: WebhookReceiver;
  let org: { id: string; adminKey: string };
  const { cli, refused } = cliAgainst(() => ({ url: server.url, key: org.adminKey }));

  before(async () => {
    receiver = await startWebhookReceiver();
    server = await startTestServer(
      { db: 'pglite', store: 'local', name: 'pglite+local' },
      {
        env: {
          EDGEFLOW_WEBHOOKS_CA_FILE: receiver.caFile,
          EDGEFLOW_WEBHOOKS_ALLOW_PRIVATE: 'true',
          EDGEFLOW_WEBHOOKS_POLL_MS: '50',
        },
      },
    );
    org = await server.createOrg('cli-hooks');
  });
  after(async () => {
    await server?.close();
    await receiver?.close();
    await stopSharedServices();
  });

  it('adds, pings, lists deliveries, replays, rotates and removes; refusals are one line', async () => {
    const added = JSON.parse(
      (await cli(['webhooks', 'add', receiver.urlOf('cli'), '--events', 'update.finished', '--json'])).stdout,
    ) as { id: string; secret: string };
    assert.match(added.secret, /^whsec_/);
    receiver.secrets.set('cli', added.secret);
    const human = await cli(['webhooks', 'list']);
    assert.match(human.stdout, new RegExp(added.id));
    assert.doesNotMatch(human.stdout, /whsec_/);

    const ping = await cli(['webhooks', 'ping', added.id]);
    assert.match(ping.stdout, /ping queued as delivery whd_/);
    await eventually(async () => receiver.received.some((entry) => entry.path === 'cli' && entry.signatureValid), 5000);
    const deliveryId = receiver.received.find((entry) => entry.path === 'cli')!.delivery;
    await eventually(
      async () =>
        (
          await server.api<{ status: string }>(
            'GET',
            `/api/v1/webhooks/${added.id}/deliveries/${deliveryId}`,
            org.adminKey,
          )
        ).body.status === 'delivered',
      5000,
    );
    assert.match(
      (await cli(['webhooks', 'deliveries', added.id])).stdout,
      new RegExp(`${deliveryId}\\s+ping\\s+delivered`),
    );
    const replay = await cli(['webhooks', 'replay', added.id, deliveryId]);
    assert.match(replay.stdout, /replay queued: whd_\w+ ping pending/);

    const rotated = await cli(['webhooks', 'rotate-secret', added.id]);
    assert.match(rotated.stdout, /secret: whsec_/);
    assert.doesNotMatch(rotated.stdout, new RegExp(added.secret));

    const unknown = await refused(['webhooks', 'add', receiver.urlOf('x'), '--events', 'nope']);
    assert.equal(unknown.code, 2);
    assert.equal(unknown.stderr.trim().split('\n').length, 1, unknown.stderr);
    const plain = await refused(['webhooks', 'add', 'http://example.com/', '--events', 'ping']);
    assert.equal(plain.code, 1);
    assert.match(plain.stderr, /^error: webhook_url_not_https: /);
    assert.equal(plain.stderr.trim().split('\n').length, 1);

    await cli(['webhooks', 'remove', added.id]);
    assert.match((await refused(['webhooks', 'ping', added.id])).stderr, /webhook_not_found/);
  });
});
