/**
 * The audit log: every state-changing route of the API (read from the route table, so a route
 * added later without a fixture in audit-routes.ts fails here) leaves an entry with its action,
 * actor, target and outcome; refusals of the key are recorded as denied; the database refuses to
 * edit or delete entries except in the retention prune; reads are filtered, paged and scoped to
 * the organization; secrets never reach it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Agent } from '../../src/agent/agent.ts';
import type { AuditEntry } from '../../src/dashboard/types.ts';
import { AuditTrail } from '../../src/server/audit/trail.ts';
import { removeAgentDirs } from '../helpers/agents.ts';
import { makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';
import { AUDIT_ROUTE_FIXTURES, auditFixtureContext } from './audit-routes.ts';

const backends = await backendsUnderTest();
after(stopSharedServices);
after(removeAgentDirs);

type Entry = AuditEntry;
type Page = { entries: Entry[]; next_before: string | null };

for (const backend of backends) {
  describe(`audit log on ${backend.name}`, () => {
    let server: TestServer;
    let org: { id: string; adminKey: string };
    let other: { id: string; adminKey: string };
    let adminKeyId: string;
    let systemKeyId: string;
    const agents: Agent[] = [];
    const VERSION = '2.0.0';

    const keyIdOf = async (key: string) =>
      (await server.api<{ key: { id: string } }>('GET', '/api/v1/me', key)).body.key.id;
    const read = async (query: string, key = org.adminKey) => {
      const response = await server.api<Page>('GET', `/api/v1/audit${query}`, key);
      assert.equal(response.status, 200, JSON.stringify(response.body));
      return response.body;
    };

    before(async () => {
      server = await startTestServer(backend);
      org = await server.createOrg('audited');
      other = await server.createOrg('other');
      adminKeyId = await keyIdOf(org.adminKey);
      systemKeyId = await keyIdOf(server.adminKey);
      const file = await makeFirmwareFile(4096);
      const upload = await postFirmware(server.url, org.adminKey, { version: VERSION, sha256: file.sha256 }, file);
      assert.equal(upload.status, 201);
      // The version a rollback goes back to.
      const first = await makeFirmwareFile(4096);
      assert.equal(
        (await postFirmware(server.url, org.adminKey, { version: '1.0.0', sha256: first.sha256 }, first)).status,
        201,
      );
    });
    after(async () => {
      await Promise.all(agents.map((agent) => agent.stop()));
      await server.close();
    });

    it('audits every state-changing route of the route table with its action, actor, target and outcome', async (t) => {
      const routes = server.services.audit.routes.map((route) => `${route.method} ${route.url}`);
      assert.ok(routes.includes('POST /api/v1/deployments/:id/pause'), 'the route table is read');
      const missing = routes.filter((route) => !(route in AUDIT_ROUTE_FIXTURES));
      assert.deepEqual(
        missing,
        [],
        `state-changing routes without an audit fixture: add them to test/integration/audit-routes.ts: ${missing.join(', ')}`,
      );
      const ctx = auditFixtureContext(server, org, VERSION, agents);
      for (const route of routes) {
        await t.test(route, async () => {
          const [method, url] = route.split(' ') as [string, string];
          const expected = await AUDIT_ROUTE_FIXTURES[route]!(ctx);
          const system = expected.by === 'system';
          const [type, id] = expected.target;
          const { entries } = await read(
            `?action=${expected.action}&target_type=${type}&target_id=${encodeURIComponent(id)}`,
            system ? server.adminKey : org.adminKey,
          );
          const entry = entries.find((candidate) => candidate.method === method && candidate.route === url);
          assert.ok(entry, `no audit entry for ${route}: ${JSON.stringify(entries)}`);
          assert.equal(entry.outcome, 'success');
          assert.ok(entry.status >= 200 && entry.status < 300);
          assert.equal(entry.actor_key_id, system ? systemKeyId : (expected.byKey ?? adminKeyId));
          assert.equal(entry.actor_role, system ? 'system_admin' : 'admin');
          assert.equal(entry.organization_id, system ? id : org.id);
          assert.match(entry.source_address, /127\.0\.0\.1|::1/);
        });
      }
    });

    it('records what changed, a creation with its id, and a firmware upload by its fields only', async () => {
      const created = await server.api<{ id: string }>('POST', '/api/v1/deployments', org.adminKey, {
        version: VERSION,
        target: { tags: ['nowhere'] },
        strategy: 'all_at_once',
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const [entry] = (await read(`?action=deployment.create&target_id=${created.body.id}`)).entries;
      assert.equal(entry?.created_id, created.body.id);
      assert.deepEqual((entry?.changes as { target?: unknown } | undefined)?.target, { tags: ['nowhere'] });

      const [upload] = (await read('?action=firmware.create&target_id=2.0.0')).entries;
      assert.deepEqual(Object.keys(upload?.changes as object).sort(), ['sha256', 'version']);

      const plan = await server.api('POST', '/api/v1/deployments', org.adminKey, {
        version: VERSION,
        target: { all: true },
        strategy: 'all_at_once',
        dry_run: true,
      });
      assert.equal(plan.status, 200);
      assert.equal((await read('?action=deployment.plan')).entries.length, 1, 'a dry run reads as a plan');
    });

    it('records refusals of the key as denied, and no entry for other refusals', async () => {
      const viewer = await server.api<{ key: string; id: string }>('POST', '/api/v1/api-keys', org.adminKey, {
        role: 'viewer',
        name: 'read-only',
      });
      const refused = await server.api('POST', '/api/v1/devices', viewer.body.key, {
        device_id: 'nope',
        current_version: '1.0.0',
      });
      assert.equal(refused.status, 403);
      const [denied] = (await read(`?outcome=denied&actor=${viewer.body.id}`)).entries;
      assert.equal(denied?.action, 'device.create');
      assert.equal(denied?.actor_key_name, 'read-only');
      assert.equal(denied?.status, 403);

      const unknown = await server.api('DELETE', '/api/v1/devices/gw-x', 'efo_not_a_key');
      assert.equal(unknown.status, 401);
      const anonymous = (await read('?outcome=denied&action=device.delete', server.adminKey)).entries;
      assert.equal(anonymous[0]?.actor_key_id, null);
      assert.equal(anonymous[0]?.organization_id, null);
      assert.equal(anonymous[0]?.target_id, 'gw-x');

      const before = (await read('?limit=1')).entries[0]!.id;
      assert.equal((await server.api('DELETE', '/api/v1/devices/not-there', org.adminKey)).status, 404);
      assert.equal((await server.api('POST', '/api/v1/devices', org.adminKey, { bad: 1 })).status, 400);
      assert.equal(
        (await read('?limit=1')).entries[0]!.id,
        before,
        'a 404 or a 400 changed nothing and is not recorded',
      );
    });

    it('never stores key material or anything named secret, token or password', async () => {
      const key = await server.api<{ id: string; key: string }>('POST', '/api/v1/api-keys', org.adminKey, {
        role: 'operator',
        name: 'deployer',
      });
      const device = await server.api<{ api_key: string }>('POST', '/api/v1/devices', org.adminKey, {
        device_id: 'gw-secret',
        current_version: '1.0.0',
      });
      const everything = JSON.stringify(await read('?limit=500'));
      assert.ok(!everything.includes(key.body.key), 'the created API key is not in the log');
      assert.ok(!everything.includes(device.body.api_key), "the device's key is not in the log");
      const [entry] = (await read(`?action=key.create&target_id=${key.body.id}`)).entries;
      assert.deepEqual(entry?.changes, { role: 'operator', name: 'deployer' });
    });

    it('filters by actor, action prefix, target, outcome and time, and pages newest first without repeats', async () => {
      for (const name of ['a', 'b', 'c']) {
        assert.equal((await server.api('PATCH', '/api/v1/devices/gw-secret', org.adminKey, { name })).status, 200);
      }
      const all = await read('?target_type=device&target_id=gw-secret');
      assert.deepEqual(
        all.entries.map((entry) => entry.action),
        ['device.update', 'device.update', 'device.update', 'device.create'],
      );
      const seen: string[] = [];
      let query = '?target_id=gw-secret&limit=3';
      for (;;) {
        const page = await read(query);
        seen.push(...page.entries.map((entry) => entry.id));
        if (!page.next_before) break;
        query = `?target_id=gw-secret&limit=3&before=${page.next_before}`;
      }
      assert.deepEqual(
        seen,
        all.entries.map((entry) => entry.id),
      );
      assert.ok(
        seen.every((id, i) => i === 0 || BigInt(id) < BigInt(seen[i - 1]!)),
        'newest first',
      );

      assert.ok((await read('?action=device.*')).entries.every((entry) => entry.action.startsWith('device.')));
      assert.ok((await read(`?actor=${adminKeyId}`)).entries.every((entry) => entry.actor_key_id === adminKeyId));
      const newest = all.entries[0]!.at;
      assert.equal((await read(`?target_id=gw-secret&since=${encodeURIComponent(newest)}`)).entries.length, 1);
      assert.equal((await read(`?target_id=gw-secret&until=${encodeURIComponent(newest)}`)).entries.length, 3);
      const bad = await server.api<{ error: { code: string } }>('GET', '/api/v1/audit?since=yesterday', org.adminKey);
      assert.equal(bad.status, 400);
      assert.equal(bad.body.error.code, 'invalid_date');
    });

    it('shows an organization only its own entries: admins read, other roles and other organizations do not', async () => {
      assert.equal(
        (await read('', other.adminKey)).entries.some((entry) => entry.organization_id === org.id),
        false,
      );
      const foreign = await server.api<{ error: { code: string } }>(
        'GET',
        `/api/v1/audit?organization_id=${org.id}`,
        other.adminKey,
      );
      assert.equal(foreign.status, 404);
      const operator = await server.api<{ key: string }>('POST', '/api/v1/api-keys', org.adminKey, {
        role: 'operator',
      });
      const refused = await server.api<{ error: { code: string } }>('GET', '/api/v1/audit', operator.body.key);
      assert.equal(refused.status, 403);
      assert.equal(refused.body.error.code, 'insufficient_role');
      const system = await read(`?organization_id=${org.id}`, server.adminKey);
      assert.ok(system.entries.length > 0 && system.entries.every((entry) => entry.organization_id === org.id));
    });

    it('is append-only: the database refuses UPDATE, DELETE and TRUNCATE, and no route edits or deletes it', async () => {
      await assert.rejects(server.db.query(`UPDATE audit_log SET action = 'forged'`), /append-only/);
      await assert.rejects(server.db.query('DELETE FROM audit_log'), /append-only/);
      await assert.rejects(server.db.query('TRUNCATE audit_log'), /append-only/);
      assert.ok((await read('?limit=1')).entries.length === 1, 'the entries are still there');
      for (const method of ['DELETE', 'PATCH', 'PUT', 'POST']) {
        const response = await server.api(method, '/api/v1/audit', org.adminKey, {});
        assert.equal(response.status, 404, `${method} /api/v1/audit`);
      }
      assert.ok(!server.services.audit.routes.some((route) => route.url.startsWith('/api/v1/audit')));
    });

    it('prunes entries past the retention only, and keeps everything with a retention of 0', async () => {
      const [last] = (await read('?limit=1', server.adminKey)).entries;
      const cutoff = new Date(Date.parse(last!.at) + 1);
      let kept: Entry | undefined;
      while (!kept || Date.parse(kept.at) <= cutoff.getTime()) {
        await server.api('PATCH', '/api/v1/devices/gw-secret', org.adminKey, { name: 'after' });
        kept = (await read('?limit=1')).entries[0];
      }
      const forever = new AuditTrail({ db: server.db, log: server.services.log, retentionDays: 0, trustProxy: false });
      assert.equal(await forever.prune(new Date('9999-01-01T00:00:00Z')), 0);

      const oneDay = new AuditTrail({ db: server.db, log: server.services.log, retentionDays: 1, trustProxy: false });
      const removed = await oneDay.prune(new Date(cutoff.getTime() + 24 * 3600 * 1000));
      assert.ok(removed > 0);
      const left = (await read('?limit=500', server.adminKey)).entries;
      assert.deepEqual(
        left.map((entry) => entry.id),
        [kept.id],
      );
      assert.equal(await oneDay.prune(new Date(cutoff.getTime() + 24 * 3600 * 1000)), 0, 'idempotent');
    });
  });
}
