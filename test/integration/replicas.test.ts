/**
 * Two server processes on one PostgreSQL and one S3-protocol server, as replicas behind a load
 * balancer: what one process changes reaches the SSE clients and the engine of the other
 * through the database event feed. A device's tunnel is held by replica B; changes made by B,
 * by A and by a third writer (this test process) are seen everywhere. The feed survives the
 * loss of its listening connection and says so (`resync`).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import type { Agent } from '../../src/agent/agent.ts';
import { ApiClient } from '../../src/cli/client.ts';
import { openDb } from '../../src/server/infra/db.ts';
import { createMetrics } from '../../src/server/infra/metrics.ts';
import { UpdateTransitions } from '../../src/server/updates/transitions.ts';
import { createAgent, registerDevice } from '../helpers/agents.ts';
import { CLI } from '../helpers/cli.ts';
import { postFirmware, sha256Of } from '../helpers/firmware.ts';
import { connectRaw, eventually } from '../helpers/raw-device.ts';
import { type RunningS3rver, startS3rver } from '../helpers/s3rver.ts';
import { backendsUnderTest, dropSchema, jsonApi, TEST_DATABASE_URL, type TestServer } from '../helpers/server.ts';
import { tempDir } from '../helpers/temp.ts';

const onPostgres = (await backendsUnderTest()).some((backend) => backend.db === 'postgres');

interface Replica {
  child: ChildProcess;
  url: string;
  stderr: string[];
  exited: Promise<unknown>;
}

type StreamedEvent = { event: string; data: Record<string, unknown> };

/** An SSE client of one replica, collecting what it receives. */
function watch(url: string, key: string): { events: StreamedEvent[]; stop(): void } {
  const controller = new AbortController();
  const events: StreamedEvent[] = [];
  (async () => {
    for await (const event of new ApiClient({ server: url, key }).events(controller.signal)) events.push(event);
  })().catch(() => {});
  return { events, stop: () => controller.abort() };
}

