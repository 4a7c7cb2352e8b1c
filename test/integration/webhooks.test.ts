/**
 * Signed webhooks end to end, on each database: endpoints through the API, deliveries written by
 * the database in the statement of the change, sent by the worker to a real HTTPS receiver (a
 * self-signed certificate the server trusts through EDGEFLOW_WEBHOOKS_CA_FILE) that checks the
 * signature itself; a failing, then hanging, then recovered receiver across a server restart;
 * replay; approvals (the waiting deployment, then who decided, with the comment); a real agent's
 * deployment; an organization without endpoints writes no delivery row.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Agent } from '../../src/agent/agent.ts';
import { countDeliveries } from '../../src/server/webhooks/repo.ts';
import { registerDevice, removeAgentDirs, startAgent } from '../helpers/agents.ts';
import { makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
import { eventually } from '../helpers/raw-device.ts';
import {
  backendsUnderTest,
  type PersistentState,
  persistentState,
  startTestServer,
  stopSharedServices,
  type TestServer,
} from '../helpers/server.ts';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook-receiver.ts';

const backends = await backendsUnderTest();
after(async () => {
  await removeAgentDirs();
  await stopSharedServices();
});

interface Endpoint {
  id: string;
  url: string;
  events: string[];
  enabled: boolean;
  secret?: string;
}
interface Delivery {
  id: string;
  event_type: string;
  status: string;
  attempts: number;
  replay_of: string | null;
  data: Record<string, unknown>;
  attempt_log: { status_code: number | null; error: string | null }[];
}
type ErrorBody = { error: { code: string } };

for (const backend of backends) {
  describe(`webhooks on ${backend.name}`, () => {
    let receiver: WebhookReceiver;
    let state: PersistentState;
    let server: TestServer;
    let org: { id: string; adminKey: string };
    let env: Record<string, string>;
    const agents: Agent[] = [];

    before(async () => {
      receiver = await startWebhookReceiver();
      env = {
        EDGEFLOW_WEBHOOKS_CA_FILE: receiver.caFile,
        EDGEFLOW_WEBHOOKS_ALLOW_PRIVATE: 'true',
        EDGEFLOW_WEBHOOKS_POLL_MS: '50',
        EDGEFLOW_WEBHOOKS_TIMEOUT_MS: '1500',
        EDGEFLOW_WEBHOOKS_RETRY_BASE_MS: '100',
        EDGEFLOW_WEBHOOKS_RETRY_MAX_MS: '300',
        EDGEFLOW_WEBHOOKS_MAX_ATTEMPTS: '50',
        EDGEFLOW_DISPATCH_INTERVAL_MS: '200',
        EDGEFLOW_HEALTH_CHECK_TIMEOUT_MS: '2000',
      };
      state = persistentState();
      server = await startTestServer(backend, { env, state });
      org = await server.createOrg('hooks');
    });
    after(async () => {
      await Promise.all(agents.splice(0).map((agent) => agent.stop()));
      await server?.close();
      await state?.dispose();
      await receiver?.close();
    });

    const api = <T>(method: string, path: string, body?: unknown, key = org.adminKey) =>
      server.api<T>(method, path, key, body);
    async function addEndpoint(name: string, events: string[]): Promise<Endpoint> {
      const created = await api<Endpoint>('POST', '/api/v1/webhooks', { url: receiver.urlOf(name), events });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      assert.match(created.body.secret ?? '', /^whsec_/);
      receiver.secrets.set(name, created.body.secret!);
      return created.body;
    }
    const delivery = async (endpoint: string, id: string) =>
      (await api<Delivery>('GET', `/api/v1/webhooks/${endpoint}/deliveries/${id}`)).body;

    it('registers endpoints with stable refusals, shows the secret once, and hides them from other organizations', async () => {
      const refusals: [unknown, string][] = [
        [{ url: 'not a url', events: ['ping'] }, 'invalid_webhook_url'],
        [{ url: 'http://example.com/hook', events: ['ping'] }, 'webhook_url_not_https'],
        [{ url: 'ftp://example.com/hook', events: ['ping'] }, 'webhook_url_not_https'],
        [{ url: 'https://user:pw@example.com/hook', events: ['ping'] }, 'invalid_webhook_url'],
        [{ url: 'https://example.com/hook', events: ['deployment.exploded'] }, 'unknown_event_type'],
      ];
      for (const [body, code] of refusals) {
        const answer = await api<ErrorBody>('POST', '/api/v1/webhooks', body);
        assert.equal(answer.status, 400, JSON.stringify(body));
        assert.equal(answer.body.error.code, code, JSON.stringify(body));
      }
      assert.equal((await api<{ webhooks: unknown[] }>('GET', '/api/v1/webhooks')).body.webhooks.length, 0);

      const endpoint = await addEndpoint('shown-once', ['update.finished']);
      const read = await api<Endpoint>('GET', `/api/v1/webhooks/${endpoint.id}`);
      assert.equal(read.status, 200);
      assert.equal(read.body.secret, undefined);
      const patched = await api<Endpoint>('PATCH', `/api/v1/webhooks/${endpoint.id}`, { enabled: false });
      assert.equal(patched.body.enabled, false);
      assert.equal(
        (await api<ErrorBody>('POST', `/api/v1/webhooks/${endpoint.id}/ping`)).body.error.code,
        'webhook_disabled',
      );
      const rotated = await api<Endpoint>('POST', `/api/v1/webhooks/${endpoint.id}/rotate-secret`);
      assert.notEqual(rotated.body.secret, endpoint.secret);

      const other = await server.createOrg('other');
      for (const [method, path] of [
        ['GET', `/api/v1/webhooks/${endpoint.id}`],
        ['DELETE', `/api/v1/webhooks/${endpoint.id}`],
        ['POST', `/api/v1/webhooks/${endpoint.id}/ping`],
        ['GET', `/api/v1/webhooks/${endpoint.id}/deliveries`],
      ] as const) {
        const answer = await api<ErrorBody>(method, path, undefined, other.adminKey);
        assert.equal(answer.status, 404, `${method} ${path}`);
        assert.equal(answer.body.error.code, 'webhook_not_found');
      }
      const viewer = await api<{ key: string }>('POST', `/api/v1/orgs/${org.id}/keys`, { role: 'viewer' });
      if (viewer.status === 201) {
        assert.equal((await api('GET', '/api/v1/webhooks', undefined, viewer.body.key)).status, 403);
      }
      assert.equal((await api('DELETE', `/api/v1/webhooks/${endpoint.id}`)).status, 204);
      assert.equal((await api('GET', `/api/v1/webhooks/${endpoint.id}`)).status, 404);
    });

    it('delivers a signed ping; retries a failing then hanging receiver with backoff across a restart; replays', async () => {
      const endpoint = await addEndpoint('retry', ['ping']);
      // Signed, delivered at once.
      const ping = await api<Delivery>('POST', `/api/v1/webhooks/${endpoint.id}/ping`);
      assert.equal(ping.status, 202);
      await eventually(async () => (await delivery(endpoint.id, ping.body.id)).status === 'delivered', 5000, 'ping');
      const first = receiver.received.find((entry) => entry.delivery === ping.body.id);
      assert.ok(first?.signatureValid, 'the receiver verifies the signature');
      assert.equal(first.event, 'ping');
      assert.equal(first.body.id, ping.body.id);

      // A receiver that fails: retried, each attempt recorded.
      receiver.mode = 'fail';
      const retried = (await api<Delivery>('POST', `/api/v1/webhooks/${endpoint.id}/ping`)).body;
      await eventually(
        async () =>
          (await delivery(endpoint.id, retried.id)).attempt_log.filter((attempt) => attempt.status_code === 500)
            .length >= 2,
        5000,
        'two attempts answered 500',
      );
      // Then one that hangs past the timeout.
      receiver.mode = 'hang';
      await eventually(
        async () => (await delivery(endpoint.id, retried.id)).attempt_log.some((a) => a.error?.startsWith('timeout')),
        5000,
        'a timed-out attempt',
      );
      assert.equal((await delivery(endpoint.id, retried.id)).status, 'pending');

      // The server restarts mid-retry (a second server on the same database); the receiver recovers.
      await server.close();
      receiver.mode = 'ok';
      server = await startTestServer(backend, { env, state });
      await eventually(
        async () => (await delivery(endpoint.id, retried.id)).status === 'delivered',
        10_000,
        'recovered',
      );
      const done = await delivery(endpoint.id, retried.id);
      const codes = done.attempt_log.map((attempt) => attempt.status_code);
      assert.ok(codes.filter((code) => code === 500).length >= 2, JSON.stringify(done.attempt_log));
      assert.equal(codes.at(-1), 200);
      const tries = receiver.received.filter((entry) => entry.delivery === retried.id);
      assert.ok(tries.every((entry) => entry.signatureValid && entry.body.id === retried.id));
      // At least once: an answer that came after the timeout (a busy machine) is retried, same id.
      assert.ok(tries.some((entry) => entry.answered === 200));
      assert.equal((await delivery(endpoint.id, retried.id)).attempts, done.attempts, 'no attempt after delivered');

      // Replay: a new delivery naming the original, same data.
      const replay = await api<Delivery>('POST', `/api/v1/webhooks/${endpoint.id}/deliveries/${retried.id}/replay`);
      assert.equal(replay.status, 202);
      assert.notEqual(replay.body.id, retried.id);
      assert.equal(replay.body.replay_of, retried.id);
      await eventually(
        async () => (await delivery(endpoint.id, replay.body.id)).status === 'delivered',
        5000,
        'replay',
      );
      const replayed = receiver.received.find((entry) => entry.delivery === replay.body.id);
      assert.equal(replayed?.body.replay_of, retried.id);
      assert.deepEqual(replayed.body.data, done.data);

      const failedOnly = await api<{ deliveries: Delivery[] }>(
        'GET',
        `/api/v1/webhooks/${endpoint.id}/deliveries?status=failed`,
      );
      assert.equal(failedOnly.body.deliveries.length, 0);
      const page = await api<{ deliveries: Delivery[]; next_before: string | null }>(
        'GET',
        `/api/v1/webhooks/${endpoint.id}/deliveries?limit=2`,
      );
      assert.equal(page.body.deliveries.length, 2);
      assert.ok(page.body.next_before);
      const rest = await api<{ deliveries: Delivery[] }>(
        'GET',
        `/api/v1/webhooks/${endpoint.id}/deliveries?limit=2&before=${page.body.next_before}`,
      );
      assert.deepEqual(
        [...page.body.deliveries, ...rest.body.deliveries].map((d) => d.id).sort(),
        [ping.body.id, retried.id, replay.body.id].sort(),
      );
    });

    it('delivers approvals: the deployment waiting, then the decision with who made it and the comment', async () => {
      const approving = await server.createOrg('approving');
      const keys: Record<string, string> = {};
      for (const who of ['alice', 'bob']) {
        const created = await server.api<{ key: string }>('POST', '/api/v1/api-keys', approving.adminKey, {
          role: 'admin',
          name: `${who}-key`,
          owner: who,
        });
        keys[who] = created.body.key;
      }
      const created = await server.api<Endpoint>('POST', '/api/v1/webhooks', approving.adminKey, {
        url: receiver.urlOf('approvals'),
        events: ['deployment.approval', 'deployment.state_changed'],
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      receiver.secrets.set('approvals', created.body.secret!);
      const firmware = await makeFirmwareFile(16 * 1024);
      await postFirmware(server.url, approving.adminKey, { version: '1.1.0', sha256: firmware.sha256 }, firmware);
      await registerDevice(server, approving.adminKey);
      assert.equal(
        (await server.api('PUT', '/api/v1/settings/approvals', approving.adminKey, { required: true })).status,
        200,
      );
      const deployment = await server.api<{ id: string; status: string }>('POST', '/api/v1/deployments', keys.alice, {
        version: '1.1.0',
        target: { all: true },
        strategy: 'all_at_once',
      });
      assert.equal(deployment.body.status, 'awaiting_approval', JSON.stringify(deployment.body));
      const approved = await server.api('POST', `/api/v1/deployments/${deployment.body.id}/approve`, keys.bob, {
        comment: 'change CR-1234',
      });
      assert.equal(approved.status, 200, JSON.stringify(approved.body));

      const of = (event: string) => [
        ...new Map(
          receiver.received
            .filter((entry) => entry.path === 'approvals' && entry.event === event)
            .map((entry) => [entry.delivery, entry]),
        ).values(),
      ];
      await eventually(async () => of('deployment.approval').length === 2, 5000, 'two approval deliveries');
      const [asked, decided] = of('deployment.approval').map((entry) => {
        assert.ok(entry.signatureValid);
        return entry.body.data;
      });
      assert.deepEqual(
        [asked!.deployment_id, asked!.state, asked!.decision, (asked!.created_by as { owner: string }).owner],
        [deployment.body.id, 'awaiting_approval', null, 'alice'],
      );
      const decider = decided!.decided_by as { owner: string; key_name: string };
      assert.deepEqual(
        [decided!.decision, decider.owner, decider.key_name, decided!.comment],
        ['approved', 'bob', 'bob-key', 'change CR-1234'],
      );
      assert.equal(typeof decided!.decided_at, 'string');
      // The state change that the approval made carries it too.
      await eventually(
        async () =>
          of('deployment.state_changed').some((entry) => entry.body.data.previous_state === 'awaiting_approval'),
        5000,
        'the state change after the approval',
      );
      const started = of('deployment.state_changed').find(
        (entry) => entry.body.data.previous_state === 'awaiting_approval',
      )!.body.data;
      assert.equal((started.approval as { comment: string }).comment, 'change CR-1234');
    });

    it("a real agent's deployment delivers deployment and update events; an organization without endpoints gets no rows", async () => {
      const endpoint = await addEndpoint('fleet', ['deployment.state_changed', 'update.finished', 'device.fell_back']);
      const quiet = await server.createOrg('quiet');
      const firmware = await makeFirmwareFile(64 * 1024);
      for (const owner of [org, quiet]) {
        const upload = await postFirmware(
          server.url,
          owner.adminKey,
          { version: '1.1.0', sha256: firmware.sha256 },
          firmware,
        );
        assert.equal(upload.status, 201);
      }
      const deploymentIds: string[] = [];
      for (const owner of [org, quiet]) {
        const device = await registerDevice(server, owner.adminKey);
        agents.push(await startAgent(server, owner, device));
        const created = await server.api<{ id: string }>('POST', '/api/v1/deployments', owner.adminKey, {
          version: '1.1.0',
          target: { device_ids: [device.deviceId] },
          strategy: 'all_at_once',
        });
        assert.equal(created.status, 201, JSON.stringify(created.body));
        deploymentIds.push(created.body.id);
      }
      const [deploymentId, quietDeploymentId] = deploymentIds as [string, string];
      for (const [owner, id] of [
        [org, deploymentId],
        [quiet, quietDeploymentId],
      ] as const) {
        await eventually(
          async () =>
            (await server.api<{ status: string }>('GET', `/api/v1/deployments/${id}`, owner.adminKey)).body.status ===
            'completed',
          20_000,
          'deployment completed',
        );
      }
      const ofDeployment = () =>
        receiver.received.filter((entry) => entry.path === 'fleet' && entry.body.data.deployment_id === deploymentId);
      await eventually(
        async () =>
          ofDeployment().some((e) => e.event === 'deployment.state_changed' && e.body.data.state === 'completed'),
        5000,
        'the completed deployment delivered',
      );
      // Once per delivery id (a receiver's idempotency: a retry after a late answer repeats one).
      const received = [...new Map(ofDeployment().map((entry) => [entry.delivery, entry])).values()];
      assert.ok(received.every((entry) => entry.signatureValid));
      const finished = received.filter((entry) => entry.event === 'update.finished');
      assert.equal(finished.length, 1, JSON.stringify(received.map((e) => e.body)));
      assert.equal(finished[0]!.body.data.status, 'completed');
      assert.equal(finished[0]!.body.data.target_version, '1.1.0');
      const states = received.filter((e) => e.event === 'deployment.state_changed').map((e) => e.body.data.state);
      assert.ok(states.includes('completed'), JSON.stringify(states));
      assert.ok(!received.some((entry) => entry.body.organization_id !== org.id));
      const listed = await api<{ deliveries: Delivery[] }>('GET', `/api/v1/webhooks/${endpoint.id}/deliveries`);
      assert.ok(listed.body.deliveries.length >= 2);
      assert.equal(await countDeliveries(server.db, quiet.id), 0);
    });
  });
}
