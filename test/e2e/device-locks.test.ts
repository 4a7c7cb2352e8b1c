/**
 * Device update locks end to end, on each backend: real agents (A/B slots on disk) over the real
 * tunnel, locks taken by the agent's own command (`edgeflow-ota agent lock`, a child process) and
 * by a "script" writing a file into the lock directory. A locked device's attempt waits (queued,
 * reason `locked`, never failed, no retry spent) while the others complete, and goes out when the
 * lock is released, expires (`until`) or is overridden (`force_after`); a single update to a
 * device the server knows locked answers 409 device_locked; a command that reaches a device locked
 * a moment before the server heard of it ends waiting, not failed.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { Agent } from '../../src/agent/agent.ts';
import { type OtaRecord, registerDevice, removeAgentDirs, settledOta, startAgent } from '../helpers/agents.ts';
import { CLI } from '../helpers/cli.ts';
import type { DeploymentBody, DeploymentDeviceBody } from '../helpers/deployment-fleet.ts';
import { makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
import { eventually } from '../helpers/raw-device.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';
import { tempDir } from '../helpers/temp.ts';

const run = promisify(execFile);
const backends = await backendsUnderTest();
after(async () => {
  await removeAgentDirs();
  await stopSharedServices();
});

type DeviceBody = { device_id: string; lock: { reason: string; until: string | null; since: string } | null };
type ErrorBody = { error: { code: string; message: string; details?: Record<string, unknown> } };

for (const backend of backends) {
  describe(`device update locks on ${backend.name}`, () => {
    let server: TestServer;
    let org: { id: string; adminKey: string };
    const agents: Agent[] = [];
    let version = 1;

    before(async () => {
      server = await startTestServer(backend, {
        env: { EDGEFLOW_DISPATCH_INTERVAL_MS: '200', EDGEFLOW_HEALTH_CHECK_TIMEOUT_MS: '3000' },
      });
      org = await server.createOrg('locks');
    });
    afterEach(async () => {
      await Promise.all(agents.splice(0).map((agent) => agent.stop()));
    });
    after(() => server?.close());

    const api = <T>(method: string, path: string, body?: unknown) => server.api<T>(method, path, org.adminKey, body);
    /** A new firmware version for each scenario: its devices start on 1.0.0. */
    async function newVersion(): Promise<string> {
      const target = `1.${version++}.0`;
      const file = await makeFirmwareFile(64 * 1024);
      const upload = await postFirmware(server.url, org.adminKey, { version: target, sha256: file.sha256 }, file);
      assert.equal(upload.status, 201);
      return target;
    }
    /** `count` real agents, each with its data directory (its lock directory inside) known. */
    async function fleet(name: string, count: number) {
      const devices: { deviceId: string; agent: Agent; dataDir: string; lockDir: string }[] = [];
      for (let i = 1; i <= count; i++) {
        const device = await registerDevice(server, org.adminKey, { device_id: `${name}-${i}`, tags: [name] });
        const dataDir = await tempDir('edgeflow-lock-agent-');
        const agent = await startAgent(server, org, device, { dataDir, lockRescanMs: 200 });
        agents.push(agent);
        devices.push({ deviceId: device.deviceId, agent, dataDir, lockDir: join(dataDir, 'locks') });
      }
      return devices;
    }
    const device = async (id: string) => (await api<DeviceBody>('GET', `/api/v1/devices/${id}`)).body;
    const untilLock = (id: string, locked: boolean) =>
      eventually(
        async () => ((await device(id)).lock !== null) === locked,
        10_000,
        `${id} ${locked ? '' : 'un'}locked`,
      );
    const deploymentOf = async (id: string) => (await api<DeploymentBody>('GET', `/api/v1/deployments/${id}`)).body;
    const rowsOf = async (id: string) =>
      (await api<{ devices: DeploymentDeviceBody[] }>('GET', `/api/v1/deployments/${id}/devices?limit=100`)).body
        .devices;
    async function until(
      id: string,
      check: (d: DeploymentBody, rows: DeploymentDeviceBody[]) => boolean,
      what: string,
    ) {
      let last: unknown;
      await eventually(
        async () => {
          const [d, rows] = [await deploymentOf(id), await rowsOf(id)];
          last = { status: d.status, counts: d.counts, rows };
          return check(d, rows);
        },
        20_000,
        what,
      ).catch((error: Error) => {
        throw new Error(`${error.message}: ${JSON.stringify(last)}`);
      });
    }
    const rowOf = (rows: DeploymentDeviceBody[], id: string) => rows.find((row) => row.device_id === id)!;
    async function deploy(tag: string, target: string, extra: Record<string, unknown> = {}) {
      const created = await api<DeploymentBody>('POST', '/api/v1/deployments', {
        version: target,
        target: { tags: [tag] },
        strategy: 'all_at_once',
        ...extra,
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      return created.body.id;
    }
    /** The locked device waits (queued, reason locked, the lock's reason) while the others complete. */
    async function waitsWhileOthersComplete(id: string, locked: string, others: string[], reason: string) {
      await until(
        id,
        (_d, rows) =>
          others.every((other) => rowOf(rows, other).state === 'completed') && rowOf(rows, locked).reason === 'locked',
        'the others completed, the locked one waiting',
      );
      const rows = await rowsOf(id);
      const waiting = rowOf(rows, locked);
      assert.equal(waiting.state, 'queued');
      assert.equal(waiting.detail, reason);
      assert.equal(waiting.explanation, `locked by the device: ${reason}`);
      const shown = await deploymentOf(id);
      assert.equal(shown.status, 'running');
      assert.equal(shown.counts.queued, 1);
      assert.equal(shown.counts.failed + shown.counts.retrying + shown.counts.timed_out, 0);
    }

    it('a device locked with `edgeflow-agent lock` waits through a rollout; unlocking it completes the rollout', async () => {
      const target = await newVersion();
      const [held, ...others] = await fleet('cmd', 3);
      const agentCli = (args: string[]) => run(process.execPath, [CLI, 'agent', ...args], { timeout: 60_000 });
      const taken = await agentCli([
        'lock',
        '--data-dir',
        held!.dataDir,
        '--reason',
        'backup running',
        '--name',
        'backup',
      ]);
      assert.match(taken.stdout, /locked \(backup\): backup running/);
      await untilLock(held!.deviceId, true);
      const shown = await device(held!.deviceId);
      assert.equal(shown.lock?.reason, 'backup running');
      assert.equal(shown.lock?.until, null);
      const listed = await api<{ devices: DeviceBody[] }>('GET', '/api/v1/devices?tag=cmd');
      assert.equal(listed.body.devices.find((d) => d.device_id === held!.deviceId)?.lock?.reason, 'backup running');

      const id = await deploy('cmd', target);
      await waitsWhileOthersComplete(
        id,
        held!.deviceId,
        others.map((other) => other.deviceId),
        'backup running',
      );
      assert.equal(held!.agent.currentVersion, '1.0.0');

      await agentCli(['unlock', '--data-dir', held!.dataDir, '--name', 'backup']);
      await until(id, (d) => d.status === 'completed', 'deployment completed after the unlock');
      assert.equal(held!.agent.currentVersion, target);
      assert.equal((await device(held!.deviceId)).lock, null);
    });

    it("a script's lock file holds a device; a single update answers 409 device_locked; the lock's until releases it", async () => {
      const target = await newVersion();
      const [held, other] = await fleet('script', 2);
      // What a script does: a file named after it in the lock directory, the reason on the first line.
      await mkdir(held!.lockDir, { recursive: true });
      const untilAt = new Date(Date.now() + 3_600_000).toISOString();
      await writeFile(join(held!.lockDir, 'cnc-job'), `milling part 42\nuntil=${untilAt}\n`);
      await untilLock(held!.deviceId, true);
      assert.equal((await device(held!.deviceId)).lock?.until, untilAt);

      const single = await api<ErrorBody>('POST', `/api/v1/devices/${held!.deviceId}/ota/update`, { version: target });
      assert.equal(single.status, 409, JSON.stringify(single.body));
      assert.equal(single.body.error.code, 'device_locked');
      assert.match(single.body.error.message, /milling part 42/);
      assert.equal(single.body.error.details?.until, untilAt);

      const id = await deploy('script', target);
      await until(
        id,
        (_d, rows) =>
          rowOf(rows, other!.deviceId).state === 'completed' && rowOf(rows, held!.deviceId).reason === 'locked',
        'the other completed, the locked one waiting',
      );
      // The script shortens its lock; nobody removes the file: its until passes and the rollout completes.
      const soon = new Date(Date.now() + 1000).toISOString();
      await writeFile(join(held!.lockDir, 'cnc-job'), `milling part 42\nuntil=${soon}\n`);
      await until(id, (d) => d.status === 'completed', 'deployment completed once the lock expired');
      assert.equal(held!.agent.currentVersion, target);
      assert.equal((await device(held!.deviceId)).lock, null);
    });

    it('force_after overrides a lock still held: the agent installs despite it', async () => {
      const target = await newVersion();
      const [held, other] = await fleet('forced', 2);
      await mkdir(held!.lockDir, { recursive: true });
      await writeFile(join(held!.lockDir, 'backup'), 'long backup\n');
      await untilLock(held!.deviceId, true);
      const id = await deploy('forced', target, { force_after: '3s' });
      const created = (await deploymentOf(id)) as DeploymentBody & { force_after: string | null };
      assert.ok(created.force_after && Date.parse(created.force_after) > Date.now() - 60_000, JSON.stringify(created));
      await until(id, (d) => d.status === 'completed', 'deployment completed past force_after');
      assert.equal(held!.agent.currentVersion, target);
      assert.equal(other!.agent.currentVersion, target);
      // The lock itself is the device's: still held.
      assert.equal((await device(held!.deviceId)).lock?.reason, 'long backup');
      const bad = await api<ErrorBody>('POST', '/api/v1/deployments', {
        version: target,
        target: { tags: ['forced'] },
        strategy: 'all_at_once',
        force_after: 'tomorrow',
      });
      assert.equal(bad.status, 400);
      assert.equal(bad.body.error.code, 'invalid_force_after');
    });

    it('an update that reaches a device locked a moment before the server heard ends waiting, not failed', async () => {
      const target = await newVersion();
      const [held] = await fleet('race', 1);
      await mkdir(held!.lockDir, { recursive: true });
      await writeFile(join(held!.lockDir, 'job'), 'just started\n');
      await untilLock(held!.deviceId, true);
      // The server has not heard yet: as if the lock were taken as the command left.
      await server.db.query(
        `UPDATE devices SET lock_since = NULL, lock_reason = NULL, lock_until = NULL WHERE device_id = $1`,
        [held!.deviceId],
      );
      await untilLock(held!.deviceId, false);
      const single = await api<{ update_id: string }>('POST', `/api/v1/devices/${held!.deviceId}/ota/update`, {
        version: target,
      });
      assert.equal(single.status, 202, JSON.stringify(single.body));
      // The agent refuses (device_locked): the update waits, and the server knows the lock again.
      await untilLock(held!.deviceId, true);
      const record = (await api<OtaRecord>('GET', `/api/v1/devices/${held!.deviceId}/ota`)).body;
      assert.equal(record.update_status, 'queued');
      assert.equal(record.ota_status, 'updating');
      assert.equal((await device(held!.deviceId)).lock?.reason, 'just started');
      assert.equal(held!.agent.currentVersion, '1.0.0');

      const unlocked = await run(process.execPath, [
        CLI,
        'agent',
        'unlock',
        '--lock-dir',
        held!.lockDir,
        '--name',
        'job',
      ]);
      assert.match(unlocked.stdout, /unlocked \(job\)/);
      const settled = await settledOta(server, org.adminKey, held!.deviceId);
      assert.equal(settled.ota_status, 'completed', JSON.stringify(settled));
      assert.equal(held!.agent.currentVersion, target);
    });
  });
}
