/**
 * Approvals as a user runs them (child processes of bin/edgeflow-ota.js) against a real server
 * and a real agent: keys with owners, the policy set with `settings approvals`, `deploy --wait`
 * saying it awaits approval, the creator's approval refused in one line, the approval by
 * another person after which the wait ends completed, and a rejection with its comment. Beside
 * them, the organization's other rollout settings: `settings windows` and `settings budgets`.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Agent } from '../../src/agent/agent.ts';
import { registerDevice, removeAgentDirs, startAgent } from '../helpers/agents.ts';
import { cliAgainst } from '../helpers/cli.ts';
import { makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
import { eventually } from '../helpers/raw-device.ts';
import { startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const DEVICE = 'cli-approval-1';

describe('edgeflow-ota approvals', () => {
  let server: TestServer;
  let admin: string;
  const keys: Record<string, string> = {};
  const agents: Agent[] = [];
  const { cli, refused } = cliAgainst(() => ({ url: server.url, key: admin }));
  const awaiting = async () => {
    let id: string | undefined;
    await eventually(
      async () => {
        const listed = await server.api<{ deployments: { id: string }[] }>(
          'GET',
          '/api/v1/deployments?status=awaiting_approval',
          admin,
        );
        id = listed.body.deployments[0]?.id;
        return id !== undefined;
      },
      20_000,
      'a deployment awaiting approval',
    );
    return id!;
  };

  before(async () => {
    server = await startTestServer(
      { db: 'pglite', store: 'local', name: 'pglite+local' },
      { env: { EDGEFLOW_DISPATCH_INTERVAL_MS: '200' } },
    );
    const org = await server.createOrg('cli-approvals');
    admin = org.adminKey;
    for (const version of ['1.0.0', '1.1.0']) {
      const firmware = await makeFirmwareFile(16 * 1024);
      const upload = await postFirmware(server.url, admin, { version, sha256: firmware.sha256 }, firmware);
      assert.equal(upload.status, 201, JSON.stringify(upload.body));
    }
    agents.push(await startAgent(server, org, await registerDevice(server, admin, { device_id: DEVICE })));
  });
  after(async () => {
    await Promise.all(agents.map((agent) => agent.stop()));
    await server?.close();
    await removeAgentDirs();
    await stopSharedServices();
  });

  it('creates keys with owners and sets the policy', async () => {
    const alice = await server.api<{ key: string }>('POST', '/api/v1/api-keys', admin, {
      role: 'admin',
      name: 'alice-key',
      owner: 'alice',
    });
    keys.alice = alice.body.key;
    const { stdout } = await cli([
      'keys',
      'create',
      '--role',
      'admin',
      '--name',
      'bob-key',
      '--owner',
      'bob',
      '--json',
    ]);
    const bob = JSON.parse(stdout) as { key: string; owner: string };
    assert.equal(bob.owner, 'bob');
    keys.bob = bob.key;
    assert.match((await cli(['keys', 'list'])).stdout, /bob-key\s+bob/);
    assert.equal((await cli(['settings', 'approvals'])).stdout.trim(), 'approval: not required');
    const usage = await refused(['settings', 'approvals', '--min-devices', '2']);
    assert.equal(usage.code, 2);
    assert.equal(usage.stderr.trimEnd().split('\n').length, 1, usage.stderr);
    const set = await cli(['settings', 'approvals', '--required']);
    assert.match(set.stdout, /^approval: required for every deployment/);
  });

  it('deploy --wait says it awaits approval; the creator is refused; approved by another person, it completes', async () => {
    const waiting = cli(['deploy', '1.1.0', '--devices', DEVICE, '--wait'], keys.alice);
    const id = await awaiting();
    const byCreator = await refused(['deployments', 'approve', id, '--comment', 'lgtm'], keys.alice);
    assert.equal(byCreator.code, 1);
    assert.match(byCreator.stderr, /^error: approval_by_creator: .*\(HTTP 403\)\n$/);
    const noComment = await refused(['deployments', 'reject', id], keys.bob);
    assert.equal(noComment.code, 2);
    const approved = await cli(['deployments', 'approve', id, '--comment', 'checked'], keys.bob);
    assert.match(approved.stdout, /^ {2}created by alice \(key alice-key\)$/m);
    assert.match(approved.stdout, /^ {2}approved by bob \(key bob-key\) at \S+: "checked"$/m);
    const { stdout } = await waiting;
    assert.match(stdout, /awaiting approval \(the organization requires approval of every deployment\)/);
    assert.match(stdout, /— completed$/m);
  });

  it("shows and changes the organization's windows and budgets; mistakes end in one line", async () => {
    const shown = await cli(['settings', 'windows']);
    assert.equal(
      shown.stdout.trim(),
      [
        'maintenance windows: none (any time)',
        'time zone of devices without one: UTC',
        'start jitter: up to 30 min (at most half a window)',
      ].join('\n'),
    );
    const changed = await cli([
      'settings',
      'windows',
      '--window',
      'mon-fri 02:00-05:00',
      '--window',
      'sat,sun 22:00-02:00',
      '--timezone',
      'Europe/Berlin',
      '--jitter',
      '10m',
    ]);
    assert.match(changed.stdout, /^maintenance windows: mon-fri 02:00-05:00 \+ sat,sun 22:00-02:00$/m);
    assert.match(changed.stdout, /^time zone of devices without one: Europe\/Berlin$/m);
    assert.match(changed.stdout, /^start jitter: up to 10 min/m);
    const stored = await server.api<{ timezone: string; maintenance_windows: unknown[] }>(
      'GET',
      '/api/v1/settings/maintenance-windows',
      admin,
    );
    assert.deepEqual([stored.body.timezone, stored.body.maintenance_windows.length], ['Europe/Berlin', 2]);
    for (const [args, pattern] of [
      [['settings', 'windows', '--window', 'mon-xx 02:00-05:00'], /^error: .*unknown day/],
      [['settings', 'windows', '--timezone', 'Mars/Olympus'], /^error: invalid_timezone: .*\(HTTP 400\)$/],
      [['settings', 'budgets', '--max-downloads', '-3'], /^error: --max-downloads must be a whole number/],
    ] as const) {
      const mistake = await refused([...args]);
      assert.equal(mistake.stderr.trimEnd().split('\n').length, 1, mistake.stderr);
      assert.match(mistake.stderr.trimEnd(), pattern);
    }
    const viewer = await server.api<{ key: string }>('POST', '/api/v1/api-keys', admin, { role: 'viewer' });
    const denied = await refused(['settings', 'budgets', '--max-downloads', '10'], viewer.body.key);
    assert.match(denied.stderr, /\(HTTP 403\)\n$/);

    assert.equal((await cli(['settings', 'budgets'])).stdout.trim(), 'downloading at once: no cap\nbandwidth: no cap');
    const capped = await cli(['settings', 'budgets', '--max-downloads', '50', '--max-bandwidth', '20MB/s']);
    assert.match(capped.stdout, /^downloading at once: 50$/m);
    assert.match(capped.stdout, /^bandwidth: 20/m);
    const cleared = JSON.parse((await cli(['settings', 'budgets', '--max-downloads', 'none', '--json'])).stdout);
    assert.deepEqual([cleared.max_concurrent_downloads, cleared.max_bytes_per_second], [null, 20_000_000]);
  });

  it('rejects with a comment', async () => {
    const created = JSON.parse(
      (await cli(['deploy', '1.1.0', '--devices', DEVICE, '--force', '--json'], keys.alice)).stdout,
    ) as { id: string; status: string };
    assert.equal(created.status, 'awaiting_approval');
    const rejected = await cli(['deployments', 'reject', created.id, '--comment', 'not today'], keys.bob);
    assert.match(rejected.stdout, /— rejected$/m);
    assert.match(
      (await cli(['deployments', 'show', created.id])).stdout,
      /^ {2}rejected by bob \(key bob-key\) at \S+: "not today"$/m,
    );
  });
});
