/**
 * The local store serves at most EDGEFLOW_MAX_CONCURRENT_DOWNLOADS downloads at once; beyond, a
 * download is answered 503 `downloads_busy` with Retry-After (the agent waits and comes back,
 * tested in test/unit/agent-download.test.ts), and is served once a slot is free. Only the local
 * store has this route (S3 serves its own links), so only the local-store backends run it.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { downloadSha256, postFirmware, sha256Of } from '../helpers/firmware.ts';
import { eventually } from '../helpers/raw-device.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const backends = (await backendsUnderTest({ everyCombination: true })).filter((backend) => backend.store === 'local');
const image = Buffer.alloc(16 * 1024 * 1024, 3);

for (const backend of backends) {
  describe(`download limit on ${backend.name}`, () => {
    let server: TestServer;
    let url: string;
    before(async () => {
      server = await startTestServer(backend, { env: { EDGEFLOW_MAX_CONCURRENT_DOWNLOADS: '1' } });
      const org = await server.createOrg('downloads');
      const upload = await postFirmware(
        server.url,
        org.adminKey,
        { version: '2.0.0', sha256: sha256Of(image) },
        { content: image },
      );
      assert.equal(upload.status, 201, JSON.stringify(upload.body));
      const link = await server.api<{ url: string }>('POST', '/api/v1/firmware/2.0.0/download-url', org.adminKey);
      url = link.body.url;
    });
    after(async () => {
      await server.close();
      await stopSharedServices();
    });

    it('answers 503 downloads_busy with Retry-After while the slots are taken, and serves once one is free', async () => {
      // One download held open: its reader stops reading, so the server's stream stays in flight.
      const held = await new Promise<http.IncomingMessage>((resolve, reject) =>
        http.get(url, resolve).on('error', reject),
      );
      assert.equal(held.statusCode, 200);
      held.pause();
      try {
        const busy = await fetch(url);
        assert.equal(busy.status, 503);
        const retryAfter = Number(busy.headers.get('retry-after'));
        assert.ok(retryAfter >= 1 && retryAfter <= 5, `Retry-After ${busy.headers.get('retry-after')}`);
        const body = (await busy.json()) as { error: { code: string; message: string } };
        assert.equal(body.error.code, 'downloads_busy');
        const head = await fetch(url, { method: 'HEAD' });
        assert.equal(head.status, 200, 'HEAD sends no body and takes no slot');
      } finally {
        held.destroy();
      }
      let served: Awaited<ReturnType<typeof downloadSha256>> | undefined;
      await eventually(
        async () => {
          served = await downloadSha256(url);
          return served.status === 200;
        },
        10_000,
        'the slot freed by the closed download serves the next',
      );
      assert.equal(served?.sha256, sha256Of(image));
    });
  });
}
