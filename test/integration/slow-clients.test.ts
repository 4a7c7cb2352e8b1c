/**
 * Slow and idle clients cannot hold the server's connections: an idle socket is closed, headers
 * and request bodies dripped a byte at a time are cut off (leaving no firmware and no staging
 * file), while a slow but moving upload passes and a quiet tunnel stays open. Failed tunnel
 * authentications from one address get that address refused for a while; honest devices from
 * elsewhere connect as usual.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { CloseCode } from '../../src/protocol/tunnel.ts';
import { connectRaw, eventually, openRaw } from '../helpers/raw-device.ts';
import {
  backendsUnderTest,
  type PersistentState,
  persistentState,
  startTestServer,
  stopSharedServices,
  type TestServer,
} from '../helpers/server.ts';

const backends = await backendsUnderTest();
after(stopSharedServices);

/** A raw TCP client: what it wrote, what it got back, and when the server closed it. */
function rawClient(url: string) {
  const { hostname, port } = new URL(url);
  const socket = net.connect(Number(port), hostname);
  let received = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    received += chunk;
  });
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return { socket, closed, received: () => received };
}

async function closedWithin(closed: Promise<void>, ms: number): Promise<boolean> {
  return Promise.race([closed.then(() => true), sleep(ms).then(() => false)]);
}

