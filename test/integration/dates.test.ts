/**
 * Dates from clients follow one rule on both databases (infra/schemas.ts, parseDateTime): an
 * RFC 3339 instant from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z in UTC, else
 * `400 invalid_date`. Before it, on the embedded database, year 0000 and
 * `9999-12-31T23:59:59-23:59` (year 10000 in UTC) were a 500, and years 0001–0049 were read as
 * 2001–2049.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

after(() => stopSharedServices());

const REFUSED = [
  '0000-01-01T00:00:00Z',
  '0001-01-01T00:00:00Z',
  '0049-06-01T00:00:00Z',
  '1969-12-31T23:59:59Z',
  '9999-12-31T23:59:59-23:59',
  '2030-12-31T23:59:60Z',
  '2030-02-30T00:00:00Z',
  '2030-01-31T02:00:00',
  '2030-01-31T02:00:00Z[Europe/Paris]',
  '2030-01-31',
  'yesterday',
];
const ACCEPTED: [string, string][] = [
  ['1970-01-01T00:00:00Z', '1970-01-01T00:00:00.000Z'],
  ['9999-12-31T23:59:59Z', '9999-12-31T23:59:59.000Z'],
  ['9999-12-31T23:59:59+23:59', '9999-12-31T00:00:59.000Z'],
  ['2030-01-31T02:00:00.5+05:30', '2030-01-30T20:30:00.500Z'],
];

for (const backend of await backendsUnderTest()) {
  describe(`dates from clients on ${backend.name}`, () => {
    let server: TestServer;
    let key: string;
    before(async () => {
      server = await startTestServer(backend);
      key = (await server.createOrg()).adminKey;
    });
    after(() => server.close());

    for (const since of REFUSED) {
      it(`refuses since=${since} with 400 invalid_date`, async () => {
        const answer = await server.api<{ error: { code: string; message: string } }>(
          'GET',
          `/api/v1/updates/failures?since=${encodeURIComponent(since)}`,
          key,
        );
        assert.equal(answer.status, 400, JSON.stringify(answer.body));
        assert.equal(answer.body.error.code, 'invalid_date');
        assert.match(
          answer.body.error.message,
          /query parameter since must be a date-time .* from 1970-01-01T00:00:00Z/,
        );
      });
    }

    for (const [since, instant] of ACCEPTED) {
      it(`accepts since=${since}, the instant ${instant}`, async () => {
        const answer = await server.api<{ since: string; groups: unknown[] }>(
          'GET',
          `/api/v1/updates/failures?since=${encodeURIComponent(since)}`,
          key,
        );
        assert.equal(answer.status, 200, JSON.stringify(answer.body));
        assert.deepEqual(answer.body, { since: instant, groups: [] });
      });
    }
  });
}
