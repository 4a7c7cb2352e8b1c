/**
 * Scale-out (SPEC "Scale-out"): three replicas behind a real HAProxy run with deploy/haproxy.cfg,
 * on the local PostgreSQL and an S3-protocol server, with a simulated fleet (the real agent)
 * connecting through the balancer. Deployments spread their dispatch over the replicas that hold
 * the tunnels, every replica streams every change, firmware goes from the bucket to the devices
 * without touching a replica, and a replica killed mid-rollout loses nothing: its devices come
 * back through the balancer to the others, the rollout finishes with each device updated once,
 * and the replica rejoins when it is started again.
 *
 * Tests named "(relay)" or "(replica beats)" need the cross-replica command relay and the
 * EDGEFLOW_REPLICA_BEAT_MS setting (a dead replica found after three missed beats).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import type { OtaResultPayload } from '../../src/protocol/tunnel.ts';
import { fetchSigningKey, registerDevices } from '../../src/simulator/register.ts';
import { type Fleet, runFleet, type SimulatedDevice } from '../../src/simulator/simulator.ts';
import { registerDevice } from '../helpers/agents.ts';
import { type DeploymentBody, FLEET_SERVER_ENV, quickAgents } from '../helpers/deployment-fleet.ts';
import { type FirmwareFile, makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
import { connectRaw, eventually, PATIENCE, type RawDevice } from '../helpers/raw-device.ts';
import { type Replica, type ReplicaSet, replicasSkipReason, startReplicas } from '../helpers/replicas.ts';
import { jsonApi, type TestServer } from '../helpers/server.ts';

const skip = await replicasSkipReason();
const DEVICES = 30;
const FIRMWARE_BYTES = 64 * 1024;

describe('three replicas behind HAProxy', { skip }, () => {
  let set: ReplicaSet;
  let fleet: Fleet;
  let org: { id: string; adminKey: string };
  let deviceIds: string[];
  const firmware = new Map<string, FirmwareFile>();
  const raws: RawDevice[] = [];
  /** Every result a device reported: which update, how it ended. */
  const results: { deviceId: string; result: OtaResultPayload }[] = [];
  /** What the first deployment's events looked like on each replica's stream. */
  let watches: ReturnType<ReplicaSet['watch']>[];
  let canaryId: string;

  /** The balancer, or one replica directly. */
  const api = <T = Record<string, unknown>>(method: string, path: string, body?: unknown, via?: Replica) =>
    jsonApi(via?.url ?? set.url)<T>(method, path, org.adminKey, body);
  const asServer = (url: string) => ({ url, api: jsonApi(url) }) as unknown as TestServer;
  const live = () => set.replicas.filter((replica) => replica.child?.exitCode === null && !replica.child.signalCode);

  const placement = () =>
    set.db.query<{ device_id: string; online: boolean; connected_node: string | null; current_version: string }>(
      'SELECT device_id, online, connected_node, current_version FROM devices WHERE organization_id = $1',
      [org.id],
    );
  const fleetPlacement = async () => (await placement()).filter((device) => deviceIds.includes(device.device_id));
  const attemptsOf = (deploymentId: string) =>
    set.db.query<{ device_id: string; id: string; status: string; attempts: number; kind: string }>(
      'SELECT device_id, id, status, attempts, kind FROM ota_updates WHERE deployment_id = $1',
      [deploymentId],
    );

  async function deploy(body: Record<string, unknown>, via: Replica): Promise<string> {
    const created = await api<DeploymentBody>(
      'POST',
      '/api/v1/deployments',
      { target: { device_ids: deviceIds }, max_retries: 0, ...body },
      via,
    );
    assert.equal(created.status, 201, JSON.stringify(created.body));
    return created.body.id;
  }

  async function untilCompleted(id: string): Promise<DeploymentBody> {
    let last: DeploymentBody | undefined;
    await eventually(
      async () => {
        last = (await api<DeploymentBody>('GET', `/api/v1/deployments/${id}`)).body;
        return last.status === 'completed';
      },
      30_000,
      `deployment ${id} completed`,
      // A refusal by the balancer (all replicas down for a moment) is no progress, and no answer.
      () => last?.counts?.completed,
    ).catch((error: Error) => {
      throw new Error(`${error.message}: ${JSON.stringify(last)}; fleet ${JSON.stringify(fleet.counters())}`);
    });
    return last!;
  }

  /** Each device of the fleet reported one completed result for its attempt of the deployment, and nothing else. */
  async function assertUpdatedOnce(deploymentId: string, version: string): Promise<Map<string, number>> {
    const rows = (await attemptsOf(deploymentId)).filter((row) => row.kind === 'update');
    const byDevice = new Map<string, typeof rows>();
    for (const row of rows) byDevice.set(row.device_id, [...(byDevice.get(row.device_id) ?? []), row]);
    assert.deepEqual([...byDevice.keys()].sort(), [...deviceIds].sort(), 'one attempt row per device, none missing');
    const attempts = new Map<string, number>();
    for (const [deviceId, own] of byDevice) {
      assert.equal(own.length, 1, `${deviceId} has one attempt (no retries asked): ${JSON.stringify(own)}`);
      const [row] = own as [(typeof rows)[number]];
      assert.equal(row.status, 'completed', `${deviceId}: ${JSON.stringify(row)}`);
      attempts.set(deviceId, row.attempts);
      const reported = results.filter((entry) => entry.result.update_id === row.id);
      assert.deepEqual(
        reported.map((entry) => [entry.deviceId, entry.result.status, entry.result.current_version]),
        [[deviceId, 'completed', version]],
        `${deviceId} installed ${row.id} once`,
      );
    }
    return attempts;
  }

  before(async () => {
    set = await startReplicas({
      count: 3,
      env: {
        ...FLEET_SERVER_ENV,
        // A replica killed mid-bake is no device's failure: its devices are back within seconds.
        EDGEFLOW_BAKE_OFFLINE_GRACE_SECONDS: '60',
        // Beats every second, dead after three missed (the relay change's setting).
        EDGEFLOW_REPLICA_BEAT_MS: '1000',
      },
    });
    const created = await jsonApi(set.url)<{ id: string; admin_key: string }>('POST', '/api/v1/orgs', set.adminKey, {
      name: 'scale-out',
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    org = { id: created.body.id, adminKey: created.body.admin_key };
    for (const version of ['1.1.0', '1.2.0', '1.3.0']) {
      const file = await makeFirmwareFile(FIRMWARE_BYTES);
      firmware.set(version, file);
      const uploaded = await postFirmware(set.url, org.adminKey, { version, sha256: file.sha256 }, file);
      assert.equal(uploaded.status, 201, JSON.stringify(uploaded.body));
    }
    const credentials = await registerDevices({ server: set.url, key: org.adminKey, count: DEVICES, prefix: 'so-' });
    deviceIds = credentials.map((device) => device.deviceId);
    fleet = runFleet({
      server: set.url,
      devices: credentials,
      allowInsecure: true,
      publicKeyPem: await fetchSigningKey(set.url, org.adminKey),
      organizationId: org.id,
      reconnectBaseMs: 50,
      agentOptions: quickAgents,
    });
    fleet.events.on('result', (device: SimulatedDevice, result: OtaResultPayload) =>
      results.push({ deviceId: device.deviceId, result }),
    );
    assert.ok(await fleet.waitUntilAllConnected(30_000 * PATIENCE), JSON.stringify(fleet.counters()));
    watches = set.replicas.map((replica) => set.watch(replica, org.adminKey));
    await Promise.all(watches.map((watch) => watch.opened));
  });

  after(async () => {
    for (const raw of raws) await raw.close().catch(() => {});
    await fleet?.stop();
    await set?.stop();
  });

  it('devices connecting through the balancer spread over every replica', async () => {
    await eventually(
      async () => {
        const devices = await fleetPlacement();
        return (
          devices.every((device) => device.online) &&
          set.replicas.every((replica) => devices.some((device) => device.connected_node === replica.nodeId))
        );
      },
      10_000,
      'every device online, each replica holding some',
    ).catch(async (error: Error) => {
      throw new Error(`${error.message}: ${JSON.stringify(await fleetPlacement())}`);
    });
    for (const replica of set.replicas) {
      assert.ok((await set.metric(replica, 'edgeflow_connected_devices')) > 0, `${replica.name} counts its tunnels`);
    }
  });

  it('a canary deployment created on replica 1 completes, dispatched by several replicas, each device updated once', async () => {
    const dispatchedBefore = await Promise.all(
      set.replicas.map((replica) => set.metric(replica, 'edgeflow_commands_dispatched_total')),
    );
    canaryId = await deploy(
      { version: '1.1.0', strategy: 'canary', canary_count: 3, bake_minutes: 0.05, rest_strategy: 'all_at_once' },
      set.replicas[0]!,
    );
    const done = await untilCompleted(canaryId);
    assert.equal(done.counts.completed, DEVICES);
    const dispatched = await Promise.all(
      set.replicas.map(async (replica, index) => {
        return (await set.metric(replica, 'edgeflow_commands_dispatched_total')) - dispatchedBefore[index]!;
      }),
    );
    assert.ok(dispatched.filter((count) => count > 0).length >= 2, `dispatched per replica: ${dispatched}`);
    // Nothing was lost or sent twice: every attempt went out once.
    const attempts = await assertUpdatedOnce(canaryId, '1.1.0');
    assert.deepEqual(
      [...attempts].filter(([, count]) => count !== 1),
      [],
      'each attempt dispatched once',
    );
    assert.equal(
      dispatched.reduce((sum, count) => sum + count, 0),
      DEVICES,
      'one command per device in all',
    );
  });

  it("the deployment's events reach the event stream of every replica", async () => {
    for (const [index, watch] of watches.entries()) {
      const ofCanary = (event: { data: Record<string, unknown> }) => event.data.deployment_id === canaryId;
      await eventually(
        async () =>
          watch.events.some(
            (event) => event.event === 'deployment' && ofCanary(event) && event.data.status === 'completed',
          ) &&
          watch.events.some((event) => event.event === 'ota' && ofCanary(event) && event.data.status === 'completed'),
        10_000,
        `${set.replicas[index]!.name}'s stream shows the deployment and its devices completing`,
      );
    }
  });

  it('firmware goes from the bucket to the devices: no byte through a replica or the balancer', async () => {
    // Every device fetched its image from the bucket's public endpoint (presigned GETs).
    assert.ok(set.bucket.firmwareGets >= DEVICES, `bucket GETs: ${set.bucket.firmwareGets}`);
    assert.ok(set.bucket.firmwareBytes >= DEVICES * FIRMWARE_BYTES, `bucket bytes: ${set.bucket.firmwareBytes}`);
    // No replica has a download route to serve (S3 store) or was asked for one.
    for (const replica of set.replicas) {
      const metrics = await set.metrics(replica);
      assert.doesNotMatch(metrics, /edgeflow_http_request_duration_seconds_count\{[^}]*route="\/dl/, replica.name);
    }
    assert.doesNotMatch(set.balancerLog(), /"GET \/(dl|edgeflow-test)\//, 'no download through the balancer');
  });

  it('a download link handed out by one replica works whichever replica the device talks to', async () => {
    const file = firmware.get('1.1.0')!;
    const expected = createHash('sha256')
      .update(await readFile(file.path))
      .digest('hex');
    for (const replica of set.replicas) {
      const link = await api<{ url: string }>('POST', '/api/v1/firmware/1.1.0/download-url', {}, replica);
      assert.equal(link.status, 200, JSON.stringify(link.body));
      assert.ok(
        link.body.url.startsWith(`${set.bucket.endpoint}/`),
        `${replica.name} links to the bucket: ${link.body.url}`,
      );
      const response = await fetch(link.body.url);
      assert.equal(response.status, 200, replica.name);
      assert.equal(
        createHash('sha256')
          .update(Buffer.from(await response.arrayBuffer()))
          .digest('hex'),
        expected,
      );
    }
  });

  it('a replica killed mid-rollout: its devices move to the others, each is updated once, the rollout completes, and the replica rejoins', async () => {
    const [first, victim] = set.replicas as [Replica, Replica, Replica];
    const id = await deploy({ version: '1.2.0', strategy: 'rolling', batch_size: 10, bake_minutes: 0.05 }, first);
    // Mid-rollout: the first devices are done, the rest of their batch and two batches are not.
    let progress: DeploymentBody | undefined;
    await eventually(
      async () => {
        progress = (await api<DeploymentBody>('GET', `/api/v1/deployments/${id}`)).body;
        return progress.counts.completed > 0;
      },
      30_000,
      'a first device updated',
    );
    assert.notEqual(progress!.status, 'completed', 'killed while the rollout runs');
    const onVictim = (await fleetPlacement())
      .filter((device) => device.connected_node === victim.nodeId)
      .map((device) => device.device_id);
    assert.ok(onVictim.length > 0, 'the victim holds tunnels');
    const victimNode = victim.nodeId;
    await set.kill(victim);

    // Its devices come back through the balancer, to the replicas still alive.
    const survivors = new Set(live().map((replica) => replica.nodeId));
    await eventually(
      async () => {
        const devices = (await fleetPlacement()).filter((device) => onVictim.includes(device.device_id));
        return devices.every((device) => device.online && survivors.has(device.connected_node ?? ''));
      },
      15_000,
      "the victim's devices online on the others",
    ).catch(async (error: Error) => {
      throw new Error(`${error.message}: ${JSON.stringify(await fleetPlacement())}`);
    });
    // HAProxy took it out of the rotation.
    await eventually(async () => set.balancerState(victim) === 'DOWN', 10_000, 'the victim marked down');

    await untilCompleted(id);
    // The scheduler's lease is held by the living: the last pass was not the victim's.
    const [lease] = await set.db.query<{ lease_node: string }>('SELECT lease_node FROM deployments WHERE id = $1', [
      id,
    ]);
    assert.ok(survivors.has(lease!.lease_node), `lease with ${lease!.lease_node}, the victim was ${victimNode}`);
    // Every device ended once; only a command the victim sent (and may have lost) went out again, same id.
    const attempts = await assertUpdatedOnce(id, '1.2.0');
    for (const [deviceId, count] of attempts) {
      assert.ok(count >= 1 && count <= (onVictim.includes(deviceId) ? 2 : 1), `${deviceId} dispatched ${count} times`);
    }

    // Started again on its port: it registers, HAProxy sees it ready and sends it new tunnels.
    await set.restart(victim);
    assert.notEqual(victim.nodeId, victimNode);
    const nodes = await set.db.query<{ id: string }>('SELECT id FROM server_nodes');
    assert.ok(
      nodes.some((node) => node.id === victim.nodeId),
      'the restarted replica is in server_nodes',
    );
    await eventually(async () => set.balancerState(victim) === 'UP', 10_000, 'the victim marked up again');
    const newcomer = await registerDevice(asServer(set.url), org.adminKey);
    await eventually(
      async () => {
        const raw = await connectRaw(set.url, { ...newcomer, version: '1.0.0' });
        try {
          let node: string | null = null;
          await eventually(
            async () => {
              const [row] = await set.db.query<{ connected_node: string | null }>(
                'SELECT connected_node FROM devices WHERE organization_id = $1 AND device_id = $2',
                [org.id, newcomer.deviceId],
              );
              node = row?.connected_node ?? null;
              return node !== null;
            },
            5000,
            'the newcomer online',
          );
          return node === victim.nodeId;
        } finally {
          await raw.close();
        }
      },
      10_000,
      'a new tunnel through the balancer lands on the restarted replica',
    );
  });

  it('(relay) a single-device update asked of a replica that does not hold the tunnel is accepted and completes', async () => {
    const [device] = (await fleetPlacement()).filter((one) => one.online && set.replicaOfNode(one.connected_node));
    assert.ok(device, 'an online device');
    const holder = set.replicaOfNode(device.connected_node)!;
    const other = live().find((replica) => replica !== holder)!;
    const requested = await api('POST', `/api/v1/devices/${device.device_id}/ota/update`, { version: '1.3.0' }, other);
    assert.equal(
      requested.status,
      202,
      `asked of ${other.name}, held by ${holder.name}: ${JSON.stringify(requested.body)}`,
    );
    await eventually(
      async () => {
        const record = (
          await api<{ ota_status: string; current_version: string }>('GET', `/api/v1/devices/${device.device_id}/ota`)
        ).body;
        return record.ota_status === 'completed' && record.current_version === '1.3.0';
      },
      20_000,
      'the relayed update completed',
    );
  });

  it('(replica beats) the devices of a killed replica that do not come back show offline within 15 s', async () => {
    const doomed = set.replicas[2]!;
    // A device that talks to the replica directly: it has no balancer to come back through.
    const stray = await registerDevice(asServer(set.url), org.adminKey);
    raws.push(await connectRaw(doomed.url, { ...stray, version: '1.0.0' }));
    const online = async () =>
      (await api<{ online: boolean }>('GET', `/api/v1/devices/${stray.deviceId}`, undefined, set.replicas[0])).body
        .online;
    await eventually(online, 5000, 'the stray device online');
    await set.kill(doomed);
    await eventually(async () => !(await online()), 15_000, 'the stray device offline');
  });
});