/** The head of a multipart firmware upload announcing `fileBytes` of file. */
function multipartUpload(key: string, fileBytes: number, sha256 = '0'.repeat(64)) {
  const boundary = 'slowclientboundary';
  const head =
    `--${boundary}\r\nContent-Disposition: form-data; name="version"\r\n\r\n9.9.9\r\n` +
    `--${boundary}\r\nContent-Disposition: form-data; name="sha256"\r\n\r\n${sha256}\r\n` +
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="fw.bin"\r\n` +
    'Content-Type: application/octet-stream\r\n\r\n';
  const tail = `\r\n--${boundary}--\r\n`;
  const length = Buffer.byteLength(head) + fileBytes + Buffer.byteLength(tail);
  const request =
    'POST /api/v1/firmware HTTP/1.1\r\nHost: localhost\r\n' +
    `Authorization: Bearer ${key}\r\nContent-Type: multipart/form-data; boundary=${boundary}\r\n` +
    `Content-Length: ${length}\r\n\r\n${head}`;
  return { request, tail };
}

for (const backend of backends) {
  describe(`slow and idle HTTP clients on ${backend.name}`, () => {
    let server: TestServer;
    let state: PersistentState;
    let org: { id: string; adminKey: string };

    before(async () => {
      state = persistentState();
      server = await startTestServer(backend, {
        state,
        env: {
          // The idle timeout well above the headers timeout and the body-rate window: a dripping
          // client must meet those (and get its 408), not the idle cut, even when a loaded
          // machine delays its drips by a second.
          EDGEFLOW_HTTP_IDLE_TIMEOUT_MS: '2000',
          EDGEFLOW_HTTP_HEADERS_TIMEOUT_MS: '800',
          EDGEFLOW_HTTP_BODY_MIN_BYTES_PER_S: '2000',
          EDGEFLOW_HTTP_BODY_RATE_WINDOW_MS: '500',
          EDGEFLOW_HEARTBEAT_MS: '60000',
        },
      });
      org = await server.createOrg();
    });
    after(async () => {
      await server.close();
      await state.dispose();
    });

    const firmwareCount = async () =>
      (await server.api<{ firmware: unknown[] }>('GET', '/api/v1/firmware', org.adminKey)).body.firmware.length;

    it('closes sockets that never send a request', async () => {
      const clients = Array.from({ length: 50 }, () => rawClient(server.url));
      for (const client of clients) assert.equal(await closedWithin(client.closed, 15_000), true);
    });

    it('cuts off a client dripping its headers (408)', async () => {
      const client = rawClient(server.url);
      client.socket.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\n');
      const drip = setInterval(() => client.socket.write('X-Drip: 1\r\n'), 200);
      try {
        assert.equal(await closedWithin(client.closed, 15_000), true, 'the connection was not closed');
      } finally {
        clearInterval(drip);
      }
      assert.match(client.received(), /^HTTP\/1\.1 408/);
    });

    it('cuts off an upload whose body drips in, and leaves no firmware and no staging file', async () => {
      const { request } = multipartUpload(org.adminKey, 1024 * 1024);
      const client = rawClient(server.url);
      client.socket.write(request);
      // A byte every 100 ms: the socket is never idle for the idle timeout, but far below the rate.
      const drip = setInterval(() => client.socket.write('x'), 100);
      try {
        assert.equal(await closedWithin(client.closed, 15_000), true, 'the dripping upload was not cut off');
      } finally {
        clearInterval(drip);
      }
      assert.match(client.received(), /^HTTP\/1\.1 408[\s\S]*"code":"body_too_slow"/);
      assert.equal(await firmwareCount(), 0);
      if (backend.store === 'local') {
        const staging = path.join(state.storeDir!, '.staging');
        await eventually(
          async () => (await readdir(staging).catch(() => [])).length === 0,
          5000,
          'the staging directory is empty',
        );
      }
    });

    it('accepts a slow upload that keeps moving (no total request timeout)', async () => {
      const file = randomBytes(24 * 1024);
      const sha256 = createHash('sha256').update(file).digest('hex');
      const { request, tail } = multipartUpload(org.adminKey, file.length, sha256);
      const client = rawClient(server.url);
      client.socket.write(request);
      // 8 KiB/s for 3 s: above the 2,000 bytes/s floor, and longer than the 2 s idle timeout in all.
      for (let offset = 0; offset < file.length; offset += 2048) {
        client.socket.write(file.subarray(offset, offset + 2048));
        await sleep(250);
      }
      client.socket.write(tail);
      await eventually(async () => /\r\n\r\n/.test(client.received()), 10_000, 'an answer');
      assert.match(client.received(), /^HTTP\/1\.1 201/);
      client.socket.destroy();
      assert.equal(await firmwareCount(), 1);
    });

    it('keeps a quiet tunnel open past the HTTP idle timeout', async () => {
      const device = await server.api<{ device_id: string; api_key: string }>('POST', '/api/v1/devices', org.adminKey, {
        current_version: '1.0.0',
      });
      const raw = await connectRaw(server.url, { deviceId: device.body.device_id, apiKey: device.body.api_key });
      try {
        // Well past the 2 s idle timeout (and the headers timeout), with no frame in between.
        await sleep(3500);
        assert.equal(raw.ws.readyState, raw.ws.OPEN);
        raw.send({ type: 'ping', id: 'p1' });
        assert.equal((await raw.next('pong')).id, 'p1');
      } finally {
        await raw.close();
      }
    });
  });

  describe(`failed tunnel authentications on ${backend.name}`, () => {
    let server: TestServer;
    let org: { id: string; adminKey: string };

    before(async () => {
      server = await startTestServer(backend, {
        env: {
          EDGEFLOW_TUNNEL_AUTH_FAILURES_MAX: '5',
          EDGEFLOW_TUNNEL_AUTH_FAILURE_WINDOW_MS: '60000',
          EDGEFLOW_TUNNEL_AUTH_BLOCK_MS: '60000',
        },
      });
      org = await server.createOrg();
    });
    after(() => server.close());

    const newDevice = async () => {
      const { body } = await server.api<{ device_id: string; api_key: string }>(
        'POST',
        '/api/v1/devices',
        org.adminKey,
        {
          current_version: '1.0.0',
        },
      );
      return { deviceId: body.device_id, apiKey: body.api_key };
    };

    async function badConnect(localAddress: string) {
      const raw = await openRaw(server.url, { localAddress });
      raw.send({ type: 'connect', device_id: 'guess', api_key: randomBytes(8).toString('hex') });
      return raw.closed;
    }

    it('answers a guessing address 1013 once it failed too often, while valid devices on it connect', async () => {
      const honest = await newDevice();
      const neighbour = await newDevice();
      // The guesser on 127.0.0.3: each failure an ordinary 4003 until its fifth wrong key.
      for (let i = 0; i < 4; i++) assert.equal((await badConnect('127.0.0.3')).code, CloseCode.authFailed);
      const before = await connectRaw(server.url, honest, { localAddress: '127.0.0.3' });
      await before.close();
      assert.equal((await badConnect('127.0.0.3')).code, CloseCode.tryAgainLater);
      for (let i = 0; i < 20; i++) {
        const refused = await badConnect('127.0.0.3');
        assert.equal(refused.code, CloseCode.tryAgainLater);
        assert.match(refused.reason, /too many failed authentications from this address; retry in \d+ s/);
      }
      // Devices behind the same address (one NAT) with valid keys connect all the same.
      for (const device of [honest, neighbour]) {
        const behindTheNat = await connectRaw(server.url, device, { localAddress: '127.0.0.3' });
        assert.equal(behindTheNat.ws.readyState, behindTheNat.ws.OPEN);
        await behindTheNat.close();
      }
      // Other addresses are not affected, however the flood goes on.
      assert.equal((await badConnect('127.0.0.4')).code, CloseCode.authFailed);
    });

    it('slows one wrong key retried from an address without blocking the address for other keys', async () => {
      const stale = { device_id: 'stale', api_key: randomBytes(8).toString('hex') };
      const codes: number[] = [];
      for (let i = 0; i < 7; i++) {
        const raw = await openRaw(server.url, { localAddress: '127.0.0.5' });
        raw.send({ type: 'connect', ...stale });
        codes.push((await raw.closed).code);
      }
      const { authFailed, tryAgainLater } = CloseCode;
      assert.deepEqual(codes, [
        authFailed,
        authFailed,
        authFailed,
        authFailed,
        tryAgainLater,
        tryAgainLater,
        tryAgainLater,
      ]);
      assert.equal((await badConnect('127.0.0.5')).code, authFailed, 'another wrong key is an ordinary failure');
    });
  });
}
