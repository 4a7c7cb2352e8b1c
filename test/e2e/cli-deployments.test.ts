/**
 * The deployment commands as a user runs them (child processes of bin/edgeflow-ota.js) against
 * a real server and three real agents: a dry run, a deployment followed with --wait to its
 * end, list/show as JSON, the controls the server offers (a refused one in the server's words),
 * a device left out because another deployment holds it, found by its reason, and a mistyped flag.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Agent } from '../../src/agent/agent.ts';
import { registerDevice, removeAgentDirs, startAgent } from '../helpers/agents.ts';
import { cliAgainst } from '../helpers/cli.ts';
import { makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
import { startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const DEVICES = ['cli-dep-1', 'cli-dep-2', 'cli-dep-3'];

interface Deployment {
  id: string;
  version: string;
  status: string;
  total: number;
  controls: string[];
  counts: Record<string, number>;
  excluded: Record<string, number>;
  batches: { kind: string; size: number; state: string }[];
}

describe('edgeflow-ota deploy and deployments', () => {
  let server: TestServer;
  let key: string;
  const agents: Agent[] = [];
  const { cli, refused } = cliAgainst(() => ({ url: server.url, key }));

  before(async () => {
    server = await startTestServer(
      { db: 'pglite', store: 'local', name: 'pglite+local' },
      { env: { EDGEFLOW_DISPATCH_INTERVAL_MS: '200' } },
    );
    const org = await server.createOrg('cli-deployments');
    key = org.adminKey;
    for (const version of ['1.0.0', '1.1.0', '1.2.0']) {
      const firmware = await makeFirmwareFile(64 * 1024);
      const upload = await postFirmware(server.url, key, { version, sha256: firmware.sha256 }, firmware);
      assert.equal(upload.status, 201, JSON.stringify(upload.body));
    }
    for (const deviceId of DEVICES) {
      const device = await registerDevice(server, key, { device_id: deviceId, tags: ['cli-fleet'] });
      agents.push(await startAgent(server, org, device));
    }
  });
  after(async () => {
    await Promise.all(agents.map((agent) => agent.stop()));
    await server?.close();
    await removeAgentDirs();
    await stopSharedServices();
  });

  it('prints the plan of a dry run and creates nothing', async () => {
    const { stdout } = await cli(['deploy', '1.1.0', '--tags', 'cli-fleet', '--dry-run']);
    assert.match(stdout, /^dry run: 1\.1\.0 to 3 device\(s\), all at once$/m);
    assert.match(stdout, /^ {2}#0 batch {2}3 {2}cli-dep-1, cli-dep-2, cli-dep-3$/m);
    assert.match(stdout, /^nothing was created$/m);
    const listed = JSON.parse((await cli(['deployments', 'list', '--json'])).stdout) as Deployment[];
    assert.deepEqual(listed, []);
  });

  it('deploys to three devices all at once, follows it with --wait and exits 0 when completed', async () => {
    const { stdout } = await cli(['deploy', '1.1.0', '--tags', 'cli-fleet', '--bake', '1s', '--wait']);
    // Not a terminal: plain lines, the last state among them.
    assert.match(stdout, /^\d\d:\d\d:\d\d deployment \S+: 1\.1\.0 to 3 device\(s\), all at once — completed$/m);
    assert.match(stdout, /^\d\d:\d\d:\d\d {3}3 completed$/m);
    assert.ok(!stdout.includes('\u001b['), 'no cursor movement outside a terminal');
    for (const deviceId of DEVICES) {
      const device = await server.api<{ current_version: string }>('GET', `/api/v1/devices/${deviceId}`, key);
      assert.equal(device.body.current_version, '1.1.0', deviceId);
    }

    const [listed] = JSON.parse((await cli(['deployments', 'list', '--json'])).stdout) as Deployment[];
    assert.equal(listed?.status, 'completed');
    const shown = JSON.parse((await cli(['deployments', 'show', listed!.id, '--json'])).stdout) as Deployment;
    assert.equal(shown.total, 3);
    assert.equal(shown.counts.completed, 3);
    assert.deepEqual(
      shown.batches.map((batch) => [batch.kind, batch.size, batch.state]),
      [['batch', 3, 'passed']],
    );
    assert.deepEqual(shown.controls, ['rollback'], 'a completed deployment offers only a rollback');
    const text = (await cli(['deployments', 'show', listed!.id])).stdout;
    assert.match(text, /^ {2}#0 batch {2}passed {2}\[#+\] 3\/3$/m);
    assert.match(text, /^ {2}controls: rollback$/m);
    const watched = await cli(['watch', listed!.id]);
    assert.match(watched.stdout, /— completed$/m, 'watch of a finished deployment prints it and ends');

    // A control it does not offer: the server's one line, then what it offers now.
    const paused = await refused(['deployments', 'pause', listed!.id]);
    assert.equal(paused.code, 1);
    assert.equal(paused.stderr.trimEnd().split('\n').length, 1, paused.stderr);
    assert.match(
      paused.stderr.trimEnd(),
      new RegExp(
        `^error: deployment_finished: deployment ${listed!.id} is completed; it cannot pause; controls now: rollback \\(HTTP 409\\)$`,
      ),
    );
  });

  it('refuses a mistyped flag with one line and exit code 2, creating nothing', async () => {
    for (const [args, message] of [
      [['--bake', '10x'], /^error: --bake must be a duration such as 30s, 10m, 1h or 1h30m \(got "10x"\)$/m],
      [['--strategy', 'blue_green'], /^error: --strategy must be one of all_at_once, rolling, canary/],
    ] as const) {
      const failure = await refused(['deploy', '2.0.0', '--tags', 'cli-fleet', ...args]);
      assert.equal(failure.code, 2, args.join(' '));
      assert.equal(failure.stderr.trimEnd().split('\n').length, 1, failure.stderr);
      assert.match(failure.stderr, message);
    }
    const unknown = await refused(['deploy', '2.0.0', '--tags', 'cli-fleet', '--canary-procent', '5']);
    assert.equal(unknown.stderr.trimEnd().split('\n').length, 1, unknown.stderr);
    assert.match(unknown.stderr, /^error: unknown option '--canary-procent' \(Did you mean --canary-percent\?\)$/m);
    const missing = await refused(['deployments', 'show', 'no-such-deployment']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^error: \w+: .*\(HTTP 404\)$/m);
    assert.equal(
      (JSON.parse((await cli(['deployments', 'list', '--json'])).stdout) as Deployment[]).length,
      1,
      'only the deployment of the previous test',
    );
  });

  it('lists a device another deployment holds as left out (busy), found by --reason, each device with its explanation', async () => {
    const later = new Date(Date.now() + 24 * 3600_000).toISOString();
    const holding = JSON.parse(
      (await cli(['deploy', '1.2.0', '--devices', 'cli-dep-1', '--start-at', later, '--json'])).stdout,
    ) as Deployment;
    assert.equal(holding.status, 'scheduled');

    const plan = (await cli(['deploy', '1.2.0', '--tags', 'cli-fleet', '--dry-run'])).stdout;
    assert.match(plan, /^ {2}busy +1 {2}held by another open deployment or update: cli-dep-1$/m);

    const created = JSON.parse(
      (await cli(['deploy', '1.2.0', '--tags', 'cli-fleet', '--start-at', later, '--json'])).stdout,
    ) as Deployment;
    assert.equal(created.total, 2);
    assert.equal(created.excluded.busy, 1);
    const shown = (await cli(['deployments', 'show', created.id])).stdout;
    assert.match(shown, /^ {2}left out: 1 busy$/m);
    assert.match(shown, /^ {2}controls: pause, cancel$/m);

    const busy = (await cli(['deployments', 'devices', created.id, '--reason', 'busy'])).stdout.trimEnd().split('\n');
    assert.equal(busy.length, 2, busy.join('\n'));
    assert.match(busy[0]!, /^device_id +batch +state +reason +current_version +online +explanation$/);
    assert.match(
      busy[1]!,
      new RegExp(`^cli-dep-1 +- +skipped +busy +1\\.1\\.0 +true +skipped: busy in ${holding.id}$`),
    );
    const waiting = JSON.parse(
      (await cli(['deployments', 'devices', created.id, '--state', 'pending', '--json'])).stdout,
    ) as { devices: { device_id: string; explanation: string }[] };
    assert.deepEqual(
      waiting.devices.map((device) => [device.device_id, device.explanation]),
      [
        ['cli-dep-2', 'waiting for batch 0'],
        ['cli-dep-3', 'waiting for batch 0'],
      ],
    );
    const target = (await cli(['deployments', 'target', holding.id])).stdout;
    assert.match(target, /^cli-dep-1 +true$/m);

    for (const id of [created.id, holding.id]) {
      const cancelled = (await cli(['deployments', 'cancel', id])).stdout;
      assert.match(cancelled, /— cancelled$/m);
      assert.match(cancelled, /^ {2}controls: none$/m);
    }
    const again = await refused(['deployments', 'cancel', holding.id]);
    assert.match(again.stderr, /; controls now: none \(HTTP 409\)$/m);
  });
});
