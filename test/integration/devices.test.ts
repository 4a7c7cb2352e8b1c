/** The device registry through the API, on every backend under test. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const backends = await backendsUnderTest();
after(stopSharedServices);

type Device = {
  device_id: string;
  name: string | null;
  model: string | null;
  tags: string[];
  current_version: string;
  online: boolean;
  api_key?: string;
};
type ErrorBody = { error: { code: string } };

for (const backend of backends) {
  describe(`device registry on ${backend.name}`, () => {
    let server: TestServer;
    let key: string;

    before(async () => {
      server = await startTestServer(backend);
      key = (await server.createOrg()).adminKey;
    });
    after(() => server.close());

    it('creates a device with its key shown once and stored only as a hash', async () => {
      const created = await server.api<Device>('POST', '/api/v1/devices', key, {
        device_id: 'gw-001',
        name: 'Berlin gateway',
        model: 'rpi4',
        tags: ['site:berlin', 'canary'],
        current_version: '1.2.3',
      });
      assert.equal(created.status, 201);
      assert.match(created.body.api_key!, /^efd_[A-Za-z0-9_-]{43}$/);
      assert.equal(created.body.online, false);
      const fetched = await server.api<Device>('GET', '/api/v1/devices/gw-001', key);
      assert.equal(fetched.body.api_key, undefined, 'the key is never shown again');
      const [row] = await server.db.query<{ key_hash: string }>(
        "SELECT key_hash FROM devices WHERE device_id = 'gw-001'",
      );
      assert.notEqual(row!.key_hash, created.body.api_key);
      assert.match(row!.key_hash, /^[0-9a-f]{64}$/);
    });

    it('generates an id when none is given and refuses a duplicate id with 409', async () => {
      const generated = await server.api<Device>('POST', '/api/v1/devices', key, { current_version: '1.0.0' });
      assert.equal(generated.status, 201);
      assert.match(generated.body.device_id, /^dev_[0-9a-f]{20}$/);
      const duplicate = await server.api<ErrorBody>('POST', '/api/v1/devices', key, {
        device_id: 'gw-001',
        current_version: '1.0.0',
      });
      assert.equal(duplicate.status, 409);
      assert.equal(duplicate.body.error.code, 'device_exists');
    });

    it('filters by tags (all must match), model, version and online, with a cursor', async () => {
      for (const [id, model, tags, version] of [
        ['f-1', 'rpi4', ['fleet:x', 'eu'], '1.0.0'],
        ['f-2', 'rpi4', ['fleet:x'], '1.1.0'],
        ['f-3', 'rpi5', ['fleet:x', 'eu'], '1.1.0'],
      ] as const) {
        const response = await server.api('POST', '/api/v1/devices', key, {
          device_id: id,
          model,
          tags,
          current_version: version,
        });
        assert.equal(response.status, 201);
      }
      const ids = async (query: string) =>
        (await server.api<{ devices: Device[] }>('GET', `/api/v1/devices?${query}`, key)).body.devices.map(
          (d) => d.device_id,
        );
      assert.deepEqual(await ids('tag=fleet:x'), ['f-1', 'f-2', 'f-3']);
      assert.deepEqual(await ids('tag=fleet:x&tag=eu'), ['f-1', 'f-3']);
      assert.deepEqual(await ids('tag=fleet:x&model=rpi4'), ['f-1', 'f-2']);
      assert.deepEqual(await ids('tag=fleet:x&version=1.1.0'), ['f-2', 'f-3']);
      assert.deepEqual(await ids('tag=fleet:x&online=true'), []);
      const page1 = await server.api<{ devices: Device[]; next_cursor: string }>(
        'GET',
        '/api/v1/devices?tag=fleet:x&limit=2',
        key,
      );
      assert.deepEqual(
        page1.body.devices.map((d) => d.device_id),
        ['f-1', 'f-2'],
      );
      assert.deepEqual(await ids(`tag=fleet:x&limit=2&after=${page1.body.next_cursor}`), ['f-3']);
    });

    it('lists device ids in natural order, page after page (austin-2 before austin-10 before austin-100)', async () => {
      const org = await server.createOrg('natural');
      const ids = ['austin-100', 'austin-10', 'austin-1', 'austin-2', 'austin-20', 'austin-3', 'berlin-1', 'austin-b'];
      for (const id of ids) {
        const created = await server.api('POST', '/api/v1/devices', org.adminKey, {
          device_id: id,
          current_version: '1.0.0',
        });
        assert.equal(created.status, 201);
      }
      const seen: string[] = [];
      let after: string | undefined;
      for (;;) {
        const page = await server.api<{ devices: Device[]; next_cursor: string | null }>(
          'GET',
          `/api/v1/devices?limit=3${after ? `&after=${after}` : ''}`,
          org.adminKey,
        );
        seen.push(...page.body.devices.map((device) => device.device_id));
        if (!page.body.next_cursor) break;
        after = page.body.next_cursor;
      }
      assert.deepEqual(seen, [
        'austin-1',
        'austin-2',
        'austin-3',
        'austin-10',
        'austin-20',
        'austin-100',
        'austin-b',
        'berlin-1',
      ]);
    });

    it('patches name, model and tags, and deletes', async () => {
      const patched = await server.api<Device>('PATCH', '/api/v1/devices/f-1', key, { name: 'renamed', tags: ['t'] });
      assert.equal(patched.status, 200);
      assert.equal(patched.body.name, 'renamed');
      assert.deepEqual(patched.body.tags, ['t']);
      assert.equal(patched.body.model, 'rpi4', 'fields not sent stay as they were');
      assert.equal((await server.api('DELETE', '/api/v1/devices/f-1', key)).status, 204);
      assert.equal((await server.api('GET', '/api/v1/devices/f-1', key)).status, 404);
      assert.equal((await server.api('DELETE', '/api/v1/devices/f-1', key)).status, 404);
    });

    const badBodies: [string, unknown, string][] = [
      ['no current_version', { device_id: 'x-1' }, 'invalid_request'],
      ['a non-semver current_version', { current_version: 'latest' }, 'invalid_version'],
      ['a device id with a slash', { device_id: 'a/b', current_version: '1.0.0' }, 'invalid_request'],
      ['an unknown field', { current_version: '1.0.0', owner: 'me' }, 'invalid_request'],
      ['a tag with spaces', { current_version: '1.0.0', tags: ['a b'] }, 'invalid_request'],
    ];
    for (const [name, body, code] of badBodies) {
      it(`refuses a device with ${name} (400 ${code}) and creates nothing`, async () => {
        const before = await server.db.query<{ n: number }>('SELECT count(*)::int AS n FROM devices');
        const response = await server.api<ErrorBody>('POST', '/api/v1/devices', key, body);
        assert.equal(response.status, 400);
        assert.equal(response.body.error.code, code);
        const afterRows = await server.db.query<{ n: number }>('SELECT count(*)::int AS n FROM devices');
        assert.equal(afterRows[0]!.n, before[0]!.n);
      });
    }

    it('answers malformed JSON with 400 invalid_json', async () => {
      const response = await fetch(`${server.url}/api/v1/devices`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: '{"current_version": ',
      });
      assert.equal(response.status, 400);
      assert.equal(((await response.json()) as ErrorBody).error.code, 'invalid_json');
    });
  });
}
