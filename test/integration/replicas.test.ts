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

type Refusal = { error: { code: string; message: string } };
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
  const extra: Replica[] = [];

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
        // A replica silent for three beats (1.5 s) is dead.
        EDGEFLOW_REPLICA_BEAT_MS: '500',
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
    for (const version of ['1.1.0', '1.2.0', '1.3.0']) {
      const content = Buffer.from(`firmware ${version} `.repeat(2000));
      const uploaded = await postFirmware(a.url, org.adminKey, { version, sha256: sha256Of(content) }, { content });
      assert.equal(uploaded.status, 201, JSON.stringify(uploaded.body));
    }
    device = await registerDevice(asServer(a), org.adminKey);
  });

  after(async () => {
    // The schema goes whatever failed before it: a test schema left behind is a leak in CI's database.
    try {
      for (const watcher of watchers) watcher.stop();
      for (const agent of agents) await agent.stop().catch(() => {});
      for (const replica of [a, b, ...extra]) {
        if (replica && replica.child.exitCode === null) {
          replica.child.kill('SIGCONT');
          replica.child.kill('SIGTERM');
          await replica.exited;
        }
      }
      await s3?.stop();
    } finally {
      await dropSchema(schema);
    }
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
  it('a single update asked of replica A reaches the device through replica B, which holds its tunnel', async () => {
    const nodes = await nodesOf([device.deviceId]);
    const onB = nodes.get(device.deviceId);
    assert.ok(onB, 'the device is online on a replica');
    const requested = await asServer(a).api('POST', `/api/v1/devices/${device.deviceId}/ota/update`, org.adminKey, {
      version: '1.3.0',
    });
    assert.equal(requested.status, 202, JSON.stringify(requested.body));
    await eventually(
      async () =>
        (await asServer(a).api('GET', `/api/v1/devices/${device.deviceId}/ota`, org.adminKey)).body.current_version ===
        '1.3.0',
      30_000,
      'the device updated to 1.3.0',
    );
  });

  it("a device's answer through the other replica decides, and one held nowhere is offline", async () => {
    const other = await registerDevice(asServer(a), org.adminKey);
    const raw = await connectRaw(b.url, other);
    try {
      const asked = asServer(a).api<Refusal>('POST', `/api/v1/devices/${other.deviceId}/ota/update`, org.adminKey, {
        version: '1.3.0',
        force: true,
      });
      const command = await raw.next('command', 15_000);
      assert.equal(command.action, 'health_check');
      raw.send({ type: 'response', id: command.id, status: 'success', data: { status: 'degraded' } });
      const refused = await asked;
      assert.equal(refused.status, 409, JSON.stringify(refused.body));
      assert.equal(refused.body.error.code, 'device_unhealthy');
      assert.match(refused.body.error.message, /degraded/, 'the status the device gave B reached A');
    } finally {
      await raw.close();
    }
    await eventually(
      async () => !(await nodesOf([other.deviceId])).has(other.deviceId),
      15_000,
      'the device is offline once its tunnel closed',
    );
    const offline = await asServer(a).api<Refusal>(
      'POST',
      `/api/v1/devices/${other.deviceId}/ota/update`,
      org.adminKey,
      {
        version: '1.3.0',
        force: true,
      },
    );
    assert.equal(offline.status, 409, JSON.stringify(offline.body));
    assert.equal(offline.body.error.code, 'device_offline');
  });

  it('a replica killed with SIGKILL is found dead by the others, which mark its devices offline', async () => {
    const c = await startReplica('c');
    extra.push(c);
    const orphan = await registerDevice(asServer(a), org.adminKey);
    const raw = await connectRaw(c.url, orphan);
    try {
      const node = (await nodesOf([orphan.deviceId])).get(orphan.deviceId);
      assert.ok(node, 'online on C');
      c.child.kill('SIGKILL');
      await c.exited;
      await eventually(
        async () => !(await nodesOf([orphan.deviceId])).has(orphan.deviceId),
        15_000,
        "C's device marked offline by the replicas still beating",
      );
      const [left] = await query<{ n: number }>('SELECT count(*)::int AS n FROM server_nodes WHERE id = $1', [node]);
      assert.equal(left?.n, 0, 'C is no longer among the replicas');
    } finally {
      await raw.close();
    }
  });

  it('a replica taken for dead (a late beat) registers again and says its devices are online', async () => {
    const onA = watch(a.url, org.adminKey);
    watchers.push(onA);
    await sleep(300);
    const node = (await nodesOf([device.deviceId])).get(device.deviceId);
    assert.ok(node);
    // B stalls past three beats (a stopped process): A takes it for dead, then B goes on.
    b.child.kill('SIGSTOP');
    try {
      await eventually(
        async () => (await query('SELECT 1 FROM server_nodes WHERE id = $1', [node])).length === 0,
        15_000,
        'A forgets the stalled B',
      );
    } finally {
      b.child.kill('SIGCONT');
    }
    const presence = () =>
      onA.events
        .filter((e) => e.event === 'device' && e.data.device_id === device.deviceId && 'online' in e.data)
        .map((e) => e.data.online);
    await eventually(
      async () => presence().join() === 'false,true',
      15_000,
      `offline (taken for dead), then online again (B registered again): ${presence().join()}`,
    );
    assert.equal((await nodesOf([device.deviceId])).get(device.deviceId), node, 'held by B again');
  });

  /** Runs a statement in the test's schema. */
  async function query<Row>(text: string, params: unknown[]): Promise<Row[]> {
    const db = await openDb({ databaseUrl: TEST_DATABASE_URL, schema });
    try {
      return await db.query<Row>(text, params);
    } finally {
      await db.close();
    }
  }

  /** The replica holding each online device's tunnel. */
  async function nodesOf(deviceIds: string[]): Promise<Map<string, string>> {
    const rows = await query<{ device_id: string; connected_node: string }>(
      'SELECT device_id, connected_node FROM devices WHERE device_id = ANY($1::text[]) AND online',
      [deviceIds],
    );
    return new Map(rows.map((row) => [row.device_id, row.connected_node]));
  }
});