describe('two server processes on one PostgreSQL', { skip: !onPostgres && 'PostgreSQL is not reachable' }, () => {
  const adminKey = `efo_test_${randomBytes(12).toString('hex')}`;
  const schema = `t_${randomBytes(6).toString('hex')}`;
  const databaseUrl = `${TEST_DATABASE_URL}?options=${encodeURIComponent(`-c search_path=${schema}`)}`;
  let s3: RunningS3rver;
  let a: Replica;
  let b: Replica;
  const agents: Agent[] = [];
  const watchers: { stop(): void }[] = [];

  async function startReplica(name: string): Promise<Replica> {
    const child = spawn(process.execPath, [CLI, 'serve'], {
      env: {
        ...process.env,
        PORT: '0',
        HOST: '127.0.0.1',
        DATABASE_URL: databaseUrl,
        EDGEFLOW_STORE: 's3',
        S3_BUCKET: s3.bucket,
        S3_ENDPOINT: s3.endpoint,
        S3_ACCESS_KEY_ID: s3.accessKeyId,
        S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
        EDGEFLOW_DATA_DIR: await tempDir(`edgeflow-replica-${name}-`),
        EDGEFLOW_ADMIN_KEY: adminKey,
        // No timer-driven dispatch within the test: only a wake-up from the feed dispatches.
        EDGEFLOW_DISPATCH_INTERVAL_MS: '600000',
        LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const stdout: string[] = [];
    const stderr: string[] = [];
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => stdout.push(chunk));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => stderr.push(chunk));
    const exited = new Promise((resolve) => child.once('exit', resolve));
    for (let waited = 0; waited < 60_000; waited += 100) {
      const match = /listening on (\S+)/.exec(stdout.join(''));
      if (match) return { child, url: match[1]!, stderr, exited };
      if (child.exitCode !== null) throw new Error(`replica ${name} exited: ${stderr.join('')}`);
      await sleep(100);
    }
    throw new Error(`replica ${name} did not start: ${stderr.join('')}`);
  }

  /** What createAgent needs of a server: its URL and the API. */
  function asServer(replica: Replica): TestServer {
    return {
      url: replica.url,
      api: jsonApi(replica.url),
    } as unknown as TestServer;
  }

  let org: { id: string; adminKey: string };
  let device: { deviceId: string; apiKey: string };

  before(async () => {
    s3 = await startS3rver();
    const admin = await openDb({ databaseUrl: TEST_DATABASE_URL });
    await admin.exec(`CREATE SCHEMA ${schema}`);
    await admin.close();
    // One after the other: the first migrates the schema.
    a = await startReplica('a');
    b = await startReplica('b');
    const created = await asServer(a).api<{ id: string; admin_key: string }>('POST', '/api/v1/orgs', adminKey, {
      name: 'replicated',
    });
    org = { id: created.body.id, adminKey: created.body.admin_key };
    for (const version of ['1.1.0', '1.2.0']) {
      const content = Buffer.from(`firmware ${version} `.repeat(2000));
      const uploaded = await postFirmware(a.url, org.adminKey, { version, sha256: sha256Of(content) }, { content });
      assert.equal(uploaded.status, 201, JSON.stringify(uploaded.body));
    }
    device = await registerDevice(asServer(a), org.adminKey);
  });

  after(async () => {
    for (const watcher of watchers) watcher.stop();
    for (const agent of agents) await agent.stop();
    for (const replica of [a, b]) {
      if (replica && replica.child.exitCode === null) {
        replica.child.kill('SIGTERM');
        await replica.exited;
      }
    }
    await s3?.stop();
    await dropSchema(schema);
  });

  it('an SSE client of replica A sees the device come online and update on replica B', async () => {
    const onA = watch(a.url, org.adminKey);
    watchers.push(onA);
    await sleep(300);
    const agent = await createAgent(asServer(b), org, device);
    agents.push(agent);
    await agent.start();
    await eventually(
      async () => onA.events.some((e) => e.event === 'device' && e.data.device_id === device.deviceId && e.data.online),
      15_000,
      "A's stream shows the device online on B",
    );
    const requested = await asServer(b).api('POST', `/api/v1/devices/${device.deviceId}/ota/update`, org.adminKey, {
      version: '1.1.0',
    });
    assert.equal(requested.status, 202, JSON.stringify(requested.body));
    await eventually(
      async () => onA.events.some((e) => e.event === 'ota' && e.data.status === 'completed'),
      30_000,
      "A's stream shows the update completed on B",
    );
    const statuses = onA.events.filter((e) => e.event === 'ota').map((e) => e.data.status);
    for (const status of ['queued', 'dispatched', 'in_progress', 'completed']) assert.ok(statuses.includes(status));
    const record = await asServer(a).api('GET', `/api/v1/devices/${device.deviceId}/ota`, org.adminKey);
    assert.equal(record.body.current_version, '1.1.0');
  });

  it("an update queued by another process wakes replica B's engine at once", async () => {
    // This test process is the other writer; B's timer would not dispatch for ten minutes.
    const db = await openDb({ databaseUrl: TEST_DATABASE_URL, schema });
    try {
      const transitions = new UpdateTransitions({
        db,
        metrics: createMetrics(),
        log: pino({ level: 'silent' }),
        updateTimeoutSeconds: 1800,
      });
      const [queued] = await transitions.create([
        {
          id: `upd_replicas_${Date.now()}`,
          organizationId: org.id,
          deviceId: device.deviceId,
          deploymentId: null,
          kind: 'update',
          targetVersion: '1.2.0',
          fromVersion: '1.1.0',
          force: false,
        },
      ]);
      assert.ok(queued);
      await eventually(
        async () =>
          (await asServer(a).api('GET', `/api/v1/devices/${device.deviceId}/ota`, org.adminKey)).body
            .current_version === '1.2.0',
        30_000,
        'the device updated to 1.2.0',
      );
    } finally {
      await db.close();
    }
  });

  it('the listener of replica A comes back after its connection is killed, and says so on its streams', async () => {
    const onA = watch(a.url, org.adminKey);
    watchers.push(onA);
    await sleep(300);
    const admin = await openDb({ databaseUrl: TEST_DATABASE_URL });
    try {
      const killed = await admin.query<{ pid: number }>(
        `SELECT pg_terminate_backend(pid) AS killed, pid FROM pg_stat_activity WHERE application_name = $1`,
        [`edgeflow-listen:${a.child.pid}`],
      );
      assert.equal(killed.length, 1, "A's listening connection is found by its name");
    } finally {
      await admin.close();
    }
    await eventually(async () => onA.events.some((e) => e.event === 'resync'), 15_000, 'a resync on A');
    // And what B does afterwards reaches A again.
    const other = await registerDevice(asServer(a), org.adminKey);
    const raw = await connectRaw(b.url, other);
    try {
      await eventually(
        async () => onA.events.some((e) => e.event === 'device' && e.data.device_id === other.deviceId),
        15_000,
        "B's presence change on A's stream after the reconnect",
      );
    } finally {
      await raw.close();
    }
  });

  it('deleting a device on replica A closes its tunnel on replica B', async () => {
    const doomed = await registerDevice(asServer(a), org.adminKey);
    const raw = await connectRaw(b.url, doomed);
    const deleted = await asServer(a).api('DELETE', `/api/v1/devices/${doomed.deviceId}`, org.adminKey);
    assert.equal(deleted.status, 204);
    const closed = await Promise.race([raw.closed, sleep(10_000).then(() => undefined)]);
    assert.equal(closed?.code, 4003, 'closed by B with the authentication-failed code');
  });
});
