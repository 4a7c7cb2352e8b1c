/**
 * Organization scoping and roles: with another organization's keys, every read, write,
 * delete and link of this one is refused as 404 (so nothing leaks that it exists); a viewer
 * key cannot write; the system key cannot act inside an organization.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { downloadSha256, makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const backends = await backendsUnderTest();
after(stopSharedServices);

type ErrorBody = { error: { code: string; message: string } };

for (const backend of backends) {
  describe(`tenant isolation on ${backend.name}`, () => {
    let server: TestServer;
    let orgA: { id: string; adminKey: string };
    let orgB: { id: string; adminKey: string };
    let storageKeyA: string;
    let linkA: string;

    before(async () => {
      server = await startTestServer(backend);
      orgA = await server.createOrg('a');
      orgB = await server.createOrg('b');
      const file = await makeFirmwareFile(32 * 1024);
      const upload = await postFirmware(server.url, orgA.adminKey, { version: '1.0.0', sha256: file.sha256 }, file);
      assert.equal(upload.status, 201);
      storageKeyA = upload.body.storage_key as string;
      const device = await server.api('POST', '/api/v1/devices', orgA.adminKey, {
        device_id: 'gw-a',
        current_version: '0.9.0',
        tags: ['secret-site'],
      });
      assert.equal(device.status, 201);
      const link = await server.api<{ url: string }>('POST', '/api/v1/firmware/1.0.0/download-url', orgA.adminKey);
      linkA = link.body.url;
    });
    after(() => server.close());

    const foreignCalls: [string, string, unknown?][] = [
      ['GET', '/api/v1/devices/gw-a'],
      ['PATCH', '/api/v1/devices/gw-a', { name: 'stolen' }],
      ['DELETE', '/api/v1/devices/gw-a'],
      ['GET', '/api/v1/firmware/1.0.0'],
      ['DELETE', '/api/v1/firmware/1.0.0'],
      ['POST', '/api/v1/firmware/1.0.0/download-url'],
    ];
    for (const [method, path, body] of foreignCalls) {
      it(`answers ${method} ${path} with another organization's key as 404`, async () => {
        const response = await server.api<ErrorBody>(method, path, orgB.adminKey, body);
        assert.equal(response.status, 404, JSON.stringify(response.body));
        assert.match(response.body.error.code, /_not_found$/);
      });
    }

    it("lists none of the other organization's devices or firmware, even by filter", async () => {
      const devices = await server.api<{ devices: unknown[] }>('GET', '/api/v1/devices?tag=secret-site', orgB.adminKey);
      assert.deepEqual(devices.body.devices, []);
      const firmware = await server.api<{ firmware: unknown[] }>('GET', '/api/v1/firmware', orgB.adminKey);
      assert.deepEqual(firmware.body.firmware, []);
      // …and A still has everything B tried to change or delete.
      const device = await server.api<{ name: string | null }>('GET', '/api/v1/devices/gw-a', orgA.adminKey);
      assert.equal(device.status, 200);
      assert.equal(device.body.name, null);
      assert.equal((await server.api('GET', '/api/v1/firmware/1.0.0', orgA.adminKey)).status, 200);
    });

    it('lets each organization use the same device id and version independently', async () => {
      const sameId = await server.api('POST', '/api/v1/devices', orgB.adminKey, {
        device_id: 'gw-a',
        current_version: '5.0.0',
      });
      assert.equal(sameId.status, 201);
      const mine = await server.api<{ current_version: string }>('GET', '/api/v1/devices/gw-a', orgA.adminKey);
      assert.equal(mine.body.current_version, '0.9.0');
    });

    if (backend.store === 'local') {
      // Our own HMAC links; s3rver does not check S3 signatures, so this belongs to the local store.
      it("refuses a link re-pointed at another organization's path, a tampered one and an expired one with 403", async () => {
        const valid = await downloadSha256(linkA);
        assert.equal(valid.status, 200);
        const repointed = linkA.replace(`/firmware/${orgA.id}/`, `/firmware/${orgB.id}/`);
        assert.notEqual(repointed, linkA);
        const response = await fetch(repointed);
        assert.equal(response.status, 403);
        assert.equal(((await response.json()) as ErrorBody).error.code, 'link_invalid');

        const url = new URL(linkA);
        const signature = url.searchParams.get('signature')!;
        url.searchParams.set('signature', `${signature.slice(0, -1)}${signature.endsWith('0') ? '1' : '0'}`);
        const tampered = await fetch(url);
        assert.equal(tampered.status, 403);
        assert.equal(((await tampered.json()) as ErrorBody).error.code, 'link_invalid');

        const longer = new URL(linkA);
        longer.searchParams.set('expires', String(Number(longer.searchParams.get('expires')) + 3600));
        assert.equal((await fetch(longer)).status, 403, 'extending the expiry breaks the signature');

        const expired = await server.api<{ url: string }>(
          'POST',
          '/api/v1/firmware/1.0.0/download-url',
          orgA.adminKey,
          {
            expires_in_seconds: 1,
          },
        );
        await new Promise((resolve) => setTimeout(resolve, 2100));
        const late = await fetch(expired.body.url);
        assert.equal(late.status, 403);
        assert.equal(((await late.json()) as ErrorBody).error.code, 'link_expired');
      });

      it('serves byte ranges (206) and refuses impossible ones (416)', async () => {
        const partial = await fetch(linkA, { headers: { range: 'bytes=100-199' } });
        assert.equal(partial.status, 206);
        assert.equal(partial.headers.get('content-range'), `bytes 100-199/${32 * 1024}`);
        assert.equal((await partial.arrayBuffer()).byteLength, 100);
        const beyond = await fetch(linkA, { headers: { range: `bytes=${32 * 1024}-` } });
        assert.equal(beyond.status, 416);
        assert.equal(beyond.headers.get('content-range'), `bytes */${32 * 1024}`);
        assert.ok(storageKeyA.endsWith('.bin'));
      });
    }

    it('lets a viewer read but not write, and an operator not manage keys', async () => {
      const viewer = await server.api<{ key: string }>('POST', '/api/v1/api-keys', orgA.adminKey, { role: 'viewer' });
      assert.equal(viewer.status, 201);
      const operator = await server.api<{ key: string }>('POST', '/api/v1/api-keys', orgA.adminKey, {
        role: 'operator',
      });
      assert.equal((await server.api('GET', '/api/v1/devices/gw-a', viewer.body.key)).status, 200);
      const writes: [string, string, unknown?][] = [
        ['POST', '/api/v1/devices', { current_version: '1.0.0' }],
        ['PATCH', '/api/v1/devices/gw-a', { name: 'x' }],
        ['DELETE', '/api/v1/devices/gw-a'],
        ['DELETE', '/api/v1/firmware/1.0.0'],
        ['POST', '/api/v1/api-keys', { role: 'admin' }],
      ];
      for (const [method, path, body] of writes) {
        const response = await server.api<ErrorBody>(method, path, viewer.body.key, body);
        assert.equal(response.status, 403, `${method} ${path}`);
        assert.equal(response.body.error.code, 'insufficient_role');
      }
      const upload = await postFirmware(server.url, viewer.body.key, { version: '1.1.0', sha256: 'a'.repeat(64) });
      assert.equal(upload.status, 403);
      const keyByOperator = await server.api<ErrorBody>('POST', '/api/v1/api-keys', operator.body.key, {
        role: 'admin',
      });
      assert.equal(keyByOperator.status, 403);
    });

    it('refuses requests without a key, with an unknown key, and organization calls with the system key', async () => {
      const none = await server.api<ErrorBody>('GET', '/api/v1/devices', undefined);
      assert.equal(none.status, 401);
      assert.equal(none.body.error.code, 'unauthorized');
      assert.equal((await server.api('GET', '/api/v1/devices', 'efo_nope')).status, 401);
      const system = await server.api<ErrorBody>('GET', '/api/v1/devices', server.adminKey);
      assert.equal(system.status, 403);
      assert.equal(system.body.error.code, 'organization_key_required');
      const orgByOrgAdmin = await server.api<ErrorBody>('POST', '/api/v1/orgs', orgA.adminKey, { name: 'x' });
      assert.equal(orgByOrgAdmin.status, 403);
      assert.equal(orgByOrgAdmin.body.error.code, 'system_admin_required');
    });

    it('stops accepting a revoked key at once', async () => {
      const temp = await server.api<{ id: string; key: string }>('POST', '/api/v1/api-keys', orgA.adminKey, {
        role: 'viewer',
      });
      assert.equal((await server.api('GET', '/api/v1/devices', temp.body.key)).status, 200);
      assert.equal((await server.api('DELETE', `/api/v1/api-keys/${temp.body.id}`, orgB.adminKey)).status, 404);
      assert.equal((await server.api('DELETE', `/api/v1/api-keys/${temp.body.id}`, orgA.adminKey)).status, 204);
      assert.equal((await server.api('GET', '/api/v1/devices', temp.body.key)).status, 401);
    });
  });
}
