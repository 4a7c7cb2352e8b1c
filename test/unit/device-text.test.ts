/**
 * The one rule for text that came from a device (src/protocol/text.ts): at the tunnel boundary
 * identifiers with a control character are refused and every other string has its control
 * characters replaced; a terminal gets any text from elsewhere escaped; and an error "code" too
 * long to be one is read as text.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  BIDI_CONTROLS,
  CONTROL_CHARACTERS,
  escapeControlCharacters,
  replaceControlCharacters,
} from '../../src/protocol/text.ts';
import { parseFrame } from '../../src/protocol/tunnel.ts';
import { readWireError } from '../../src/protocol/wire-error.ts';

/** What the issue saw: erase the failure line, print a forged success, set the window title. */
const FORGERY = 'install failed\r\x1b[2Kgw-001: completed on 2.0.0\x07\x1b]0;owned\x07\x9b31m\u202eevil';
const ANY_CONTROL = new RegExp(`[${CONTROL_CHARACTERS}${BIDI_CONTROLS}]`);

describe('text from a device', () => {
  it('replaces every control character in the free text of a frame, at parse time', () => {
    const parsed = parseFrame(
      JSON.stringify({
        type: 'command',
        id: 'c1',
        action: 'ota_result',
        error: `busy: ${FORGERY}`,
        payload: { update_id: 'u1', error: { code: 'install_failed', message: FORGERY }, notes: ['a\tb\nc'] },
      }),
    );
    assert.ok(parsed.ok, parsed.ok ? '' : parsed.reason);
    const { payload, error } = parsed.message as { payload: Record<string, unknown>; error: string };
    const message = (payload.error as { message: string }).message;
    assert.equal(
      message,
      'install failed \ufffd[2Kgw-001: completed on 2.0.0\ufffd\ufffd]0;owned\ufffd\ufffd31m\ufffdevil',
    );
    assert.doesNotMatch(message, ANY_CONTROL);
    assert.doesNotMatch(error, ANY_CONTROL);
    assert.deepEqual(payload.notes, ['a b c']);
  });

  it('refuses a frame whose identifiers carry a control character', () => {
    for (const field of ['id', 'device_id', 'api_key', 'action', 'version']) {
      const parsed = parseFrame(JSON.stringify({ type: 'connect', [field]: 'gw\x1b[2J' }));
      assert.equal(parsed.ok, false, field);
    }
  });

  it('leaves ordinary text alone', () => {
    assert.equal(replaceControlCharacters('health check: exit 3 — "ok" ✓'), 'health check: exit 3 — "ok" ✓');
  });

  it('escapes control characters for a terminal, keeping line feeds only when asked', () => {
    assert.equal(
      escapeControlCharacters(FORGERY),
      'install failed\\r\\x1b[2Kgw-001: completed on 2.0.0\\x07\\x1b]0;owned\\x07\\x9b31m\\u202eevil',
    );
    assert.equal(escapeControlCharacters('a\nb\x1b', { keepLineBreaks: true }), 'a\nb\\x1b');
    assert.equal(escapeControlCharacters('a\nb'), 'a\\nb');
  });

  it('reads a 3,000-character "code" as text without a code, never as a code to store', () => {
    const long = 'x'.repeat(3000);
    assert.deepEqual(readWireError({ error: `${long}: refused` }), {
      code: 'unspecified',
      message: `${long}: refused`,
    });
    assert.deepEqual(readWireError({ error: `${long}: refused`, error_code: long }).code, 'unspecified');
    assert.deepEqual(readWireError({ error: 'busy: downloading' }), { code: 'busy', message: 'downloading' });
  });
});
