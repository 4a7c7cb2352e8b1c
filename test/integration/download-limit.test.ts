/**
 * The local store serves at most EDGEFLOW_MAX_CONCURRENT_DOWNLOADS downloads at once; beyond, a
 * download waits in a line of at most EDGEFLOW_DOWNLOAD_QUEUE requests and is served when a slot
 * frees; beyond the line it is answered 503 `downloads_busy` with Retry-After (the agent waits and
 * comes back, tested in test/unit/agent-download.test.ts). Only the local store has this route
 * (S3 serves its own links), so only the local-store backends run it.
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
      server = await startTestServer(backend, {
        env: {
          EDGEFLOW_MAX_CONCURRENT_DOWNLOADS: '1',
          EDGEFLOW_DOWNLOAD_QUEUE: '1',
          EDGEFLOW_DOWNLOAD_QUEUE_WAIT_MS: '60000',
        },
      });
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

    it('holds the next download in line and serves it when the slot frees; beyond the line, 503 downloads_busy', async () => {
      // One download held open: its reader stops reading, so the server's stream stays in flight.
      const held = await new Promise<http.IncomingMessage>((resolve, reject) =>
        http.get(url, resolve).on('error', reject),
      );
      assert.equal(held.statusCode, 200);
      held.pause();
      let inLine: Promise<Awaited<ReturnType<typeof downloadSha256>>> | undefined;
      try {
        // Each probe waits in line for a moment and leaves; a place left is free for the next
        // (were it kept, the line of one would answer busy for the 60 s wait).
        for (const probe of ['first', 'second']) {
          await eventually(
            async () => (await busyAnswer()) === undefined,
            10_000,
            `the ${probe} probe is held in line`,
          );
        }
        // The line's one place, taken by a download (tried again while a probe's leaving is on its way).
        inLine = (async () => {
          for (;;) {
            const answer = await downloadSha256(url);
            if (answer.status !== 503) return answer;
            await new Promise((resolve) => setTimeout(resolve, 50));
          }
        })();
        let answered = false;
        void inLine.then(() => {
          answered = true;
        });
        await eventually(async () => (await busyAnswer()) !== undefined, 10_000, 'the line is full');
        const busy = await busyAnswer();
        assert.ok(busy, 'beyond the line: busy at once');
        assert.ok(busy.retryAfter >= 1 && busy.retryAfter <= 10, `Retry-After ${busy.retryAfter}`);
        assert.equal(busy.code, 'downloads_busy');
        const head = await fetch(url, { method: 'HEAD' });
        assert.equal(head.status, 200, 'HEAD sends no body and takes no slot');
        assert.equal(answered, false, 'the download in line waits while the slot is taken');
      } finally {
        held.destroy();
      }
      const served = await inLine;
      assert.equal(served.status, 200);
      assert.equal(served.sha256, sha256Of(image));
    });

    /** A GET's busy answer, or undefined when it was held in line (given up after a moment). */
    async function busyAnswer(): Promise<{ code: string; retryAfter: number } | undefined> {
      const response = await fetch(url, { signal: AbortSignal.timeout(1000) }).catch(() => undefined);
      if (!response) return undefined;
      assert.equal(response.status, 503);
      const body = (await response.json()) as { error: { code: string } };
      return { code: body.error.code, retryAfter: Number(response.headers.get('retry-after')) };
    }
  });
}
