/**
 * Approvals with the two-person rule, on each database, with real agents: an organization's
 * policy makes a deployment wait in awaiting_approval (no update row, its devices busy for
 * every other door); another key of its creator's person, an operator, and the creator are
 * refused; an admin of another person approves it and it runs to completion on the agents; a
 * rejected one ends with its comment and releases its devices; a cancelled one too; the policy's
 * min_devices and tags ask for approval only where they should.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Fleet } from '../../src/simulator/simulator.ts';
import { type DeploymentBody, FLEET_SERVER_ENV, NEW, setupFleet } from '../helpers/deployment-fleet.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const backends = await backendsUnderTest();
after(() => stopSharedServices());

interface Actor {
  key_id: string;
  key_name: string | null;
  owner: string | null;
}
interface Approved extends DeploymentBody {
  created_by: Actor | null;
  approval: {
    reason: string;
    decision: 'approved' | 'rejected' | null;
    decided_by: Actor | null;
    decided_at: string | null;
    comment: string | null;
  } | null;
}
type Refusal = { error: { code: string; message: string } };

for (const backend of backends) {
  describe(`approvals, the two-person rule (${backend.name})`, () => {
    let server: TestServer;
    const fleets: Fleet[] = [];
    let fleet: Awaited<ReturnType<typeof setupFleet>>;
    const keys: Record<'alice' | 'alice2' | 'bob' | 'operator', { id: string; key: string }> = {} as never;
    const as = <T>(who: keyof typeof keys, method: string, path: string, body?: unknown) =>
      server.api<T>(method, path, keys[who].key, body);
    const ids = () => fleet.devices.map((device) => device.deviceId);
    const ota = (id: string) =>
      server.db.query<{ n: number }>('SELECT count(*)::int AS n FROM ota_updates WHERE deployment_id = $1', [id]);
    const deployAs = async (who: keyof typeof keys, body: Record<string, unknown>) => {
      const created = await as<Approved>(who, 'POST', '/api/v1/deployments', {
        version: NEW,
        strategy: 'all_at_once',
        ...body,
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      return created.body;
    };
    const planAs = async (who: keyof typeof keys, target: Record<string, unknown>) => {
      const plan = await as<{
        total: number;
        excluded: { busy: { count: number } };
        approval: { required: boolean; reason: string | null };
      }>(who, 'POST', '/api/v1/deployments', {
        version: NEW,
        strategy: 'all_at_once',
        target,
        force: true,
        dry_run: true,
      });
      assert.equal(plan.status, 200, JSON.stringify(plan.body));
      return plan.body;
    };

    before(async () => {
      server = await startTestServer(backend, { env: FLEET_SERVER_ENV });
      fleet = await setupFleet(server, fleets, 'approvals', 4);
      const people = {
        alice: { role: 'admin', name: 'alice-laptop', owner: 'alice@example.com' },
        alice2: { role: 'admin', name: 'alice-ci', owner: ' Alice@Example.com' },
        bob: { role: 'admin', name: 'bob-laptop', owner: 'bob@example.com' },
        operator: { role: 'operator', name: 'carol-ops', owner: 'carol@example.com' },
      } as const;
      for (const [who, body] of Object.entries(people)) {
        const created = await fleet.api<{ id: string; key: string; owner: string }>('POST', '/api/v1/api-keys', body);
        assert.equal(created.status, 201, JSON.stringify(created.body));
        keys[who as keyof typeof keys] = { id: created.body.id, key: created.body.key };
      }
    });
    after(async () => {
      await Promise.all(fleets.map((running) => running.stop()));
      await server?.close();
    });

    it('keeps the policy per organization: not required by default, read by any key, changed by an admin', async () => {
      const listed = await fleet.api<{ api_keys: { name: string; owner: string | null }[] }>('GET', '/api/v1/api-keys');
      assert.equal(listed.body.api_keys.find((key) => key.name === 'alice-ci')?.owner, 'Alice@Example.com');
      const blank = await fleet.api<Refusal>('POST', '/api/v1/api-keys', { role: 'viewer', owner: '   ' });
      assert.equal(blank.status, 400);
      assert.equal(blank.body.error.code, 'invalid_owner');

      assert.deepEqual((await as('operator', 'GET', '/api/v1/settings/approvals')).body, { required: false });
      const byOperator = await as<Refusal>('operator', 'PUT', '/api/v1/settings/approvals', { required: true });
      assert.equal(byOperator.status, 403);
      assert.equal(byOperator.body.error.code, 'insufficient_role');
      const bad = await as<Refusal>('bob', 'PUT', '/api/v1/settings/approvals', { required: true, min_devices: 0 });
      assert.equal(bad.status, 400, JSON.stringify(bad.body));
      assert.deepEqual((await as('operator', 'GET', '/api/v1/settings/approvals')).body, { required: false });
      const other = await server.createOrg('approvals-other');
      const put = await as('bob', 'PUT', '/api/v1/settings/approvals', { required: true });
      assert.equal(put.status, 200);
      assert.deepEqual(put.body, { required: true });
      assert.deepEqual((await server.api('GET', '/api/v1/settings/approvals', other.adminKey)).body, {
        required: false,
      });
    });

    it('waits for an admin of another person; the creator, their other key and an operator are refused; approved, it runs on the agents', async () => {
      const target = { device_ids: ids().slice(0, 2) };
      assert.equal((await planAs('alice', target)).approval.required, true);
      const created = await deployAs('alice', { target });
      assert.equal(created.status, 'awaiting_approval');
      assert.deepEqual(created.controls, ['approve', 'reject', 'cancel']);
      assert.equal(created.created_by?.owner, 'alice@example.com');
      assert.equal(created.approval?.decision, null);
      assert.equal(created.counts.pending, 2);
      assert.equal((await ota(created.id))[0]!.n, 0, 'no update row while it awaits approval');
      // Its devices are busy for the other doors: a single update, another deployment's plan.
      const single = await as<Refusal>('bob', 'POST', `/api/v1/devices/${ids()[0]}/ota/update`, { version: NEW });
      assert.equal(single.status, 409, JSON.stringify(single.body));
      assert.equal((await planAs('bob', target)).excluded.busy.count, 2);

      for (const [who, status, code] of [
        ['alice', 403, 'approval_by_creator'],
        ['alice2', 403, 'approval_by_creator'],
        ['operator', 403, 'insufficient_role'],
      ] as const) {
        const refused = await as<Refusal>(who, 'POST', `/api/v1/deployments/${created.id}/approve`, {});
        assert.equal(refused.status, status, `${who}: ${JSON.stringify(refused.body)}`);
        assert.equal(refused.body.error.code, code);
      }
      const bySystem = await server.api<Refusal>(
        'POST',
        `/api/v1/deployments/${created.id}/approve`,
        server.adminKey,
        {},
      );
      assert.equal(bySystem.status, 403);
      assert.equal(bySystem.body.error.code, 'organization_key_required');
      assert.equal((await fleet.deployment(created.id)).status, 'awaiting_approval');
      assert.equal((await ota(created.id))[0]!.n, 0);

      const approved = await as<Approved>('bob', 'POST', `/api/v1/deployments/${created.id}/approve`, {
        comment: 'checked the release notes',
      });
      assert.equal(approved.status, 200, JSON.stringify(approved.body));
      assert.equal(approved.body.approval?.decision, 'approved');
      assert.equal(approved.body.approval?.decided_by?.owner, 'bob@example.com');
      assert.equal(approved.body.approval?.comment, 'checked the release notes');
      const done = (await fleet.until(created.id, 'completed')) as Approved;
      assert.equal(done.counts.completed, 2);
      for (const deviceId of target.device_ids) {
        const device = await fleet.api<{ current_version: string }>('GET', `/api/v1/devices/${deviceId}`);
        assert.equal(device.body.current_version, NEW);
      }
      const again = await as<Refusal>('bob', 'POST', `/api/v1/deployments/${created.id}/approve`, {});
      assert.equal(again.status, 409);
      assert.equal(again.body.error.code, 'deployment_not_awaiting_approval');
      assert.match(again.body.error.message, /completed/);
      const listed = await fleet.api<{ deployments: Approved[] }>('GET', '/api/v1/deployments?status=completed');
      assert.equal(
        listed.body.deployments.find((row) => row.id === created.id)?.approval?.decided_by?.key_name,
        'bob-laptop',
      );
    });

    it('a rejected one ends rejected with its comment and releases its devices; a cancelled one too', async () => {
      const target = { device_ids: ids().slice(2, 4) };
      const created = await deployAs('alice2', { target });
      assert.equal(created.status, 'awaiting_approval');
      const noComment = await as<Refusal>('bob', 'POST', `/api/v1/deployments/${created.id}/reject`, {});
      assert.equal(noComment.status, 400);
      const blank = await as<Refusal>('bob', 'POST', `/api/v1/deployments/${created.id}/reject`, { comment: '  ' });
      assert.equal(blank.status, 400);
      assert.equal(blank.body.error.code, 'comment_required');
      const byCreator = await as<Refusal>('alice', 'POST', `/api/v1/deployments/${created.id}/reject`, {
        comment: 'never mind',
      });
      assert.equal(byCreator.body.error.code, 'approval_by_creator');
      const rejected = await as<Approved>('bob', 'POST', `/api/v1/deployments/${created.id}/reject`, {
        comment: 'not during the audit',
      });
      assert.equal(rejected.status, 200, JSON.stringify(rejected.body));
      assert.equal(rejected.body.status, 'rejected');
      assert.deepEqual(rejected.body.controls, []);
      assert.equal(rejected.body.approval?.decision, 'rejected');
      assert.equal(rejected.body.approval?.comment, 'not during the audit');
      assert.equal(rejected.body.counts.cancelled, 2);
      assert.equal((await planAs('bob', target)).excluded.busy.count, 0);
      assert.equal((await ota(created.id))[0]!.n, 0);

      const waiting = await deployAs('alice', { target });
      assert.equal((await planAs('bob', target)).excluded.busy.count, 2);
      const cancelled = await as<Approved>('operator', 'POST', `/api/v1/deployments/${waiting.id}/cancel`);
      assert.equal(cancelled.status, 200, JSON.stringify(cancelled.body));
      assert.equal(cancelled.body.status, 'cancelled');
      assert.equal(cancelled.body.approval?.decision, null);
      assert.equal((await planAs('bob', target)).excluded.busy.count, 0);
      const late = await as<Refusal>('bob', 'POST', `/api/v1/deployments/${waiting.id}/approve`, {});
      assert.equal(late.status, 409);
      assert.equal(late.body.error.code, 'deployment_not_awaiting_approval');
    });

    it('with min_devices and tags, asks for approval only of a large rollout or one touching a tagged device', async () => {
      const tagged = ids()[3]!;
      const patched = await fleet.api('PATCH', `/api/v1/devices/${tagged}`, { tags: ['prod'] });
      assert.equal(patched.status, 200, JSON.stringify(patched.body));
      const put = await as('bob', 'PUT', '/api/v1/settings/approvals', {
        required: true,
        min_devices: 3,
        tags: ['prod'],
      });
      assert.deepEqual(put.body, { required: true, min_devices: 3, tags: ['prod'] });
      const cases: [Record<string, unknown>, boolean][] = [
        [{ device_ids: ids().slice(0, 2) }, false],
        [{ device_ids: ids().slice(0, 3) }, true],
        [{ device_ids: [tagged] }, true],
        [{ tags: ['prod'] }, true],
        [{ all: true }, true],
      ];
      for (const [target, required] of cases) {
        const plan = await planAs('alice', target);
        assert.equal(plan.approval.required, required, `${JSON.stringify(target)}: ${plan.approval.reason}`);
      }
      // Not asked for: created as it would be without a policy (scheduled here, start_at ahead).
      const free = await deployAs('alice', {
        target: { device_ids: ids().slice(0, 2) },
        force: true,
        start_at: '2999-01-01T00:00:00Z',
      });
      assert.equal(free.status, 'scheduled');
      assert.equal(free.approval, null);
      // Approved with its start ahead: scheduled, not started.
      const large = await deployAs('alice', { target: { device_ids: [tagged] }, start_at: '2999-01-01T00:00:00Z' });
      assert.equal(large.status, 'awaiting_approval');
      assert.match(large.approval?.reason ?? '', /prod/);
      const approved = await as<Approved>('bob', 'POST', `/api/v1/deployments/${large.id}/approve`, {});
      assert.equal(approved.body.status, 'scheduled');
      for (const id of [free.id, large.id]) {
        assert.equal((await as('operator', 'POST', `/api/v1/deployments/${id}/cancel`)).status, 200);
      }
    });
  });
}
