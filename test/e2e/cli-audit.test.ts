/**
 * `edgeflow-ota audit` as a user runs it (a child process against a real server): one line per
 * entry, newest first, with the filters passed on (escaping: test/unit/audit-rules.test.ts);
 * a bad flag is a usage error (exit 2), a refusal one line (exit 1).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { CLI } from '../helpers/cli.ts';
import { startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

function cli(args: string[], server: string, key: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args, '--server', server, '--key', key],
      { timeout: 60_000 },
      (error, stdout, stderr) =>
        resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr }),
    );
  });
}

describe('edgeflow-ota audit', () => {
  let server: TestServer;
  let org: { id: string; adminKey: string };

  before(async () => {
    server = await startTestServer({ db: 'pglite', store: 'local', name: 'pglite+local' });
    org = await server.createOrg('cli');
    await server.api('POST', '/api/v1/devices', org.adminKey, { device_id: 'gw-1', current_version: '1.0.0' });
    await server.api('PATCH', '/api/v1/devices/gw-1', org.adminKey, { name: 'lobby' });
    const viewer = await server.api<{ key: string }>('POST', '/api/v1/api-keys', org.adminKey, { role: 'viewer' });
    await server.api('DELETE', '/api/v1/devices/gw-1', viewer.body.key);
  });
  after(async () => {
    await server.close();
    await stopSharedServices();
  });

  it('prints one line per entry, newest first, and passes the filters on', async () => {
    const all = await cli(['audit'], server.url, org.adminKey);
    assert.equal(all.code, 0, all.stderr);
    const lines = all.stdout.trim().split('\n');
    assert.deepEqual(
      lines.map((line) => line.split(/\s+/)[3]),
      ['device.delete', 'key.create', 'device.update', 'device.create', 'organization.create'],
    );
    assert.match(lines[0]!, /denied 403 +device\.delete +device:gw-1 .*by .*viewer\) from 127\.0\.0\.1/);
    assert.match(lines[2]!, /device:gw-1 +by .* from 127\.0\.0\.1 +\{"name":"lobby"\}$/);

    const devices = await cli(
      ['audit', '--action', 'device.*', '--target', 'device:gw-1', '--since', '1h', '--limit', '2'],
      server.url,
      org.adminKey,
    );
    assert.equal(devices.code, 0, devices.stderr);
    assert.deepEqual(
      devices.stdout
        .trim()
        .split('\n')
        .map((line) => line.split(/\s+/)[3]),
      ['device.delete', 'device.update'],
    );
    const json = await cli(['audit', '--outcome', 'success', '--json'], server.url, org.adminKey);
    assert.deepEqual(
      (JSON.parse(json.stdout) as { action: string }[]).map((entry) => entry.action),
      ['key.create', 'device.update', 'device.create', 'organization.create'],
    );
  });

  it('refuses a bad limit as a usage error and a bad date in one line', async () => {
    const usage = await cli(['audit', '--limit', 'many'], server.url, org.adminKey);
    assert.equal(usage.code, 2);
    const refused = await cli(['audit', '--since', 'yesterday'], server.url, org.adminKey);
    assert.equal(refused.code, 1);
    assert.equal(refused.stderr.trim().split('\n').length, 1);
    assert.match(refused.stderr, /invalid_date/);
  });
});
