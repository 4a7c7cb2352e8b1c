/**
 * The operator CLI as a user runs it (a child process of bin/edgeflow-ota.js) against a real
 * server and a real agent: organization, device, firmware upload, update --wait, errors.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { Agent } from '../../src/agent/agent.ts';
import { removeAgentDirs, startAgent } from '../helpers/agents.ts';
import { CLI } from '../helpers/cli.ts';
import { makeFirmwareFile } from '../helpers/firmware.ts';
import { startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const run = promisify(execFile);

describe('edgeflow-ota CLI', () => {
  let server: TestServer;
  let agent: Agent | undefined;
  const cli = (args: string[], key: string) =>
    run(process.execPath, [CLI, ...args], {
      env: { ...process.env, EDGEFLOW_URL: server.url, EDGEFLOW_KEY: key },
    });

  before(async () => {
    server = await startTestServer({ db: 'pglite', store: 'local', name: 'pglite+local' });
  });
  after(async () => {
    await agent?.stop();
    await server.close();
    await removeAgentDirs();
    await stopSharedServices();
  });

  it('creates an organization and a device, uploads firmware and updates the device with --wait', async () => {
    const org = JSON.parse((await cli(['orgs', 'create', 'cli-org', '--json'], server.adminKey)).stdout) as {
      id: string;
      admin_key: string;
    };
    const key = org.admin_key;
    const device = JSON.parse(
      (await cli(['devices', 'create', '--id', 'cli-gw', '--current-version', '1.0.0', '--json'], key)).stdout,
    ) as { device_id: string; api_key: string };
    const file = await makeFirmwareFile(1024 * 1024);
    const uploaded = JSON.parse(
      (await cli(['firmware', 'upload', file.path, '--version', '1.1.0', '--json'], key)).stdout,
    ) as { sha256: string; size: number };
    assert.equal(uploaded.sha256, file.sha256, 'the CLI computed and sent the right checksum');
    assert.equal(uploaded.size, file.size);
    // Notes on one line go in the raw upload's query (PUT); notes with a line break in a form (POST).
    const notes = [
      ['1.1.1', 'one line', 'PUT'],
      ['1.1.2', 'two\nlines', 'POST'],
    ] as const;
    for (const [version, releaseNotes] of notes) {
      const args = ['--release-notes', releaseNotes, '--compatible-models', 'rpi4,cm4', '--json'];
      const stored = JSON.parse(
        (await cli(['firmware', 'upload', file.path, '--version', version, ...args], key)).stdout,
      );
      assert.equal(stored.release_notes, releaseNotes);
      assert.deepEqual(stored.compatible_models, ['rpi4', 'cm4']);
    }
    const requests = await server.services.metrics.httpRequestDuration.get();
    for (const [method, route] of [
      ['PUT', '/api/v1/firmware/:version'],
      ['POST', '/api/v1/firmware'],
    ]) {
      const answered = requests.values.filter(
        (value) =>
          value.metricName?.endsWith('_count') &&
          value.labels.method === method &&
          value.labels.route === route &&
          value.labels.status === '201',
      );
      assert.equal(
        answered.reduce((sum, value) => sum + value.value, 0),
        method === 'PUT' ? 2 : 1,
        `${method} ${route}`,
      );
    }
    const listed = (await cli(['firmware', 'list'], key)).stdout;
    assert.match(listed, /^version\s+size/m);
    assert.match(listed, /^1\.1\.0\s+1048576/m);

    agent = await startAgent(
      server,
      { id: org.id, adminKey: key },
      { deviceId: device.device_id, apiKey: device.api_key },
    );
    const updated = await cli(['update', 'cli-gw', '1.1.0', '--wait'], key);
    assert.match(updated.stdout, /cli-gw: completed on 1\.1\.0/);
    const history = JSON.parse((await cli(['ota', 'cli-gw', '--history', '--json'], key)).stdout) as {
      status: string;
    }[];
    assert.deepEqual(
      history.map((u) => u.status),
      ['completed'],
    );

    // rollback sends the version named (else the last known good one, 1.0.0, never uploaded here).
    for (const [args, code] of [
      [['rollback', 'cli-gw', '2.0.0'], 'version_not_committed'],
      [['rollback', 'cli-gw'], 'rollback_firmware_missing'],
    ] as const) {
      const refused = (await cli([...args], key).then(
        () => ({}),
        (error: unknown) => error,
      )) as { code?: number; stderr?: string };
      assert.equal(refused.code, 1, args.join(' '));
      assert.match(refused.stderr ?? '', new RegExp(`error: ${code}: .*\\(HTTP 409\\)`));
    }
  });

  it('prints an API error as one line with its code and exits 1', async () => {
    const failure = await cli(['firmware', 'delete', '9.9.9'], server.adminKey).catch((error: unknown) => error);
    assert.ok(failure && typeof failure === 'object' && 'code' in failure);
    const { code, stderr } = failure as { code: number; stderr: string };
    assert.equal(code, 1);
    assert.match(stderr, /^error: organization_key_required: .*\(HTTP 403\)$/m);
  });
});
