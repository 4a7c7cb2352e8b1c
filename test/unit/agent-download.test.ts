import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FileDownloadSink, MemoryDownloadSink } from '../../src/agent/download-sink.ts';
import { DownloadFailedError, type DownloadOptions, downloadToSink } from '../../src/agent/downloader.ts';
import { silentLogger } from '../../src/agent/logger.ts';
import { withTempDir } from '../helpers/agent-fixtures.ts';
import { makeFirmware, StandInServer } from '../helpers/agent-stand-in-server.ts';

const firmware = makeFirmware(300_000);

function options(server: StandInServer, overrides: Partial<DownloadOptions> & Pick<DownloadOptions, 'sink'>) {
  return {
    link: server.firmwareLink('fw', new Date(Date.now() + 60_000)),
    size: firmware.bytes.length,
    refreshLink: async () => assert.fail('no refresh expected'),
    onBytes: () => {},
    signal: new AbortController().signal,
    maxRetries: 5,
    retryBaseMs: 5,
    retryCapMs: 20,
    idleTimeoutMs: 2_000,
    allowInsecure: true,
    logger: silentLogger,
    ...overrides,
  } satisfies DownloadOptions;
}

describe('firmware download (against a local HTTP store with Range support)', () => {
  let server: StandInServer;
  before(async () => {
    server = await StandInServer.start();
    server.addFirmware('fw', firmware.bytes);
  });
  after(() => server.close());

  it('resumes after the connection drops mid-body, fetching only the missing range', async () => {
    await withTempDir(async (dir) => {
      server.firmwareRequests.length = 0;
      server.dropNextDownloadAfterBytes = 100_000;
      const sink = new FileDownloadSink(join(dir, 'u.part'));
      await downloadToSink(options(server, { sink }));

      const [first, second, ...rest] = server.firmwareRequests;
      assert.equal(rest.length, 0);
      assert.equal(first?.range, undefined);
      assert.equal(first?.bytesSent, 100_000);
      const held = Number(/bytes=(\d+)-/.exec(second?.range ?? '')?.[1]);
      assert.ok(held > 0 && held <= 100_000, `resumed from ${second?.range}`);
      assert.equal(second?.status, 206);
      assert.equal(second?.bytesSent, firmware.bytes.length - held, 'only the missing bytes are fetched again');
      assert.equal(await sink.sha256(), firmware.sha256);
      assert.deepEqual(await readFile(join(dir, 'u.part')), firmware.bytes);
    });
  });

  it("gives a slow connect the whole idle timeout, not the 5 s Node's default HTTP agent sets on a new socket", async () => {
    // A new connection (an idle kept-alive one would be closed by the server's keep-alive timer).
    http.globalAgent.destroy();
    const sink = new MemoryDownloadSink();
    const download = downloadToSink(options(server, { sink, maxRetries: 0, idleTimeoutMs: 30_000 }));
    // The request's socket is being connected; then this process is busy for 6 s (a device under
    // load): the connect completes meanwhile, but the socket's timers run before its I/O event.
    await new Promise((resolve) => setImmediate(resolve));
    const busyUntil = Date.now() + 6_000;
    while (Date.now() < busyUntil) {
      // busy
    }
    await download;
    assert.equal(await sink.sha256(), firmware.sha256);
  });

  it('resumes a memory sink in process: the running hash continues over the second range', async () => {
    server.dropNextDownloadAfterBytes = 50_000;
    const sink = new MemoryDownloadSink();
    await downloadToSink(options(server, { sink }));
    assert.equal(await sink.offset(), firmware.bytes.length);
    assert.equal(await sink.sha256(), firmware.sha256);
  });

  it('waits out a busy server (503 + Retry-After) without counting it as a failure, however often', async () => {
    server.firmwareRequests.length = 0;
    // More busy answers than maxRetries (5) allows failures: busy is not broken.
    server.busy = { answers: 8, retryAfter: '0.001' };
    try {
      const sink = new MemoryDownloadSink();
      await downloadToSink(options(server, { sink, maxRetries: 2 }));
      assert.equal(await sink.sha256(), firmware.sha256);
      assert.deepEqual(
        server.firmwareRequests.map((request) => request.status),
        [...Array(8).fill(503), 200],
      );
      // A busy answer is read to its end, so the next request goes on the same connection (no new
      // TCP or TLS handshake per retry: a fleet waiting on a busy server opened thousands).
      assert.equal(new Set(server.firmwareRequests.map((request) => request.connection)).size, 1);
    } finally {
      server.busy = undefined;
    }
  });

  it('waits as long as Retry-After says before coming back', async () => {
    server.firmwareRequests.length = 0;
    server.busy = { answers: 1, retryAfter: '1' };
    try {
      const started = Date.now();
      await downloadToSink(options(server, { sink: new MemoryDownloadSink() }));
      assert.ok(Date.now() - started >= 1_000, 'came back no sooner than the server asked');
      assert.deepEqual(
        server.firmwareRequests.map((request) => request.status),
        [503, 200],
      );
    } finally {
      server.busy = undefined;
    }
  });

  it('asks for a fresh link when the store answers 403, and continues with it', async () => {
    const sink = new MemoryDownloadSink();
    let refreshes = 0;
    await downloadToSink(
      options(server, {
        sink,
        // Expired a second ago on the store's clock, though the timestamp claims otherwise.
        link: { ...server.firmwareLink('fw', new Date(Date.now() - 1_000)), url_expires_at: '2999-01-01T00:00:00Z' },
        refreshLink: async () => {
          refreshes++;
          return server.firmwareLink('fw', new Date(Date.now() + 60_000));
        },
      }),
    );
    assert.equal(refreshes, 1);
    assert.equal(await sink.sha256(), firmware.sha256);
  });

  it('refreshes a link whose expiry time has passed before even trying it', async () => {
    server.firmwareRequests.length = 0;
    let refreshes = 0;
    const sink = new MemoryDownloadSink();
    await downloadToSink(
      options(server, {
        sink,
        link: server.firmwareLink('fw', new Date(Date.now() - 1_000)),
        refreshLink: async () => {
          refreshes++;
          return server.firmwareLink('fw', new Date(Date.now() + 60_000));
        },
      }),
    );
    assert.equal(refreshes, 1);
    assert.deepEqual(
      server.firmwareRequests.map((r) => r.status),
      [200],
    );
  });

  it('gives up with DownloadFailedError after the configured number of retries', async () => {
    server.firmwareRequests.length = 0;
    const sink = new MemoryDownloadSink();
    const link = {
      url: `${server.baseUrl}/fw/missing?expires=${Date.now() + 60_000}`,
      url_expires_at: '2999-01-01T00:00:00Z',
    };
    await assert.rejects(downloadToSink(options(server, { sink, link, maxRetries: 2 })), DownloadFailedError);
    assert.equal(server.firmwareRequests.length, 3, 'one attempt and two retries');
  });

  it('refuses a plain http:// link unless insecure downloads are allowed', async () => {
    const sink = new MemoryDownloadSink();
    await assert.rejects(
      downloadToSink(options(server, { sink, allowInsecure: false })),
      /refusing to download over http/,
    );
  });

  it('starts over from byte 0 when the store ignores Range and answers 200', async () => {
    server.firmwareRequests.length = 0;
    server.ignoreRange = true;
    try {
      const sink = new MemoryDownloadSink();
      await sink.append(Buffer.from('bytes held from an interrupted attempt'));
      await downloadToSink(options(server, { sink }));
      assert.deepEqual(
        server.firmwareRequests.map((r) => [r.range, r.status]),
        [['bytes=38-', 200]],
      );
      assert.equal(await sink.offset(), firmware.bytes.length);
      assert.equal(await sink.sha256(), firmware.sha256);
    } finally {
      server.ignoreRange = false;
    }
  });
});
