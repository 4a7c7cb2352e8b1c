/** Errors on the tunnel: what one side writes, the other reads back, in every form seen in the field. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EncodedPayload, encodeCommandFrame, encodeFrame, parseFrame } from '../../src/protocol/tunnel.ts';
import { errorFields, formatWireError, readWireError, type WireError } from '../../src/protocol/wire-error.ts';

describe('errors on the wire', () => {
  it('keeps `error` a plain "code: message" string, which an EdgeFlow device decodes as a string', () => {
    const fields = errorFields({ code: 'auth_failed', message: 'authentication failed' });
    assert.deepEqual(fields, { error: 'auth_failed: authentication failed', error_code: 'auth_failed' });
    assert.equal(typeof fields.error, 'string');
  });

  it('reads back what it wrote, through a real frame', () => {
    const errors: WireError[] = [
      { code: 'busy', message: 'update u-1 is downloading' },
      { code: 'too_late', message: 'update u-1 is already installing: cannot cancel' },
      { code: 'internal_error', message: 'ENOSPC: no space left on device' },
      { code: 'invalid_command', message: '' },
    ];
    for (const error of errors) {
      const parsed = parseFrame(encodeFrame({ type: 'response', id: 'c1', status: 'error', ...errorFields(error) }));
      assert.ok(parsed.ok);
      assert.deepEqual(readWireError(parsed.message), error);
    }
  });

  const legacy: [string, string, WireError][] = [
    ['an agent before error_code', 'busy: another update', { code: 'busy', message: 'another update' }],
    [
      'a server before error_code',
      'invalid_payload: device_info needs current_version',
      { code: 'invalid_payload', message: 'device_info needs current_version' },
    ],
    [
      'a stock EdgeFlow device',
      'unknown command action: ota_update',
      { code: 'unspecified', message: 'unknown command action: ota_update' },
    ],
    ['free text that starts with a capital', 'Error: boom', { code: 'unspecified', message: 'Error: boom' }],
  ];
  for (const [sender, text, expected] of legacy) {
    it(`reads the plain string of ${sender}: ${JSON.stringify(text)}`, () => {
      assert.deepEqual(readWireError({ error: text }), expected);
      assert.equal(formatWireError(expected), text, 'shown as the sender wrote it');
    });
  }

  it('ignores a malformed error_code and falls back to the text', () => {
    assert.deepEqual(readWireError({ error: 'busy: later', error_code: 'Not A Code' }), {
      code: 'busy',
      message: 'later',
    });
    assert.deepEqual(readWireError({ error: 'late', error_code: 42 }), { code: 'unspecified', message: 'late' });
  });

  it('gives an error without any text a message', () => {
    assert.deepEqual(readWireError({}), { code: 'unspecified', message: 'no error message' });
  });

  it('never builds an `error` longer than the envelope allows, nor an invalid code', () => {
    const fields = errorFields({ code: 'Bad Code', message: 'x'.repeat(10_000) });
    assert.equal(fields.error_code, 'unspecified');
    assert.ok(fields.error.length <= 4096);
    assert.ok(parseFrame(encodeFrame({ type: 'error', ...fields })).ok);
  });
});

describe('a command encoded once for a fleet', () => {
  it('reads back as the same frame as one encoded whole, whatever the text in it', () => {
    const payload = {
      update_id: 'upd_1',
      version: '2.0.0',
      url: 'http://127.0.0.1/firmware/x?sig=a%2Fb',
      manifest: { note: 'Grüße 東京 😀 "quoted" back\\slash' },
      force: false,
    };
    const { update_id, ...rest } = payload;
    const tail = Buffer.from(JSON.stringify(rest).slice(1));
    const frame = encodeCommandFrame('c-1', 'ota_update', new EncodedPayload(`{"update_id":"${update_id}",`, tail));
    const parsed = parseFrame(frame.toString('utf8'));
    assert.ok(parsed.ok, parsed.ok ? '' : parsed.reason);
    const { timestamp, ...message } = parsed.message;
    assert.deepEqual(message, { type: 'command', id: 'c-1', action: 'ota_update', payload });
    assert.ok(!Number.isNaN(Date.parse(timestamp ?? '')), `timestamp ${timestamp}`);
  });
});
