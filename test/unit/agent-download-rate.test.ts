/**
 * The download rate a deployment's byte budget gives a device (the update command's
 * max_bytes_per_second): the downloader's pacing arithmetic, and a real download from a local
 * HTTP store that keeps to it. Only a lower bound on the time: a busy machine is slower, never faster.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { MemoryDownloadSink } from '../../src/agent/download-sink.ts';
import { downloadToSink, throttleDelayMs } from '../../src/agent/downloader.ts';
import { silentLogger } from '../../src/agent/logger.ts';
import { makeFirmware, StandInServer } from '../helpers/agent-stand-in-server.ts';

describe('download pacing', () => {
  it('waits until the bytes read so far fit the rate, and not at all without one', () => {
    assert.equal(throttleDelayMs(100_000, 0, 100_000), 1000);
    assert.equal(throttleDelayMs(100_000, 400, 100_000), 600);
    assert.equal(throttleDelayMs(100_000, 2000, 100_000), 0, 'behind the rate: read on at once');
    assert.equal(throttleDelayMs(0, 0, 100_000), 0);
    assert.equal(throttleDelayMs(1_000_000, 0, undefined), 0);
    // Whatever the chunks, after each wait the average rate is at most the limit.
    let elapsedMs = 0;
    let bytes = 0;
    for (const chunk of [65_536, 1, 30_000, 65_536, 12_345]) {
      bytes += chunk;
      elapsedMs += 3 + throttleDelayMs(bytes, elapsedMs + 3, 50_000);
      assert.ok((bytes * 1000) / elapsedMs <= 50_000 + 1e-9, `${bytes} B in ${elapsedMs} ms`);
    }
  });

  describe('a real download with a rate', () => {
    const firmware = makeFirmware(300_000);
    let server: StandInServer;
    before(async () => {
      server = await StandInServer.start();
      server.addFirmware('paced', firmware.bytes);
    });
    after(() => server.close());

    it('takes at least size / rate and arrives whole', async () => {
      const sink = new MemoryDownloadSink();
      const rate = 600_000;
      const started = Date.now();
      await downloadToSink({
        link: server.firmwareLink('paced', new Date(Date.now() + 60_000)),
        size: firmware.bytes.length,
        sink,
        refreshLink: async () => assert.fail('no refresh expected'),
        onBytes: () => {},
        signal: new AbortController().signal,
        maxRetries: 0,
        retryBaseMs: 5,
        retryCapMs: 20,
        idleTimeoutMs: 10_000,
        allowInsecure: true,
        logger: silentLogger,
        maxBytesPerSecond: rate,
      });
      const elapsedMs = Date.now() - started;
      // 300,000 bytes at 600,000 B/s: 500 ms at least (a little slack for the clock's granularity).
      assert.ok(elapsedMs >= 450, `a paced download took only ${elapsedMs} ms`);
      assert.equal(await sink.sha256(), firmware.sha256);
    });
  });
});
