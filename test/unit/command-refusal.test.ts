/** How a device's refusal of `ota_update` becomes the update's failure code and message. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { readWireError } from '../../src/protocol/wire-error.ts';
import { commandRefusal } from '../../src/server/updates/engine.ts';

describe('commandRefusal', () => {
  const cases: [string, { error: string; error_code?: string }, string, RegExp][] = [
    ['an older agent', { error: 'busy: another update is in progress' }, 'busy', /^busy: another update/],
    ['an older agent', { error: 'invalid_command: payload' }, 'invalid_command', /^invalid_command/],
    [
      'a stock EdgeFlow agent',
      { error: 'unknown command action: ota_update' },
      'ota_not_supported',
      /no OTA handler.*install the EdgeFlow OTA agent/,
    ],
    ['an older agent without OTA', { error: 'unknown action "ota_update"' }, 'ota_not_supported', /no OTA handler/],
    ['an agent', { error: 'something went wrong' }, 'refused', /^something went wrong$/],
    [
      'this agent',
      { error: 'busy: update u-1 is downloading', error_code: 'busy' },
      'busy',
      /^busy: update u-1 is downloading$/,
    ],
    [
      'this agent without OTA',
      { error: 'unknown_action: unknown action "ota_update"', error_code: 'unknown_action' },
      'ota_not_supported',
      /no OTA handler/,
    ],
    [
      'this agent, failing unexpectedly',
      { error: 'internal_error: ENOSPC: no space left on device', error_code: 'internal_error' },
      'internal_error',
      /^internal_error: ENOSPC: no space left on device$/,
    ],
  ];
  for (const [sender, frame, code, message] of cases) {
    it(`reads ${JSON.stringify(frame)} from ${sender} as ${code}`, () => {
      const refusal = commandRefusal(readWireError(frame));
      assert.equal(refusal.code, code);
      assert.match(refusal.message, message);
    });
  }
});
