/**
 * `npm run demo` as a newcomer runs it (bin/edgeflow-ota.js demo, a child process), with a
 * small fleet and a short bake: the printed URL and keys work, the fleet is online, both
 * firmware versions are there, and the canary stops itself and rolls back; Ctrl-C (SIGINT)
 * then ends it with exit code 0, no process of it left and its temporary directory gone.
 * A port in use ends in one line.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import net from 'node:net';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLI } from '../helpers/cli.ts';
import { eventually, PATIENCE } from '../helpers/raw-device.ts';
import { jsonApi } from '../helpers/server.ts';
import { tempDir } from '../helpers/temp.ts';

const DEVICES = 60;

interface Demo {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
}

/** The demo in its own temporary directory (TMPDIR), so that whatever it leaves behind is seen. */
function startDemo(args: string[], tmp: string, options: { ownProcessGroup?: boolean } = {}): Demo {
  const child = spawn(process.execPath, [CLI, 'demo', ...args], {
    env: { ...process.env, TMPDIR: tmp },
    stdio: ['ignore', 'pipe', 'pipe'],
    // A process group of its own, as a terminal's session has: closing it signals the whole group.
    detached: options.ownProcessGroup ?? false,
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, stdout: () => stdout, stderr: () => stderr, exited };
}

/** The first group of `pattern` once the demo printed it. */
async function printed(demo: Demo, pattern: RegExp, timeoutMs = 40_000): Promise<string> {
  await eventually(
    async () => pattern.test(demo.stdout()) || demo.child.exitCode !== null,
    timeoutMs,
    `the demo printing ${pattern}`,
  ).catch((error: Error) => {
    throw new Error(`${error.message}\nstdout:\n${demo.stdout()}\nstderr:\n${demo.stderr()}`);
  });
  const match = pattern.exec(demo.stdout());
  assert.ok(match, `the demo exited (${demo.child.exitCode}) before printing ${pattern}:\n${demo.stderr()}`);
  return match[1]!;
}

/** Every process below `pid` (children, theirs, …), from ps. */
function descendants(pid: number): number[] {
  const rows = execFileSync('ps', ['-eo', 'pid=,ppid='], { encoding: 'utf8' })
    .trim()
    .split('\n')
    .map((line) => line.trim().split(/\s+/).map(Number) as [number, number]);
  const found: number[] = [];
  for (let parents = [pid]; parents.length > 0; ) {
    parents = rows.filter(([, ppid]) => parents.includes(ppid)).map(([child]) => child);
    found.push(...parents);
  }
  return found;
}

/** What the demo made in the temporary directory (tsx keeps its own cache there too). */
async function demoDirs(tmp: string): Promise<string[]> {
  return (await readdir(tmp)).filter((name) => name.startsWith('edgeflow-demo-'));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

interface Deployment {
  status: string;
  total: number;
  stop_reason: string | null;
  rollback: Record<string, number> | null;
  batches: { kind: string; size: number; state: string; counts: Record<string, number> }[];
}

describe('edgeflow-ota demo', () => {
  it('runs a fleet whose canary rolls itself back, and leaves nothing behind on Ctrl-C', async () => {
    const tmp = await tempDir('edgeflow-demo-test-');
    const demo = startDemo(['--devices', String(DEVICES), '--bake', '10s', '--port', '0'], tmp);
    try {
      const url = await printed(demo, /^ {2}dashboard\s+(http:\/\/localhost:\d+)\/$/m);
      const adminKey = await printed(demo, /^ {2}admin key\s+(\S+)$/m);
      const viewerKey = await printed(demo, /^ {2}viewer key\s+(\S+)/m);
      const dataDir = await printed(demo, /^ {2}data\s+(\S+)/m);
      assert.ok(dataDir.startsWith(tmp), `${dataDir} is a fresh temporary directory`);
      const deploymentId = await printed(demo, /watch (dep_\w+) --server /);
      assert.match(demo.stdout(), new RegExp(`watch ${deploymentId} --server ${url} --key ${viewerKey}`));

      // What the viewer key sees: everything, read only.
      const api = jsonApi(url);
      let online: { tags: string[] }[] = [];
      await eventually(
        async () => {
          const { body } = await api<{ devices: { tags: string[] }[] }>(
            'GET',
            '/api/v1/devices?online=true&limit=1000',
            viewerKey,
          );
          online = body.devices;
          return online.length === DEVICES;
        },
        10_000,
        'the whole fleet online',
      );
      for (const site of ['austin', 'berlin', 'lyon']) {
        assert.equal(
          online.filter((device) => device.tags.includes(`site:${site}`)).length,
          DEVICES / 3,
          `a third of the fleet at ${site}`,
        );
      }
      const { body: firmware } = await api<{ firmware: { version: string; size: number }[] }>(
        'GET',
        '/api/v1/firmware',
        viewerKey,
      );
      assert.deepEqual(firmware.firmware.map((each) => each.version).sort(), ['1.0.0', '2.0.0']);
      assert.ok(firmware.firmware.every((each) => each.size >= 100 * 1024));
      const refused = await api<{ error: { code: string } }>(
        'POST',
        `/api/v1/deployments/${deploymentId}/pause`,
        viewerKey,
      );
      assert.equal(refused.status, 403, 'the viewer key cannot act');

      let deployment: Deployment | undefined;
      await eventually(
        async () => {
          deployment = (await api<Deployment>('GET', `/api/v1/deployments/${deploymentId}`, adminKey)).body;
          return deployment.status === 'rolled_back';
        },
        40_000,
        'the canary rolled back',
      ).catch((error: Error) => {
        throw new Error(`${error.message}: ${JSON.stringify(deployment)}\n${demo.stdout()}`);
      });
      assert.equal(deployment!.total, DEVICES);
      const [canary, rest] = deployment!.batches;
      assert.deepEqual([canary!.kind, canary!.size, canary!.state], ['canary', DEVICES / 10, 'failed']);
      assert.deepEqual(
        [rest!.state, rest!.counts.cancelled],
        ['pending', DEVICES - DEVICES / 10],
        'the rest never started: cancelled before it ran',
      );
      assert.match(
        deployment!.stop_reason ?? '',
        /^batch 0 \(canary\): \d+ failed of \d+ with a verdict .*; on_failure rollback$/,
      );
      await printed(demo, /^\d\d:\d\d:\d\d {2}(rolled_back): /m, 5_000);
      // The demo follows the rollback to its outcome.
      await printed(demo, /^\d\d:\d\d:\d\d {2}rolled_back: .*; rollback: .*, (done)\b/m, 30_000);
      await eventually(
        async () =>
          (await api<{ devices: unknown[] }>('GET', '/api/v1/devices?version=2.0.0', adminKey)).body.devices.length ===
          0,
        30_000,
        'every canary device back on 1.0.0',
      );

      const processes = descendants(demo.child.pid!);
      assert.ok(processes.length >= 2, 'the simulated devices run in child processes');
      demo.child.kill('SIGINT');
      const code = await Promise.race([demo.exited, sleep(20_000 * PATIENCE, 'still running', { ref: false })]);
      assert.equal(code, 0, `exit code after Ctrl-C; stderr:\n${demo.stderr()}`);
      await eventually(async () => !processes.some(alive), 5_000, 'no process of the demo left');
      assert.equal(existsSync(dataDir), false, 'the temporary directory is removed');
      assert.deepEqual(await demoDirs(tmp), [], 'no other directory of the demo left');
      assert.equal(demo.stderr(), '');
    } finally {
      if (demo.child.exitCode === null) {
        demo.child.kill('SIGKILL');
        await demo.exited;
      }
    }
  });

  it('leaves nothing behind when its terminal closes (SIGHUP to the whole process group)', async () => {
    const tmp = await tempDir('edgeflow-demo-test-');
    const demo = startDemo(['--devices', String(DEVICES), '--bake', '10s', '--port', '0'], tmp, {
      ownProcessGroup: true,
    });
    try {
      const dataDir = await printed(demo, /^ {2}data\s+(\S+)/m);
      await printed(demo, /watch (dep_\w+) --server /);
      const processes = descendants(demo.child.pid!);
      assert.ok(processes.length >= 2, 'the simulated devices run in child processes');
      // The terminal goes away: its output is gone, and every process of the session gets SIGHUP.
      demo.child.stdout!.destroy();
      process.kill(-demo.child.pid!, 'SIGHUP');
      const code = await Promise.race([demo.exited, sleep(30_000 * PATIENCE, 'still running', { ref: false })]);
      assert.notEqual(code, 'still running', `the demo ends on SIGHUP; stderr:\n${demo.stderr()}`);
      await eventually(async () => !processes.some(alive), 10_000, 'no process of the demo left');
      assert.equal(existsSync(dataDir), false, 'the temporary directory is removed');
      assert.deepEqual(await demoDirs(tmp), [], 'no other directory of the demo left');
    } finally {
      if (demo.child.exitCode === null && demo.child.signalCode === null) {
        process.kill(-demo.child.pid!, 'SIGKILL');
        await demo.exited;
      }
    }
  });

  it('ends in one line when the port given is in use, and leaves nothing behind', async () => {
    const tmp = await tempDir('edgeflow-demo-test-');
    const busy = net.createServer().listen(0, '0.0.0.0');
    await once(busy, 'listening');
    const { port } = busy.address() as net.AddressInfo;
    try {
      const demo = startDemo(['--port', String(port)], tmp);
      assert.equal(await demo.exited, 1);
      assert.equal(
        demo.stderr(),
        `error: port ${port} is in use: choose another with --port, or leave --port out for a free one\n`,
      );
      assert.deepEqual(await demoDirs(tmp), []);
    } finally {
      busy.close();
    }
  });
});
