/**
 * Text a device sends over the tunnel, on each database: an error message with ESC, BEL, CR and
 * an OSC sequence is stored with its control characters replaced (it never reaches an operator's
 * terminal or the dashboard raw), and a refusal whose "code" is 3,000 characters long is stored
 * and grouped as `refused`, never under that code.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CONTROL_CHARACTERS } from '../../src/protocol/text.ts';
import { type OtaRecord, registerDevice, settledOta } from '../helpers/agents.ts';
import { makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
import { connectRaw, type RawDevice } from '../helpers/raw-device.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

after(() => stopSharedServices());

const FORGERY = 'install failed\r\x1b[2Kgw-001: completed on 2.0.0\x07\x1b]0;owned\x07\x9b31m';
const ANY_CONTROL = new RegExp(`[${CONTROL_CHARACTERS}]`);

/** Answers the health check, then the ota_update command with `answer`; resolves the update id. */
async function takeUpdate(raw: RawDevice, answer: (id: string) => Record<string, unknown>): Promise<string> {
  for (;;) {
    const command = await raw.next('command', 20_000);
    if (command.action === 'health_check') {
      raw.send({ type: 'response', id: command.id, status: 'success', data: { status: 'healthy' } });
      continue;
    }
    assert.equal(command.action, 'ota_update');
    raw.send({ type: 'response', id: command.id, ...answer(String(command.id)) });
    return String((command.payload as { update_id: string }).update_id);
  }
}

for (const backend of await backendsUnderTest()) {
  describe(`text from devices on ${backend.name}`, () => {
    let server: TestServer;
    let org: { id: string; adminKey: string };
    const raws: RawDevice[] = [];

    before(async () => {
      server = await startTestServer(backend);
      org = await server.createOrg();
      const file = await makeFirmwareFile(64 * 1024);
      const uploaded = await postFirmware(server.url, org.adminKey, { version: '2.0.0', sha256: file.sha256 }, file);
      assert.equal(uploaded.status, 201);
    });
    after(async () => {
      for (const raw of raws) await raw.close();
      await server.close();
    });

    const connected = async () => {
      const device = await registerDevice(server, org.adminKey);
      const raw = await connectRaw(server.url, device);
      raws.push(raw);
      return { ...device, raw };
    };
    const update = (deviceId: string) =>
      server.api('POST', `/api/v1/devices/${deviceId}/ota/update`, org.adminKey, { version: '2.0.0' });

    it('stores an error message with ESC, BEL, CR and OSC with its control characters replaced', async () => {
      const { deviceId, raw } = await connected();
      const taking = takeUpdate(raw, () => ({ status: 'success', data: { accepted: true } }));
      assert.equal((await update(deviceId)).status, 202);
      const updateId = await taking;
      raw.send({
        type: 'command',
        id: 'r1',
        action: 'ota_result',
        payload: {
          update_id: updateId,
          status: 'failed',
          current_version: '1.0.0',
          error: { code: 'install_failed', message: FORGERY },
        },
      });
      const record: OtaRecord = await settledOta(server, org.adminKey, deviceId, 20_000);
      assert.equal(record.ota_status, 'failed');
      assert.equal(record.error?.code, 'install_failed');
      const message = String(record.error?.message);
      assert.doesNotMatch(message, ANY_CONTROL);
      assert.equal(message, 'install failed \ufffd[2Kgw-001: completed on 2.0.0\ufffd\ufffd]0;owned\ufffd\ufffd31m');
    });

    it('stores a refusal whose code is 3,000 characters long as refused, and groups it so', async () => {
      const { deviceId, raw } = await connected();
      const long = 'x'.repeat(3000);
      const taking = takeUpdate(raw, () => ({ status: 'error', error: `${long}: no` }));
      assert.equal((await update(deviceId)).status, 202);
      await taking;
      const record: OtaRecord = await settledOta(server, org.adminKey, deviceId, 20_000);
      assert.equal(record.ota_status, 'failed');
      assert.equal(record.error?.code, 'refused');
      const failures = await server.api<{ groups: { error_code: string }[] }>(
        'GET',
        '/api/v1/updates/failures',
        org.adminKey,
      );
      assert.ok(
        failures.body.groups.every((group) => group.error_code.length <= 64),
        JSON.stringify(failures.body.groups.map((group) => group.error_code.slice(0, 80))),
      );
      assert.ok(failures.body.groups.some((group) => group.error_code === 'refused'));
    });
  });
}
