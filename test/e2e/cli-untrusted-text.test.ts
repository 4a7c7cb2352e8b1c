/**
 * The CLI never prints untrusted text raw. The server replaces control characters in what
 * devices send, but a row stored before that rule, or another server version, can still carry
 * them, so the CLI escapes text from the server itself: `update --wait` on a device whose error
 * message is ESC/BEL/CR/OSC prints it escaped, and the line it prints is the failure, not the
 * forged "completed on 2.0.0" the message tries to draw over it.
 *
 * The server here is a stand-in HTTP server answering the API's own shapes: the real one can no
 * longer be made to return such a message (test/integration/device-text.test.ts).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { BIDI_CONTROLS, CONTROL_CHARACTERS } from '../../src/protocol/text.ts';
import { CLI } from '../helpers/cli.ts';

const FORGERY = 'x\r\x1b[2Kgw-001: completed on 2.0.0\x07\x1b]0;owned\x07\x9b2J\u202e';
/** Any control character but the line feeds the CLI writes, or a direction override. */
const RAW_CONTROL = new RegExp(`(?!\n)[${CONTROL_CHARACTERS}${BIDI_CONTROLS}]`);

function cli(args: string[], server: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args, '--server', server, '--key', 'efo_test'],
      { timeout: 60_000 },
      (error, stdout, stderr) => {
        resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
      },
    );
  });
}

describe('untrusted text in the CLI', () => {
  let stand: http.Server;
  let url: string;

  before(async () => {
    stand = http.createServer((request, response) => {
      const json = (status: number, body: unknown) => {
        response.writeHead(status, { 'content-type': 'application/json' });
        response.end(JSON.stringify(body));
      };
      const path = request.url ?? '';
      if (request.method === 'POST' && path.endsWith('/ota/update')) return json(202, { status: 'queued' });
      if (path.endsWith('/ota')) {
        return json(200, {
          device_id: 'gw-001',
          current_version: '1.0.0',
          target_version: '2.0.0',
          ota_status: 'failed',
          phase: 'failed',
          progress: 40,
          error: { code: 'install_failed', message: FORGERY },
        });
      }
      if (path.startsWith('/api/v1/devices')) {
        return json(200, { devices: [{ device_id: `gw\x1b[31m-red`, model: 'rpi4\x07', online: true }] });
      }
      return json(403, { error: { code: 'forbidden', message: `no ${FORGERY}` } });
    });
    stand.listen(0, '127.0.0.1');
    await once(stand, 'listening');
    url = `http://127.0.0.1:${(stand.address() as AddressInfo).port}`;
  });
  after(() => stand.close());

  it('update --wait prints a device error message escaped, on the failure line', async () => {
    const outcome = await cli(['update', 'gw-001', '2.0.0', '--wait'], url);
    assert.equal(outcome.code, 1);
    assert.doesNotMatch(outcome.stdout, RAW_CONTROL, JSON.stringify(outcome.stdout));
    assert.equal(
      outcome.stdout,
      'gw-001: failed on 1.0.0 (install_failed: x\\r\\x1b[2Kgw-001: completed on 2.0.0\\x07\\x1b]0;owned\\x07\\x9b2J\\u202e)\n',
    );
  });

  it('escapes tables and error lines too; --json stays exact JSON', async () => {
    const listed = await cli(['devices', 'list'], url);
    assert.doesNotMatch(listed.stdout, RAW_CONTROL);
    assert.match(listed.stdout, /gw\\x1b\[31m-red/);
    const json = await cli(['devices', 'list', '--json'], url);
    assert.equal(JSON.parse(json.stdout)[0].device_id, 'gw\x1b[31m-red');
    const refused = await cli(['firmware', 'list'], url);
    assert.equal(refused.code, 1);
    assert.doesNotMatch(refused.stderr, RAW_CONTROL);
    assert.match(refused.stderr, /^error: forbidden: no x\\r\\x1b\[2K/);
  });
});
