/**
 * arrayParam: a bulk statement's array parameter written as PostgreSQL's array literal by one
 * JSON.stringify. What the database reads back must be what was given, on both databases, for
 * every kind of element the statements pass (and the awkward ones: quotes, backslashes, braces,
 * commas, the word NULL, control characters, other scripts).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { arrayParam, type Db } from '../../src/server/infra/db.ts';
import { backendsUnderTest, openTestDb } from '../helpers/server.ts';

const TEXTS: (string | null)[] = [
  'upd_3f9a1c',
  '',
  ' spaced ',
  'NULL',
  'null',
  null,
  '{braces}',
  'a,b',
  'say "hi"',
  'back\\slash',
  'line\nbreak',
  'tab\there',
  'Grüße, 東京',
  '😀',
];

for (const backend of await backendsUnderTest()) {
  describe(`arrayParam on ${backend.db}`, () => {
    let db: Db;
    let dispose: () => Promise<void>;

    before(async () => {
      ({ db, dispose } = await openTestDb(backend.db));
    });
    after(async () => {
      await dispose();
    });

    it('reads back every text, null and the empty string as given, in order', async () => {
      for (const values of [TEXTS, TEXTS.filter((text) => text === null || !/["\\\n\t]/.test(text)), []]) {
        const rows = await db.query<{ value: string | null }>(
          'SELECT u AS value FROM unnest($1::text[]) WITH ORDINALITY AS t(u, n) ORDER BY n',
          [arrayParam(values)],
        );
        assert.deepEqual(
          rows.map((row) => row.value),
          values,
        );
      }
    });

    it('reads back integers and booleans, with nulls among them', async () => {
      const [row] = await db.query<{ ints: (number | null)[]; flags: (boolean | null)[] }>(
        'SELECT $1::int[] AS ints, $2::boolean[] AS flags',
        [arrayParam([0, -7, 2_147_483_647, null]), arrayParam([true, false, null])],
      );
      assert.deepEqual(row, { ints: [0, -7, 2_147_483_647, null], flags: [true, false, null] });
    });
  });
}

describe('arrayParam', () => {
  it('is a literal when JSON needs no escape, and the array itself (for the driver to quote) when it does', () => {
    assert.equal(arrayParam(['a', null, 'b c']), '{"a",null,"b c"}');
    assert.equal(arrayParam([1, 2]), '{1,2}');
    assert.equal(arrayParam([]), '{}');
    const escaped = ['say "hi"'];
    assert.equal(arrayParam(escaped), escaped);
  });
});
