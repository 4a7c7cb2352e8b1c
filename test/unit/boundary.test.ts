/** The text and version rules at the boundary, and the request validator, without a server. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Type } from 'typebox';
import { findForbiddenCharacter, hasControlCharacter } from '../../src/protocol/text.ts';
import { parseFrame, validate } from '../../src/protocol/tunnel.ts';
import { validatorCompiler } from '../../src/server/infra/boundary.ts';
import type { AppError } from '../../src/server/infra/errors.ts';
import { PlainText, SemverString } from '../../src/server/infra/schemas.ts';

describe('text rules', () => {
  it('finds a NUL in nested strings and keys, and names where', () => {
    assert.equal(findForbiddenCharacter({ a: ['x', { b: 'y\u0000' }] }), '/a/1/b');
    assert.equal(findForbiddenCharacter({ ['k\u0000']: 1 }), '/k\\u0000');
    assert.equal(findForbiddenCharacter('\u0000'), '/');
    assert.equal(findForbiddenCharacter({ a: 'clean', n: 1, z: null, t: true }), undefined);
  });

  it('finds an unpaired surrogate, accepts a paired one, and survives deep nesting', () => {
    assert.equal(findForbiddenCharacter({ name: 'a\ud800' }), '/name');
    assert.equal(findForbiddenCharacter({ name: 'emoji \u{1f680}' }), undefined);
    const deep = JSON.parse(`${'['.repeat(100_000)}"\\u0000"${']'.repeat(100_000)}`);
    assert.equal(findForbiddenCharacter(deep), `${'/0'.repeat(100_000)}`);
  });

  it('treats tab and line breaks as text only when asked', () => {
    assert.equal(hasControlCharacter('plain text ünïcode'), false);
    assert.equal(hasControlCharacter('line\nbreak'), true);
    assert.equal(hasControlCharacter('line\r\n\tbreak', { allowLineBreaks: true }), false);
    for (const bad of ['\u0000', '\u001b[2J', '\u007f', '\u0008']) {
      assert.equal(hasControlCharacter(`a${bad}`, { allowLineBreaks: true }), true, JSON.stringify(bad));
    }
  });
});

describe('tunnel frames', () => {
  it('refuses a NUL anywhere in a frame, keeping the type and id so a command can be answered', () => {
    const parsed = parseFrame(
      JSON.stringify({ type: 'command', id: 'c1', action: 'device_info', payload: { extra: { deep: 'a\u0000' } } }),
    );
    assert.deepEqual(parsed, {
      ok: false,
      reason: 'NUL characters and unpaired surrogates are not allowed (at /payload/extra/deep)',
      type: 'command',
      id: 'c1',
    });
    assert.equal(parseFrame(JSON.stringify({ type: 'connect', version: '1.0\u0001' })).ok, false);
  });

  it('accepts only strict semver as a version a device reports', () => {
    for (const version of ['1.0.0', '2.10.3-rc.1']) {
      assert.equal(validate.deviceInfo.Check({ current_version: version }), true, version);
      assert.equal(
        validate.otaResult.Check({ update_id: 'u', status: 'completed', current_version: version }),
        true,
        version,
      );
    }
    for (const version of ['garbage', 'v1.0.0', '1.0', '1.0.0+build', `1.0.${'9'.repeat(70)}`, '']) {
      assert.equal(validate.deviceInfo.Check({ current_version: version }), false, version);
      assert.equal(
        validate.otaResult.Check({
          update_id: 'u',
          status: 'failed',
          current_version: '1.0.0',
          previous_version: version,
        }),
        false,
        version,
      );
    }
  });
});

describe('request validator', () => {
  const schema = Type.Object(
    {
      name: Type.Optional(PlainText({ maxLength: 10 })),
      version: Type.Optional(SemverString),
      limit: Type.Optional(Type.Integer({ minimum: 1, default: 50 })),
      online: Type.Optional(Type.Boolean()),
    },
    { additionalProperties: false },
  );
  const body = validatorCompiler({ schema, httpPart: 'body', method: 'POST', url: '/' }) as (data: unknown) => {
    value?: unknown;
    error?: AppError;
  };
  const query = validatorCompiler({ schema, httpPart: 'querystring', method: 'GET', url: '/' }) as typeof body;

  it('does not coerce JSON types', () => {
    assert.equal(body({ name: 1 }).error?.code, 'invalid_request');
    assert.equal(body({ limit: '5' }).error?.code, 'invalid_request');
    assert.equal(body({ online: 'true' }).error?.code, 'invalid_request');
    assert.deepEqual(body({ name: 'x' }).value, { name: 'x', limit: 50 });
  });

  it('converts query strings that spell a number or boolean exactly, and nothing else', () => {
    assert.deepEqual(query({ limit: '5', online: 'false' }).value, { limit: 5, online: false });
    for (const limit of ['1.5', '5x', '', ' 5', '0x10', '1e3']) {
      assert.equal(query({ limit }).error?.code, 'invalid_request', limit);
    }
    assert.equal(query({ online: 'yes' }).error?.code, 'invalid_request');
  });

  it('refuses a body nested thousands deep instead of overflowing the stack', () => {
    const tags = validatorCompiler({
      schema: Type.Object({ tags: Type.Array(Type.String(), { uniqueItems: true }) }),
      httpPart: 'body',
      method: 'POST',
      url: '/',
    }) as typeof body;
    const deep = JSON.parse(`{"tags":[${'['.repeat(20_000)}${']'.repeat(20_000)}, 1]}`);
    assert.equal(tags(deep).error?.code, 'invalid_request');
  });

  it('gives stable codes: invalid_version, invalid_characters, and names an unknown field', () => {
    for (const version of ['garbage', '1.0', 'x'.repeat(65)]) {
      assert.equal(body({ version }).error?.code, 'invalid_version', version);
    }
    assert.equal(body({ name: 'a\u0007' }).error?.code, 'invalid_characters');
    const unknown = body({ colour: 'red' }).error;
    assert.equal(unknown?.code, 'invalid_request');
    assert.match(unknown?.message ?? '', /"colour"/);
  });
});
