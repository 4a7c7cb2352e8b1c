/**
 * Firmware registry against the real server on every backend under test: streamed upload,
 * download through the issued link, and every kind of bad input refused with its own code
 * and nothing left behind in the database or the store.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  downloadSha256,
  type FirmwareFile,
  makeFirmwareFile,
  postFirmware,
  putFirmware,
  sha256Of,
} from '../helpers/firmware.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const MAX_BYTES = 4 * 1024 * 1024;
const backends = await backendsUnderTest({ everyCombination: true });
after(stopSharedServices);

for (const backend of backends) {
  describe(`firmware registry on ${backend.name}`, () => {
    let server: TestServer;
    let org: { id: string; adminKey: string };
    let small: FirmwareFile;

    before(async () => {
      server = await startTestServer(backend, { env: { EDGEFLOW_FIRMWARE_MAX_BYTES: String(MAX_BYTES) } });
      org = await server.createOrg('acme');
      small = await makeFirmwareFile(64 * 1024);
    });
    after(() => server.close());

    /** Objects of this organization (and staged leftovers) that no firmware row accounts for. */
    async function leftovers(): Promise<string[]> {
      const rows = await server.db.query<{ storage_key: string }>(
        'SELECT storage_key FROM firmware WHERE organization_id = $1',
        [org.id],
      );
      const known = new Set(rows.map((row) => row.storage_key));
      const keys = await server.store.listKeys('');
      return keys.filter(
        (key) => (key.startsWith(`firmware/${org.id}/`) || key.includes('staging')) && !known.has(key),
      );
    }

    async function firmwareRows(version: string): Promise<number> {
      const [row] = await server.db.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM firmware WHERE organization_id = $1 AND version = $2',
        [org.id, version],
      );
      return row!.n;
    }

    it('uploads a 50 MiB firmware streamed and serves the same bytes through the issued link', async () => {
      const big = await makeFirmwareFile(50 * 1024 * 1024);
      const bigServer = await startTestServer(backend);
      try {
        const bigOrg = await bigServer.createOrg('big');
        const upload = await postFirmware(
          bigServer.url,
          bigOrg.adminKey,
          { version: '2.0.0', sha256: big.sha256, release_notes: 'big one', compatible_models: 'rpi4,rpi5' },
          { path: big.path },
        );
        assert.equal(upload.status, 201, JSON.stringify(upload.body));
        assert.equal(upload.body.size, big.size);
        assert.equal(upload.body.sha256, big.sha256);
        assert.equal(upload.body.storage_key, `firmware/${bigOrg.id}/2.0.0/${big.sha256}.bin`);
        assert.deepEqual(upload.body.compatible_models, ['rpi4', 'rpi5']);
        const link = await bigServer.api<{ url: string; expires_at: string }>(
          'POST',
          '/api/v1/firmware/2.0.0/download-url',
          bigOrg.adminKey,
        );
        assert.equal(link.status, 200);
        const lifetimeSeconds = (Date.parse(link.body.expires_at) - Date.now()) / 1000;
        assert.ok(lifetimeSeconds > 3500 && lifetimeSeconds <= 3600, `link lifetime ${lifetimeSeconds}s`);
        const downloaded = await downloadSha256(link.body.url);
        assert.equal(downloaded.status, 200);
        assert.equal(downloaded.size, big.size);
        assert.equal(downloaded.sha256, big.sha256);
      } finally {
        await bigServer.close();
      }
    });

    it('lists, gets and deletes firmware; identical re-upload is 200, other content is 409', async () => {
      const first = await postFirmware(server.url, org.adminKey, { version: '1.0.0', sha256: small.sha256 }, small);
      assert.equal(first.status, 201);
      const again = await postFirmware(server.url, org.adminKey, { version: '1.0.0', sha256: small.sha256 }, small);
      assert.equal(again.status, 200, 'identical content is not a conflict');
      assert.equal(again.body.created_at, first.body.created_at);

      const other = Buffer.from('other content');
      const conflict = await postFirmware(
        server.url,
        org.adminKey,
        { version: '1.0.0', sha256: sha256Of(other) },
        { content: other },
      );
      assert.equal(conflict.status, 409);
      assert.equal(conflict.body.error?.code, 'version_exists');

      const list = await server.api<{ firmware: { version: string }[] }>('GET', '/api/v1/firmware', org.adminKey);
      assert.deepEqual(
        list.body.firmware.map((f) => f.version),
        ['1.0.0'],
      );
      const one = await server.api('GET', '/api/v1/firmware/1.0.0', org.adminKey);
      assert.equal(one.status, 200);
      assert.equal(one.body.sha256, small.sha256);

      const removed = await server.api('DELETE', '/api/v1/firmware/1.0.0', org.adminKey);
      assert.equal(removed.status, 204);
      assert.equal((await server.api('GET', '/api/v1/firmware/1.0.0', org.adminKey)).status, 404);
      assert.equal(await firmwareRows('1.0.0'), 0);
      assert.equal(await server.store.exists(first.body.storage_key as string), false);
      assert.deepEqual(await leftovers(), []);
    });

    it('refuses to delete firmware that devices run (they may need it to recover)', async () => {
      const upload = await postFirmware(server.url, org.adminKey, { version: '1.5.0', sha256: small.sha256 }, small);
      assert.equal(upload.status, 201);
      const device = await server.api('POST', '/api/v1/devices', org.adminKey, { current_version: '1.5.0' });
      assert.equal(device.status, 201);
      const refused = await server.api<{ error: { code: string } }>('DELETE', '/api/v1/firmware/1.5.0', org.adminKey);
      assert.equal(refused.status, 409);
      assert.equal(refused.body.error.code, 'firmware_in_use');
      assert.equal(await server.store.exists(upload.body.storage_key as string), true);
    });

    const badUploads: {
      name: string;
      fields: () => Record<string, string>;
      file?: () => { content?: Buffer; path?: string; filename?: string };
      status: number;
      code: string;
    }[] = [
      {
        name: 'declared checksum differs from the computed one',
        fields: () => ({ version: '3.0.0', sha256: sha256Of('something else') }),
        file: () => ({ path: small.path }),
        status: 422,
        code: 'checksum_mismatch',
      },
      {
        name: 'malformed checksum',
        fields: () => ({ version: '3.0.1', sha256: 'abc123' }),
        file: () => ({ path: small.path }),
        status: 400,
        code: 'invalid_checksum',
      },
      ...['../x', '1.0.0/../../a', '', 'x'.repeat(300), 'v1.0.0', '1.0', '1.0.0 beta', '1.0.0\\..\\a'].map(
        (version) => ({
          name: `non-semver version ${JSON.stringify(version.length > 20 ? `${version.slice(0, 10)}…(${version.length})` : version)}`,
          fields: () => ({ version, sha256: small.sha256 }),
          file: () => ({ path: small.path }),
          status: 400,
          code: 'invalid_version',
        }),
      ),
      {
        name: 'a file of no artifact kind (.exe)',
        fields: () => ({ version: '3.0.2', sha256: small.sha256 }),
        file: () => ({ path: small.path, filename: 'firmware.exe' }),
        status: 400,
        code: 'invalid_file_type',
      },
      {
        name: 'an empty file',
        fields: () => ({ version: '3.0.3', sha256: sha256Of('') }),
        file: () => ({ content: Buffer.alloc(0) }),
        status: 400,
        code: 'empty_file',
      },
      {
        name: 'a file over the size limit',
        fields: () => ({ version: '3.0.4', sha256: sha256Of(Buffer.alloc(MAX_BYTES + 1)) }),
        file: () => ({ content: Buffer.alloc(MAX_BYTES + 1) }),
        status: 413,
        code: 'file_too_large',
      },
      {
        name: 'missing version',
        fields: () => ({ sha256: small.sha256 }),
        file: () => ({ path: small.path }),
        status: 400,
        code: 'missing_field',
      },
      {
        name: 'missing sha256',
        fields: () => ({ version: '3.0.5' }),
        file: () => ({ path: small.path }),
        status: 400,
        code: 'missing_field',
      },
      {
        name: 'missing file',
        fields: () => ({ version: '3.0.6', sha256: small.sha256 }),
        status: 400,
        code: 'missing_file',
      },
    ];

    for (const bad of badUploads) {
      it(`refuses ${bad.name} (${bad.status} ${bad.code}) and keeps nothing`, async () => {
        const fields = bad.fields();
        const result = await postFirmware(server.url, org.adminKey, fields, bad.file?.());
        assert.equal(result.status, bad.status, JSON.stringify(result.body));
        assert.equal(result.body.error?.code, bad.code);
        assert.equal(typeof result.body.error?.message, 'string');
        if (fields.version) assert.equal(await firmwareRows(fields.version), 0);
        assert.deepEqual(await leftovers(), []);
      });
    }

    it('accepts every artifact kind an installer takes, keeps the kind in the key and in the link', async () => {
      const kinds = [
        ['bin', 'firmware.bin'],
        ['img', 'sdcard.IMG'],
        ['ext4', 'rootfs.ext4'],
        ['raucb', 'update-4.0.3.raucb'],
        ['swu', 'gateway.swu'],
      ] as const;
      for (const [index, [kind, filename]] of kinds.entries()) {
        const version = `4.0.${index}`;
        const upload = await postFirmware(
          server.url,
          org.adminKey,
          { version, sha256: small.sha256 },
          { path: small.path, filename },
        );
        assert.equal(upload.status, 201, `${filename}: ${JSON.stringify(upload.body)}`);
        assert.equal(upload.body.artifact_type, kind);
        assert.equal(upload.body.storage_key, `firmware/${org.id}/${version}/${small.sha256}.${kind}`);
        const listed = await server.api<{ artifact_type: string }>('GET', `/api/v1/firmware/${version}`, org.adminKey);
        assert.equal(listed.body.artifact_type, kind);
        const link = await server.api<{ url: string }>(
          'POST',
          `/api/v1/firmware/${version}/download-url`,
          org.adminKey,
          {},
        );
        // What the agent reads the kind from when the update names none (src/agent/ota-policy.ts).
        assert.ok(new URL(link.body.url).pathname.endsWith(`.${kind}`), link.body.url);
        assert.equal((await downloadSha256(link.body.url)).sha256, small.sha256);
      }
      const again = await postFirmware(
        server.url,
        org.adminKey,
        { version: '4.0.3', sha256: small.sha256 },
        { path: small.path, filename: 'same-bytes.swu' },
      );
      assert.equal(again.status, 409, 'the same version as another kind is other content');
      assert.equal(again.body.error?.code, 'version_exists');
      assert.deepEqual(await leftovers(), []);
    });

    /** A hand-made multipart body: parts in exactly the given order. */
    async function postParts(parts: { name: string; value: string | Buffer; filename?: string }[]) {
      const boundary = 'edgeflowparts';
      const chunks: Buffer[] = [];
      for (const part of parts) {
        const disposition = `form-data; name="${part.name}"${part.filename ? `; filename="${part.filename}"` : ''}`;
        chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: ${disposition}\r\n\r\n`));
        chunks.push(Buffer.from(part.value));
        chunks.push(Buffer.from('\r\n'));
      }
      chunks.push(Buffer.from(`--${boundary}--\r\n`));
      const response = await fetch(`${server.url}/api/v1/firmware`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${org.adminKey}`,
          'content-type': `multipart/form-data; boundary=${boundary}`,
        },
        body: Buffer.concat(chunks),
      });
      return {
        status: response.status,
        body: (await response.json()) as { error?: { code: string; message: string } },
      };
    }

    it('refuses a second file part with 400 and commits nothing, not even the first file', async () => {
      const content = Buffer.alloc(32 * 1024, 5);
      const result = await postParts([
        { name: 'version', value: '3.3.0' },
        { name: 'sha256', value: sha256Of(content) },
        { name: 'file', value: content, filename: 'a.bin' },
        { name: 'file', value: content, filename: 'b.bin' },
      ]);
      assert.equal(result.status, 400, JSON.stringify(result.body));
      assert.equal(result.body.error?.code, 'unexpected_part');
      assert.equal(await firmwareRows('3.3.0'), 0);
      assert.deepEqual(await leftovers(), []);
    });

    it('refuses a field after the file with 400 field_after_file, naming it, and commits nothing', async () => {
      const content = Buffer.alloc(32 * 1024, 6);
      const result = await postParts([
        { name: 'version', value: '3.4.0' },
        { name: 'sha256', value: sha256Of(content) },
        { name: 'file', value: content, filename: 'a.bin' },
        { name: 'release_notes', value: 'too late' },
      ]);
      assert.equal(result.status, 400, JSON.stringify(result.body));
      assert.equal(result.body.error?.code, 'field_after_file');
      assert.match(result.body.error?.message ?? '', /release_notes/);
      assert.equal(await firmwareRows('3.4.0'), 0);
      assert.deepEqual(await leftovers(), []);
      const ordered = await postParts([
        { name: 'version', value: '3.4.0' },
        { name: 'sha256', value: sha256Of(content) },
        { name: 'release_notes', value: 'in time' },
        { name: 'file', value: content, filename: 'a.bin' },
      ]);
      assert.equal(ordered.status, 201, 'the same upload with its fields first is accepted');
    });

    /**
     * Sends `head`, then zeros chunked (no Content-Length) up to twice the limit, then `tail`;
     * resolves with the answer's status once the server has also closed the connection (the
     * unread rest of the body is refused by closing it, so a half-read upload can hold neither a
     * socket nor a shutdown).
     */
    async function sendChunkedPastLimit(method: string, urlPath: string, contentType: string, head: Buffer, tail = '') {
      let serverClosed!: Promise<void>;
      const status = await new Promise<number>((resolve) => {
        const request = http.request(`${server.url}${urlPath}`, {
          method,
          headers: {
            authorization: `Bearer ${org.adminKey}`,
            'content-type': contentType,
            'transfer-encoding': 'chunked',
          },
        });
        request.on('response', (response) => {
          response.resume();
          assert.equal(response.headers.connection, 'close');
          resolve(response.statusCode ?? 0);
        });
        request.on('error', () => {});
        request.on('socket', (socket) => {
          serverClosed = new Promise((closed) => socket.once('close', () => closed()));
        });
        request.write(head);
        const chunk = Buffer.alloc(256 * 1024, 7);
        let sent = 0;
        const pump = () => {
          while (sent <= MAX_BYTES * 2) {
            sent += chunk.length;
            if (!request.write(chunk)) return request.once('drain', pump);
          }
          request.end(tail);
        };
        pump();
      });
      await serverClosed;
      return status;
    }

    /** Sends `head` and 1 MiB of a body announced as 3 MiB, then hangs up; resolves once nothing of it is left. */
    async function cutOffUpload(method: string, urlPath: string, contentType: string, head: string) {
      await new Promise<void>((resolve) => {
        const request = http.request(`${server.url}${urlPath}`, {
          method,
          headers: {
            authorization: `Bearer ${org.adminKey}`,
            'content-type': contentType,
            'content-length': String(3 * 1024 * 1024),
          },
        });
        request.on('error', () => resolve());
        request.on('close', () => resolve());
        request.write(head);
        request.write(Buffer.alloc(1024 * 1024, 1), () => {
          setTimeout(() => request.destroy(), 200);
        });
      });
      // The server notices the hang-up asynchronously; give it a moment to clean up.
      let left: string[] = [];
      for (let attempt = 0; attempt < 50; attempt++) {
        left = await leftovers();
        if (left.length === 0) break;
        await sleep(100);
      }
      assert.deepEqual(left, []);
      assert.equal((await server.api('GET', '/healthz', undefined)).status, 200);
    }

    it('refuses a chunked upload (no Content-Length) once it passes the limit, keeping nothing', async () => {
      const boundary = 'edgeflowboundary';
      const head = Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="version"\r\n\r\n3.1.0\r\n` +
          `--${boundary}\r\nContent-Disposition: form-data; name="sha256"\r\n\r\n${small.sha256}\r\n` +
          `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="f.bin"\r\n` +
          'Content-Type: application/octet-stream\r\n\r\n',
      );
      const multipart = `multipart/form-data; boundary=${boundary}`;
      const status = await sendChunkedPastLimit('POST', '/api/v1/firmware', multipart, head, `\r\n--${boundary}--\r\n`);
      assert.equal(status, 413);
      assert.equal(await firmwareRows('3.1.0'), 0);
      assert.deepEqual(await leftovers(), []);
    });

    it('keeps nothing of an upload cut off mid-file, and goes on serving', async () => {
      const boundary = 'edgeflowboundary';
      await cutOffUpload(
        'POST',
        '/api/v1/firmware',
        `multipart/form-data; boundary=${boundary}`,
        `--${boundary}\r\nContent-Disposition: form-data; name="version"\r\n\r\n3.2.0\r\n` +
          `--${boundary}\r\nContent-Disposition: form-data; name="sha256"\r\n\r\n${small.sha256}\r\n` +
          `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="f.bin"\r\n\r\n`,
      );
      assert.equal(await firmwareRows('3.2.0'), 0);
    });

    describe('raw upload (PUT /api/v1/firmware/{version}, the file as an application/octet-stream body)', () => {
      it('stores the body as the form does (kind from filename, models, notes); identical is 200, other content 409', async () => {
        // Over three of the store's 1 MiB slots, with a tail that is not a whole block.
        const file = await makeFirmwareFile(3 * 1024 * 1024 + 123, 'rootfs.ext4');
        const query = { sha256: file.sha256, filename: 'rootfs.ext4' };
        const models = { compatible_models: ['rpi4', 'rpi5, cm4'], release_notes: 'raw one' };
        const put = await putFirmware(server.url, org.adminKey, '6.0.0', { ...query, ...models }, file);
        assert.equal(put.status, 201, JSON.stringify(put.body));
        assert.equal(put.body.size, file.size);
        assert.equal(put.body.artifact_type, 'ext4');
        assert.equal(put.body.storage_key, `firmware/${org.id}/6.0.0/${file.sha256}.ext4`);
        assert.deepEqual(put.body.compatible_models, ['rpi4', 'rpi5', 'cm4']);
        assert.equal(put.body.release_notes, 'raw one');
        const link = await server.api<{ url: string }>('POST', '/api/v1/firmware/6.0.0/download-url', org.adminKey, {});
        assert.equal((await downloadSha256(link.body.url)).sha256, file.sha256);
        const again = await putFirmware(server.url, org.adminKey, '6.0.0', query, file);
        assert.equal(again.status, 200, 'identical content is not a conflict');
        assert.equal(again.body.created_at, put.body.created_at);
        const other = Buffer.from('other content');
        const conflict = await putFirmware(
          server.url,
          org.adminKey,
          '6.0.0',
          { sha256: sha256Of(other), filename: 'rootfs.ext4' },
          { content: other },
        );
        assert.equal(conflict.status, 409);
        assert.equal(conflict.body.error?.code, 'version_exists');
        assert.deepEqual(await leftovers(), []);
      });

      const rawRefusals: {
        name: string;
        version?: string;
        query: () => Record<string, string>;
        content?: () => Buffer;
        contentType?: string;
        status: number;
        code: string;
      }[] = [
        {
          name: 'declared checksum differs from the computed one',
          query: () => ({ sha256: sha256Of('something else'), filename: 'f.bin' }),
          status: 422,
          code: 'checksum_mismatch',
        },
        {
          name: 'malformed checksum',
          query: () => ({ sha256: 'abc123', filename: 'f.bin' }),
          status: 400,
          code: 'invalid_checksum',
        },
        { name: 'missing sha256', query: () => ({ filename: 'f.bin' }), status: 400, code: 'missing_field' },
        { name: 'missing filename', query: () => ({ sha256: small.sha256 }), status: 400, code: 'missing_field' },
        {
          name: 'a file of no artifact kind (.exe)',
          query: () => ({ sha256: small.sha256, filename: 'f.exe' }),
          status: 400,
          code: 'invalid_file_type',
        },
        {
          name: 'a non-semver version',
          version: '1.0',
          query: () => ({ sha256: small.sha256, filename: 'f.bin' }),
          status: 400,
          code: 'invalid_version',
        },
        {
          name: 'bad compatible_models',
          query: () => ({ sha256: small.sha256, filename: 'f.bin', compatible_models: 'a b' }),
          status: 400,
          code: 'invalid_compatible_models',
        },
        {
          name: 'an empty body',
          query: () => ({ sha256: sha256Of(''), filename: 'f.bin' }),
          content: () => Buffer.alloc(0),
          status: 400,
          code: 'empty_file',
        },
        {
          name: 'a body over the size limit (Content-Length)',
          query: () => ({ sha256: sha256Of(Buffer.alloc(MAX_BYTES + 1)), filename: 'f.bin' }),
          content: () => Buffer.alloc(MAX_BYTES + 1),
          status: 413,
          code: 'file_too_large',
        },
        {
          name: 'a body that is not application/octet-stream',
          query: () => ({ sha256: small.sha256, filename: 'f.bin' }),
          contentType: 'text/plain',
          status: 415,
          code: 'unsupported_media_type',
        },
      ];
      for (const bad of rawRefusals) {
        it(`refuses ${bad.name} (${bad.status} ${bad.code}) and keeps nothing`, async () => {
          const version = bad.version ?? '6.1.0';
          const file = bad.content ? { content: bad.content() } : { path: small.path };
          const result = await putFirmware(server.url, org.adminKey, version, bad.query(), file, bad.contentType);
          assert.equal(result.status, bad.status, JSON.stringify(result.body));
          assert.equal(result.body.error?.code, bad.code);
          assert.equal(typeof result.body.error?.message, 'string');
          assert.equal(await firmwareRows(version), 0);
          assert.deepEqual(await leftovers(), []);
        });
      }

      it('refuses a chunked body once it passes the limit (413, read by the client still sending), keeping nothing', async () => {
        const urlPath = `/api/v1/firmware/6.2.0?sha256=${small.sha256}&filename=f.bin`;
        assert.equal(await sendChunkedPastLimit('PUT', urlPath, 'application/octet-stream', Buffer.alloc(0)), 413);
        assert.equal(await firmwareRows('6.2.0'), 0);
        assert.deepEqual(await leftovers(), []);
      });

      it('keeps nothing of a body cut off, and goes on serving', async () => {
        const urlPath = `/api/v1/firmware/6.3.0?sha256=${small.sha256}&filename=f.bin`;
        await cutOffUpload('PUT', urlPath, 'application/octet-stream', '');
        assert.equal(await firmwareRows('6.3.0'), 0);
      });
    });

    it('lets a client still sending read the answer to its refused upload (60 uploads, 4 KiB to 1 MiB)', async () => {
      // A server whose limit is tiny, so that some uploads are refused on their Content-Length
      // and others by the store's counter mid-file; the others are refused on a bad version or
      // a wrong key, all before most of the body is read.
      // Twenty uploads with one wrong key: not a guesser to slow down here (infra/auth-limiter.ts).
      const tiny = await startTestServer(backend, {
        env: { EDGEFLOW_FIRMWARE_MAX_BYTES: '1024', EDGEFLOW_HTTP_AUTH_FAILURES_MAX: '1000' },
      });
      try {
        const tinyOrg = await tiny.createOrg('tiny');
        const refusals = [
          { key: tinyOrg.adminKey, version: 'not-semver', status: 400 },
          { key: 'efo_wrong_key', version: '1.0.0', status: 401 },
          { key: tinyOrg.adminKey, version: '1.0.0', status: 413 },
        ];
        const failures: string[] = [];
        // Several at a time, as clients of a busy server do (one by one, the race shows less).
        await Promise.all(Array.from({ length: 6 }, (_, lane) => uploadLane(lane)));
        async function uploadLane(lane: number) {
          for (let i = lane; i < 60; i += 6) {
            const size = 4096 * 2 ** (i % 9); // 4 KiB … 1 MiB
            const refusal = refusals[i % refusals.length]!;
            const content = Buffer.alloc(size, i);
            const form = new FormData();
            form.append('version', refusal.version);
            form.append('sha256', sha256Of(content));
            form.append('file', new Blob([new Uint8Array(content)]), 'f.bin');
            try {
              const encoded = new Response(form);
              const contentType = encoded.headers.get('content-type')!;
              const whole = new Uint8Array(await encoded.arrayBuffer());
              let offset = 0;
              // A client on a slow link: still sending when the answer comes.
              const throttled = new ReadableStream<Uint8Array>({
                async pull(controller) {
                  if (offset >= whole.length) return controller.close();
                  await sleep(2);
                  controller.enqueue(whole.subarray(offset, offset + 32 * 1024));
                  offset += 32 * 1024;
                },
              });
              const response = await fetch(`${tiny.url}/api/v1/firmware`, {
                method: 'POST',
                headers: { authorization: `Bearer ${refusal.key}`, 'content-type': contentType },
                body: throttled,
                duplex: 'half',
              } as RequestInit);
              const body = (await response.json()) as { error?: { code?: string } };
              if (response.status !== refusal.status || typeof body.error?.code !== 'string') {
                failures.push(`#${i} (${size} B): ${response.status} ${JSON.stringify(body)}`);
              }
            } catch (error) {
              const cause = (error as { cause?: { code?: string } }).cause;
              failures.push(
                `#${i} (${size} B, expected ${refusal.status}): ${cause?.code ?? (error as Error).message}`,
              );
            }
          }
        }
        assert.deepEqual(failures, []);
        const [rows] = await tiny.db.query<{ n: number }>('SELECT count(*)::int AS n FROM firmware');
        assert.equal(rows!.n, 0);
        assert.deepEqual(
          (await tiny.store.listKeys('')).filter(
            (key) => key.includes('staging') || key.startsWith(`firmware/${tinyOrg.id}/`),
          ),
          [],
        );
      } finally {
        await tiny.close();
      }
    });

    /**
     * An upload with a wrong key (refused before its body is read) over a raw socket that stays
     * open whatever the server answers: sends `initialBytes` of the body and then, if
     * `keepSending`, more for as long as the server reads.
     */
    function refusedUpload(baseUrl: string, options: { initialBytes: number; keepSending: boolean }) {
      const { hostname, port } = new URL(baseUrl);
      const socket = net.connect({ host: hostname, port: Number(port), allowHalfOpen: true });
      socket.on('error', () => {});
      let received = '';
      const status = new Promise<number>((resolve) =>
        socket.on('data', (chunk: Buffer) => {
          received += chunk.toString('latin1');
          const match = /^HTTP\/1\.1 (\d{3})/.exec(received);
          if (match) resolve(Number(match[1]));
        }),
      );
      socket.write(
        'POST /api/v1/firmware HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer efo_wrong_key\r\n' +
          `Content-Type: multipart/form-data; boundary=x\r\nContent-Length: ${1024 ** 3}\r\n\r\n`,
      );
      socket.write(Buffer.alloc(options.initialBytes, 1));
      if (options.keepSending) {
        const chunk = Buffer.alloc(64 * 1024, 2);
        const pump = () => {
          while (!socket.destroyed && socket.write(chunk)) {}
          if (!socket.destroyed) socket.once('drain', pump);
        };
        pump();
      }
      return { status, socket };
    }

    /** Waits until the server holds no connection any more (each test server here has its own). */
    async function noConnectionsLeft(target: TestServer): Promise<void> {
      for (let waited = 0; ; waited += 100) {
        const open = await new Promise<number>((resolve, reject) =>
          target.app.server.getConnections((error, count) => (error ? reject(error) : resolve(count))),
        );
        if (open === 0) return;
        assert.ok(waited < 60_000, `${open} connection(s) still open`);
        await sleep(100);
      }
    }

    it('closes a refused upload after the lingering bounds (bytes or time), and a shutdown does not wait for it', async () => {
      const bounded = await startTestServer(backend, {
        env: { EDGEFLOW_UPLOAD_LINGER_MS: '1000', EDGEFLOW_UPLOAD_LINGER_MAX_BYTES: String(256 * 1024) },
      });
      try {
        const endless = refusedUpload(bounded.url, { initialBytes: 1024, keepSending: true });
        assert.equal(await endless.status, 401);
        await noConnectionsLeft(bounded); // by the byte bound: the client would send 1 GiB
        endless.socket.destroy();
        const idle = refusedUpload(bounded.url, { initialBytes: 1024, keepSending: false });
        assert.equal(await idle.status, 401);
        await noConnectionsLeft(bounded); // by the time bound: the client sends nothing more
        idle.socket.destroy();
      } finally {
        await bounded.close();
      }

      const patient = await startTestServer(backend, { env: { EDGEFLOW_UPLOAD_LINGER_MS: '600000' } });
      const idle = refusedUpload(patient.url, { initialBytes: 1024, keepSending: false });
      try {
        assert.equal(await idle.status, 401);
        const open = await new Promise<number>((resolve) =>
          patient.app.server.getConnections((_error, count) => resolve(count)),
        );
        assert.equal(open, 1, 'answered, and still reading the rest of the body');
        // The linger would last 10 minutes: close() must drop it
        // instead of waiting (the test runner's timeout would fail this test otherwise).
        await patient.close();
        await noConnectionsLeft(patient);
      } finally {
        idle.socket.destroy();
      }
    });

    it('refuses a link whose version is unknown with 404', async () => {
      const missing = await server.api<{ error: { code: string } }>(
        'POST',
        '/api/v1/firmware/9.9.9/download-url',
        org.adminKey,
      );
      assert.equal(missing.status, 404);
      assert.equal(missing.body.error.code, 'firmware_not_found');
    });
  });
}
