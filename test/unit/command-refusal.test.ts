/** How a device's refusal of `ota_update` becomes the update's failure code and message. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { commandRefusal } from '../../src/server/updates/engine.ts';

describe('commandRefusal', () => {
  const cases: [string, string, RegExp][] = [
    ['busy: another update is in progress', 'busy', /^busy: another update/],
    ['invalid_command: payload', 'invalid_command', /^invalid_command/],
    ['unknown command action: ota_update', 'ota_not_supported', /no OTA handler.*install the EdgeFlow OTA agent/],
    ['unknown action "ota_update"', 'ota_not_supported', /no OTA handler/],
    ['something went wrong', 'refused', /^something went wrong$/],
  ];
  for (const [deviceError, code, message] of cases) {
    it(`reads ${JSON.stringify(deviceError)} as ${code}`, () => {
      const refusal = commandRefusal(deviceError);
      assert.equal(refusal.code, code);
      assert.match(refusal.message, message);
    });
  }
});
