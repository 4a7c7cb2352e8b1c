/**
 * What the server's log says at info: one line per request except probes and scrapes
 * (/healthz, /readyz, /metrics are at debug), and one line per domain event — a device online,
 * offline, a firmware uploaded, an update changing state (not every progress report).
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { postFirmware, sha256Of } from '../helpers/firmware.ts';
import { connectRaw, eventually } from '../helpers/raw-device.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const backends = await backendsUnderTest();
after(stopSharedServices);

type Line = { level: number; msg: string } & Record<string, unknown>;
const DEBUG = 20;
const INFO = 30;

for (const backend of backends) {
  describe(`server log on ${backend.name}`, () => {
    let server: TestServer;
    const lines: Line[] = [];

    before(async () => {
      const sink = new Writable({
        write(chunk: Buffer, _encoding, done) {
          for (const text of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(text) as Line);
          done();
        },
      });
      server = await startTestServer(backend, { log: pino({ level: 'debug' }, sink) });
    });
    after(() => server.close());

    const requestLines = (url: string) => lines.filter((line) => line.msg === 'request' && line.url === url);

    it('logs probes and scrapes at debug, API requests at info, one line each', async () => {
      for (const url of ['/healthz', '/readyz', '/metrics']) {
        await fetch(`${server.url}${url}`).then((r) => r.text());
        await eventually(async () => requestLines(url).length === 1, 5000, `${url} logged`);
        assert.deepEqual(
          requestLines(url).map((line) => line.level),
          [DEBUG],
        );
      }
      await server.createOrg('logged');
      await eventually(async () => requestLines('/api/v1/orgs').length === 1, 5000, 'the API call logged');
      assert.equal(requestLines('/api/v1/orgs')[0]!.level, INFO);
      assert.equal(requestLines('/api/v1/orgs')[0]!.status, 201);
      assert.equal(
        lines.filter((line) => line.msg === 'incoming request' || line.msg === 'request completed').length,
        0,
        "Fastify's own two lines per request are off",
      );
    });

    it('logs a device going online and offline, and a firmware upload, one info line each', async () => {
      const org = await server.createOrg();
      const { body } = await server.api<{ device_id: string; api_key: string }>(
        'POST',
        '/api/v1/devices',
        org.adminKey,
        {
          current_version: '1.0.0',
        },
      );
      const raw = await connectRaw(server.url, { deviceId: body.device_id, apiKey: body.api_key });
      await raw.close();
      const about = (msg: string) => lines.filter((line) => line.msg === msg && line.device_id === body.device_id);
      await eventually(async () => about('device offline').length === 1, 5000, 'offline logged');
      assert.deepEqual(
        about('device online').map((line) => line.level),
        [INFO],
      );
      assert.equal(about('device offline')[0]!.level, INFO);

      const content = Buffer.from('logged firmware');
      const uploaded = await postFirmware(
        server.url,
        org.adminKey,
        { version: '1.2.3', sha256: sha256Of(content) },
        { content },
      );
      assert.equal(uploaded.status, 201);
      const firmwareLines = lines.filter((line) => line.msg === 'firmware uploaded' && line.version === '1.2.3');
      assert.equal(firmwareLines.length, 1);
      assert.equal(firmwareLines[0]!.level, INFO);
    });

    it('logs an update state change once, not its progress reports', async () => {
      const org = await server.createOrg();
      const { body: device } = await server.api<{ device_id: string }>('POST', '/api/v1/devices', org.adminKey, {
        current_version: '1.0.0',
      });
      // Straight through the one writer of update status, as the engine drives it.
      const { transitions } = server.services;
      const where = { organizationId: org.id, id: 'upd_logged' };
      await transitions.create([
        {
          id: where.id,
          organizationId: org.id,
          deviceId: device.device_id,
          deploymentId: null,
          kind: 'update',
          targetVersion: '1.2.3',
          fromVersion: '1.0.0',
          force: false,
        },
      ]);
      await transitions.move(where, 'in_progress', { progress: 5 }); // not from queued: nothing changes
      await transitions.move(where, 'dispatched');
      for (const progress of [10, 50, 90]) await transitions.move(where, 'in_progress', { progress });
      await transitions.move(where, 'completed');
      await transitions.move(where, 'completed'); // a duplicate result changes nothing
      const updateLines = lines.filter((line) => line.update_id === 'upd_logged');
      assert.deepEqual(
        updateLines.map((line) => [line.level, line.msg, line.from]),
        [
          [INFO, 'update queued', null],
          [INFO, 'update dispatched', 'queued'],
          [INFO, 'update in_progress', 'dispatched'],
          [INFO, 'update completed', 'in_progress'],
        ],
      );
    });

    it('sums a bulk move into an active status in one line per change, and keeps each outcome its own line', async () => {
      const org = await server.createOrg();
      const { db, transitions } = server.services;
      const count = 150; // more than a statement announces row by row (BULK_EVENT_ROWS)
      await db.query(
        `INSERT INTO devices (organization_id, device_id, current_version, key_hash)
         SELECT $1, 'bulk-' || g, '1.0.0', $1 || '-bulk-' || g FROM generate_series(1, $2::int) AS g`,
        [org.id, count],
      );
      const rows = Array.from({ length: count }, (_, i) => ({
        id: `upd_bulk_${org.id}_${i}`,
        organizationId: org.id,
        deviceId: `bulk-${i + 1}`,
      }));
      await transitions.create(
        rows.map((row) => ({
          ...row,
          deploymentId: null,
          kind: 'update' as const,
          targetVersion: '1.2.3',
          fromVersion: '1.0.0',
          force: false,
        })),
      );
      await transitions.moveMany(rows, 'cancelled', { errorCode: 'cancelled', errorMessage: 'by the test' });
      const ofOrg = lines.filter((line) => line.organization_id === org.id);
      assert.deepEqual(
        ofOrg
          .filter((line) => line.msg === `${count} updates queued`)
          .map((line) => [line.level, line.count, line.from]),
        [[INFO, count, null]],
      );
      assert.equal(ofOrg.filter((line) => line.msg === 'update queued').length, 0, 'no line per queued row');
      const cancelled = ofOrg.filter((line) => line.msg === 'update cancelled');
      assert.equal(cancelled.length, count, 'each outcome its own line');
      assert.deepEqual(cancelled[0]!.error, { code: 'cancelled', message: 'by the test' });
    });
  });
}
