/**
 * The read API the web dashboard is built on, on each database: who a key is (`/me`), the fleet
 * overview, recent failures grouped by error code, the device list's search, OTA filter, latest
 * update and count, a deployment's bake end and timeline. One organization's fleet of real agents
 * (the simulator, in this process) runs a deployment with injected faults in `before`; the tests
 * then read what it left, and another organization's look-alike fleet must never show.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { Fault } from '../../src/simulator/faults.ts';
import { fetchSigningKey } from '../../src/simulator/register.ts';
import { type Fleet, runFleet } from '../../src/simulator/simulator.ts';
import { postFirmware, sha256Of } from '../helpers/firmware.ts';
import { eventually } from '../helpers/raw-device.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const backends = await backendsUnderTest();
after(() => stopSharedServices());

const NEW = '1.1.0';
const BAKE_MS = 3000;
const quickAgents = { downloadRetries: 1, downloadRetryBaseMs: 20, progressIntervalMs: 200, resultRetryBaseMs: 100 };

interface Ota {
  status: string;
  kind: string;
  target_version: string;
  progress: number;
  phase: string | null;
  deployment_id: string | null;
  error_code: string | null;
  updated_at: string;
}
interface ListedDevice {
  device_id: string;
  name: string | null;
  current_version: string;
  ota: Ota | null;
}
interface DeviceList {
  devices: ListedDevice[];
  next_cursor: string | null;
  total?: number;
}
interface Batch {
  state: string;
  bake_ends_at: string | null;
}
interface Deployment {
  id: string;
  status: string;
  started_at: string;
  batches: Batch[];
}
interface FailureGroup {
  error_code: string;
  count: number;
  last_at: string;
  last_message: string | null;
  device_ids: string[];
}
interface Timeline {
  bucket_seconds: number;
  points: { at: string; completed: number; failed: number }[];
}
type ErrorBody = { error: { code: string } };

/** A device of a test organization: registered through the API, run by an agent when it has a fault slot. */
interface DeviceSetup {
  id: string;
  name?: string;
  model?: string;
  tags?: string[];
  /** Connected with this fault (null: healthy); undefined: never connected. */
  fault?: Fault | null;
}

for (const backend of backends) {
  describe(`the dashboard's read API on ${backend.name}`, () => {
    let server: TestServer;
    const fleets: Fleet[] = [];
    let a: Awaited<ReturnType<typeof setupOrg>>;
    let b: Awaited<ReturnType<typeof setupOrg>>;
    let viewerKey: string;
    let rollout: Deployment;
    let pending: Deployment;
    let otherRollout: Deployment;
    /** GET of the rollout while its batch was baking, and the `deployment` events it announced. */
    let baking: Deployment | undefined;
    const events: { deployment_id: string; batch: Batch | null }[] = [];

    /** An organization with firmware 1.0.0 and NEW, its devices registered and the connected ones running. */
    async function setupOrg(name: string, devices: DeviceSetup[]) {
      const org = await server.createOrg(name);
      const key = org.adminKey;
      for (const version of ['1.0.0', NEW]) {
        const content = randomBytes(8 * 1024);
        const upload = await postFirmware(server.url, key, { version, sha256: sha256Of(content) }, { content });
        assert.equal(upload.status, 201, JSON.stringify(upload.body));
      }
      const running: { deviceId: string; apiKey: string; fault: Fault | null }[] = [];
      for (const device of devices) {
        const created = await server.api<{ api_key: string }>('POST', '/api/v1/devices', key, {
          device_id: device.id,
          current_version: '1.0.0',
          ...(device.name ? { name: device.name } : {}),
          ...(device.model ? { model: device.model } : {}),
          ...(device.tags ? { tags: device.tags } : {}),
        });
        assert.equal(created.status, 201, JSON.stringify(created.body));
        if (device.fault !== undefined) {
          running.push({ deviceId: device.id, apiKey: created.body.api_key, fault: device.fault });
        }
      }
      const fleet = runFleet({
        server: server.url,
        devices: running,
        allowInsecure: true,
        publicKeyPem: await fetchSigningKey(server.url, key),
        organizationId: org.id,
        faultVersion: NEW,
        faultTuning: { bakeCrashAfterMs: 1000 },
        reconnectBaseMs: 50,
        agentOptions: quickAgents,
      });
      fleets.push(fleet);
      assert.ok(await fleet.waitUntilAllConnected(20_000), JSON.stringify(fleet.counters()));
      const api = <T>(method: string, path: string, body?: unknown) => server.api<T>(method, path, key, body);
      const deploy = async (deviceIds: string[], extra: Record<string, unknown> = {}) => {
        const created = await api<Deployment>('POST', '/api/v1/deployments', {
          version: NEW,
          target: { device_ids: deviceIds },
          strategy: 'all_at_once',
          failure_threshold_percent: 100,
          ...extra,
        });
        assert.equal(created.status, 201, JSON.stringify(created.body));
        return created.body;
      };
      const until = async (id: string, status: string, onEach?: (deployment: Deployment) => void) => {
        let last: Deployment | undefined;
        await eventually(
          async () => {
            last = (await api<Deployment>('GET', `/api/v1/deployments/${id}`)).body;
            onEach?.(last);
            return last.status === status;
          },
          30_000,
          `deployment ${status}`,
        ).catch((error: Error) => {
          throw new Error(`${error.message}: ${JSON.stringify(last)}`);
        });
        return last!;
      };
      return { org, key, api, deploy, until };
    }

    before(async () => {
      server = await startTestServer(backend, {
        env: { EDGEFLOW_DISPATCH_INTERVAL_MS: '200', EDGEFLOW_HEALTH_CHECK_TIMEOUT_MS: '2000' },
      });
      a = await setupOrg('Acme', [
        { id: 'ok-1', model: 'rpi4', tags: ['gw', 'site:a'], fault: null },
        { id: 'ok-2', model: 'rpi4', tags: ['gw', 'site:a'], fault: null },
        { id: 'dl-1', model: 'rpi4', tags: ['gw', 'site:b'], fault: 'downloadError' },
        { id: 'inst-1', model: 'rpi5', tags: ['gw', 'site:b'], fault: 'installFailure' },
        { id: 'bake-1', model: 'rpi5', tags: ['gw', 'site:a'], fault: 'bakeRevert' },
        // Never connected: what the search and the `none` filter find.
        { id: 'pct_1', name: '100% Ready', tags: ['site:c'] },
        { id: 'pctX1', name: '1000 ready' },
        { id: 'idle-1' },
      ]);
      // Another organization with a device of the same id, name, model and tags, and a failure of its own.
      b = await setupOrg('Other', [
        { id: 'ok-1', name: '100% Ready', model: 'rpi4', tags: ['gw', 'site:a'], fault: 'corrupt' },
      ]);
      const viewer = await a.api<{ key: string }>('POST', '/api/v1/api-keys', { role: 'viewer', name: 'wall screen' });
      assert.equal(viewer.status, 201);
      viewerKey = viewer.body.key;

      const unsubscribe = server.services.feed.on('deployment', (event) => events.push(event));
      try {
        rollout = await a.deploy(['ok-1', 'ok-2', 'dl-1', 'inst-1', 'bake-1'], { bake_minutes: BAKE_MS / 60_000 });
        rollout = await a.until(rollout.id, 'completed', (seen) => {
          if (seen.batches[0]?.state === 'baking') baking ??= seen;
        });
      } finally {
        unsubscribe();
      }
      otherRollout = await b.until((await b.deploy(['ok-1'])).id, 'completed');
      // A device that never connects keeps its update queued, its deployment unfinished.
      pending = await a.deploy(['pctX1']);
      await eventually(
        async () =>
          (await a.api<{ updates: unknown[] }>('GET', '/api/v1/devices/pctX1/ota/history')).body.updates.length === 1,
        10_000,
        'the offline device has its update queued',
      );
      // The reverted device is back on its old version before anything is read.
      await eventually(
        async () => (await a.api<ListedDevice>('GET', '/api/v1/devices/bake-1')).body.current_version === '1.0.0',
        10_000,
        'bake-1 reverted',
      );
    });
    after(async () => {
      await Promise.all(fleets.map((fleet) => fleet.stop()));
      await server?.close();
    });

    it('tells a key who it is: role, organization and key, for the system administrator too', async () => {
      const keys = (
        await a.api<{ api_keys: { id: string; name: string | null; role: string }[] }>('GET', '/api/v1/api-keys')
      ).body.api_keys;
      const me = await server.api('GET', '/api/v1/me', viewerKey);
      assert.equal(me.status, 200);
      const viewerId = keys.find((key) => key.role === 'viewer')!.id;
      assert.deepEqual(me.body, {
        role: 'viewer',
        organization: { id: a.org.id, name: 'Acme' },
        key: { id: viewerId, name: 'wall screen', owner: null },
      });
      const admin = await server.api('GET', '/api/v1/me', b.key);
      assert.deepEqual(admin.body, {
        role: 'admin',
        organization: { id: b.org.id, name: 'Other' },
        key: {
          id: (await b.api<{ api_keys: { id: string }[] }>('GET', '/api/v1/api-keys')).body.api_keys[0]!.id,
          name: 'initial admin',
          owner: null,
        },
      });
      const system = await server.api<{ role: string; organization: null; key: { id: string; name: string } }>(
        'GET',
        '/api/v1/me',
        server.adminKey,
      );
      assert.equal(system.status, 200);
      assert.equal(system.body.role, 'system_admin');
      assert.equal(system.body.organization, null);
      assert.equal(system.body.key.name, 'system administrator');
      assert.equal((await server.api<ErrorBody>('GET', '/api/v1/me', undefined)).status, 401);
      const revoked = await a.api<{ id: string; key: string }>('POST', '/api/v1/api-keys', { role: 'operator' });
      assert.equal((await a.api('DELETE', `/api/v1/api-keys/${revoked.body.id}`)).status, 204);
      assert.equal((await server.api<ErrorBody>('GET', '/api/v1/me', revoked.body.key)).status, 401);
    });

    it('sums up the fleet in one call: devices online, per version, model and tag; active updates and deployments', async () => {
      const fleet = await server.api('GET', '/api/v1/fleet', viewerKey);
      assert.equal(fleet.status, 200, JSON.stringify(fleet.body));
      assert.deepEqual(fleet.body, {
        devices: { total: 8, online: 5, offline: 3 },
        versions: [
          { version: '1.0.0', devices: 6, online: 3 },
          { version: NEW, devices: 2, online: 2 },
        ],
        models: [
          { model: 'rpi4', devices: 3 },
          { model: null, devices: 3 },
          { model: 'rpi5', devices: 2 },
        ],
        tags: [
          { tag: 'gw', devices: 5 },
          { tag: 'site:a', devices: 3 },
          { tag: 'site:b', devices: 2 },
          { tag: 'site:c', devices: 1 },
        ],
        updates: { active: 1 },
        deployments: { active: 1 },
      });
      const other = await server.api('GET', '/api/v1/fleet', b.key);
      assert.deepEqual(other.body, {
        devices: { total: 1, online: 1, offline: 0 },
        versions: [{ version: '1.0.0', devices: 1, online: 1 }],
        models: [{ model: 'rpi4', devices: 1 }],
        tags: [
          { tag: 'gw', devices: 1 },
          { tag: 'site:a', devices: 1 },
        ],
        updates: { active: 0 },
        deployments: { active: 0 },
      });
      const system = await server.api<ErrorBody>('GET', '/api/v1/fleet', server.adminKey);
      assert.equal(system.status, 403);
      assert.equal(system.body.error.code, 'organization_key_required');
    });

    it('lists each device with its latest update, and filters on it: ota_status, none, with a count', async () => {
      const list = async (query: string, key = viewerKey) => {
        const response = await server.api<DeviceList>('GET', `/api/v1/devices?${query}`, key);
        assert.equal(response.status, 200, JSON.stringify(response.body));
        return response.body;
      };
      const ids = async (query: string) => (await list(query)).devices.map((device) => device.device_id);
      const all = await list('');
      assert.equal(all.total, undefined, 'no total unless asked for');
      const byId = new Map(all.devices.map((device) => [device.device_id, device]));
      assert.equal(byId.get('idle-1')!.ota, null);
      const failed = byId.get('dl-1')!.ota!;
      assert.deepEqual(
        { ...failed, updated_at: undefined },
        {
          status: 'failed',
          kind: 'update',
          target_version: NEW,
          progress: failed.progress,
          phase: failed.phase,
          deployment_id: rollout.id,
          error_code: 'download_failed',
          offline_bundle_id: null,
          updated_at: undefined,
        },
      );
      assert.ok(Number.isFinite(Date.parse(failed.updated_at)));
      assert.deepEqual(
        { ...byId.get('ok-1')!.ota, updated_at: undefined },
        {
          status: 'completed',
          kind: 'update',
          target_version: NEW,
          progress: 100,
          phase: 'completed',
          deployment_id: rollout.id,
          error_code: null,
          offline_bundle_id: null,
          updated_at: undefined,
        },
      );
      // The OTA record and the list read the same latest update.
      const record = await a.api<{ update_status: string; target_version: string; deployment_id: string }>(
        'GET',
        '/api/v1/devices/pctX1/ota',
      );
      assert.deepEqual(
        [byId.get('pctX1')!.ota!.status, byId.get('pctX1')!.ota!.deployment_id],
        [record.body.update_status, pending.id],
      );

      assert.deepEqual(await ids('ota_status=none'), ['idle-1', 'pct_1']);
      assert.deepEqual(await ids('ota_status=failed'), ['dl-1', 'inst-1']);
      assert.deepEqual(await ids('ota_status=completed'), ['bake-1', 'ok-1', 'ok-2']);
      assert.deepEqual(await ids('ota_status=queued'), ['pctX1']);
      assert.deepEqual(await ids('ota_status=in_progress'), []);
      assert.deepEqual(await ids('ota_status=failed&tag=site:b&model=rpi5'), ['inst-1']);

      const first = await list('ota_status=completed&count=true&limit=2');
      assert.deepEqual(
        [first.devices.map((device) => device.device_id), first.next_cursor, first.total],
        [['bake-1', 'ok-1'], 'ok-1', 3],
      );
      const second = await list(`ota_status=completed&count=true&limit=2&after=${first.next_cursor}`);
      assert.deepEqual(
        [second.devices.map((device) => device.device_id), second.next_cursor, second.total],
        [['ok-2'], null, 3],
        'the total ignores the page',
      );
      assert.equal((await list('count=true')).total, 8, "another organization's devices are not counted");
      assert.equal((await list('count=true&online=false&ota_status=none')).total, 2);
      const bad = await server.api<ErrorBody>('GET', '/api/v1/devices?ota_status=broken', viewerKey);
      assert.equal(bad.status, 400);
      assert.equal(bad.body.error.code, 'invalid_request');
    });

    it('searches device ids and names case-insensitively, % and _ taken literally', async () => {
      const ids = async (q: string) =>
        (await server.api<DeviceList>('GET', `/api/v1/devices?q=${encodeURIComponent(q)}`, viewerKey)).body.devices.map(
          (device) => device.device_id,
        );
      assert.deepEqual(await ids('100%'), ['pct_1'], '% is no wildcard: "1000 ready" does not match');
      assert.deepEqual(await ids('PCT_'), ['pct_1'], '_ is no wildcard: pctX1 does not match');
      assert.deepEqual((await ids('ready')).sort(), ['pctX1', 'pct_1'], 'in id order, whatever the collation');
      assert.deepEqual(await ids('OK-'), ['ok-1', 'ok-2']);
      assert.deepEqual(await ids('\\'), []);
      assert.equal((await ids('')).length, 8, 'an empty search matches every device');
      const other = await server.api<DeviceList>('GET', '/api/v1/devices?q=100%25&count=true', b.key);
      assert.deepEqual([other.body.devices.map((device) => device.device_id), other.body.total], [['ok-1'], 1]);
    });

    it('groups recent failures by error code, only of the caller organization', async () => {
      const failures = await server.api<{ since: string; groups: FailureGroup[] }>(
        'GET',
        '/api/v1/updates/failures',
        viewerKey,
      );
      assert.equal(failures.status, 200, JSON.stringify(failures.body));
      const since = Date.parse(failures.body.since);
      assert.ok(Math.abs(Date.now() - 24 * 3600_000 - since) < 60_000, 'since defaults to a day ago');
      assert.deepEqual(failures.body.groups.map((group) => [group.error_code, group.count, group.device_ids]).sort(), [
        ['download_failed', 1, ['dl-1']],
        ['install_failed', 1, ['inst-1']],
      ]);
      for (const group of failures.body.groups) {
        assert.equal(typeof group.last_message, 'string');
        assert.ok(Date.parse(group.last_at) >= Date.parse(rollout.started_at));
      }
      const other = await server.api<{ groups: FailureGroup[] }>('GET', '/api/v1/updates/failures', b.key);
      assert.deepEqual(
        other.body.groups.map((group) => [group.error_code, group.count, group.device_ids]),
        [['checksum_mismatch', 1, ['ok-1']]],
      );
      const limited = await server.api<{ groups: FailureGroup[] }>(
        'GET',
        '/api/v1/updates/failures?limit=1',
        viewerKey,
      );
      assert.equal(limited.body.groups.length, 1);
      const future = new Date(Date.now() + 60_000).toISOString();
      const none = await server.api<{ since: string; groups: FailureGroup[] }>(
        'GET',
        `/api/v1/updates/failures?since=${future}`,
        viewerKey,
      );
      assert.deepEqual(none.body, { since: future, groups: [] });
      const leap = await server.api<ErrorBody>('GET', '/api/v1/updates/failures?since=2030-12-31T23:59:60Z', viewerKey);
      assert.equal(leap.status, 400);
      assert.equal(leap.body.error.code, 'invalid_date');
    });

    it('names failures without a code timed_out or unknown, and the five devices that failed most recently', async () => {
      // Rows no device reported on get no code: written through the one status writer, as the engine would.
      const org = await server.createOrg('Legacy');
      const transitions = server.services.transitions;
      for (let index = 1; index <= 7; index++) {
        const created = await server.api('POST', '/api/v1/devices', org.adminKey, {
          device_id: `c-${index}`,
          current_version: '1.0.0',
        });
        assert.equal(created.status, 201);
      }
      const fail = async (deviceId: string, to: 'failed' | 'timed_out') => {
        const id = `upd_${randomBytes(8).toString('hex')}`;
        await transitions.create([
          {
            id,
            organizationId: org.id,
            deviceId,
            deploymentId: null,
            kind: 'update',
            targetVersion: NEW,
            fromVersion: '1.0.0',
            force: false,
          },
        ]);
        if (to === 'timed_out') assert.ok(await transitions.move({ organizationId: org.id, id }, 'dispatched'));
        const moved = await transitions.move({ organizationId: org.id, id }, to);
        assert.equal(moved?.error_code, null);
      };
      for (const deviceId of ['c-1', 'c-2', 'c-3', 'c-4', 'c-5', 'c-6', 'c-1']) await fail(deviceId, 'failed');
      await fail('c-7', 'timed_out');
      const failures = await server.api<{ groups: FailureGroup[] }>('GET', '/api/v1/updates/failures', org.adminKey);
      assert.deepEqual(
        failures.body.groups.map((group) => [group.error_code, group.count, group.device_ids, group.last_message]),
        [
          ['unknown', 7, ['c-1', 'c-6', 'c-5', 'c-4', 'c-3'], null],
          ['timed_out', 1, ['c-7'], null],
        ],
      );
    });

    it("shows when a baking batch's bake ends, on the deployment and in its event; null otherwise", async () => {
      assert.ok(baking, 'the batch was seen baking');
      const bakeEndsAt = baking.batches[0]!.bake_ends_at;
      assert.ok(bakeEndsAt, JSON.stringify(baking));
      const commits = await server.db.query<{ device_id: string; finished_at: Date }>(
        `SELECT device_id, finished_at FROM ota_updates WHERE deployment_id = $1 AND status = 'completed'`,
        [rollout.id],
      );
      const bakeEnds = commits.map((row) => row.finished_at.getTime() + BAKE_MS);
      assert.ok(bakeEnds.includes(Date.parse(bakeEndsAt)), `${bakeEndsAt} is a commit + the bake`);
      const healthy = commits.filter((row) => row.device_id.startsWith('ok-'));
      assert.ok(
        Date.parse(bakeEndsAt) >= Math.max(...healthy.map((row) => row.finished_at.getTime() + BAKE_MS)),
        'the last bake to end',
      );
      const announced = events.find((event) => event.deployment_id === rollout.id && event.batch?.state === 'baking');
      assert.ok(announced?.batch?.bake_ends_at, JSON.stringify(events));
      assert.ok(bakeEnds.includes(Date.parse(announced.batch.bake_ends_at)));
      assert.deepEqual(
        rollout.batches.map((batch) => [batch.state, batch.bake_ends_at]),
        [['passed', null]],
      );
      assert.equal(pending.batches[0]!.bake_ends_at, null);
    });

    it("counts a deployment's completions and failures (bake failures included, once) per bucket from its start", async () => {
      // A device that committed and then failed its bake is one failure, when it failed the bake.
      const outcomes = await server.db.query<{ at: Date; completed: boolean }>(
        `SELECT u.finished_at AS at, u.status = 'completed' AS completed FROM ota_updates u
         WHERE u.deployment_id = $1 AND u.status IN ('completed', 'failed', 'timed_out')
           AND NOT EXISTS (SELECT 1 FROM deployment_devices m WHERE m.deployment_id = u.deployment_id
             AND m.device_id = u.device_id AND m.bake_failed_at IS NOT NULL)
         UNION ALL SELECT bake_failed_at, false FROM deployment_devices WHERE deployment_id = $1 AND bake_failed_at IS NOT NULL`,
        [rollout.id],
      );
      assert.deepEqual(
        [outcomes.filter((row) => row.completed).length, outcomes.filter((row) => !row.completed).length],
        [2, 3],
        'ok-1 and ok-2 completed; dl-1 and inst-1 failed, bake-1 failed its bake',
      );
      const start = Date.parse(rollout.started_at);
      const expected = (bucketSeconds: number) => {
        const buckets = new Map<number, { completed: number; failed: number }>();
        for (const outcome of outcomes) {
          const index = Math.floor((outcome.at.getTime() - start) / 1000 / bucketSeconds);
          const bucket = buckets.get(index) ?? { completed: 0, failed: 0 };
          bucket[outcome.completed ? 'completed' : 'failed']++;
          buckets.set(index, bucket);
        }
        return [...buckets.entries()]
          .sort(([x], [y]) => x - y)
          .map(([index, counts]) => ({ at: new Date(start + index * bucketSeconds * 1000).toISOString(), ...counts }));
      };
      const timeline = async (query: string, key = viewerKey) =>
        server.api<Timeline>('GET', `/api/v1/deployments/${rollout.id}/timeline${query}`, key);
      const chosen = await timeline('');
      assert.equal(chosen.status, 200, JSON.stringify(chosen.body));
      assert.equal(chosen.body.bucket_seconds, 5, 'a run of seconds: the narrowest buckets');
      assert.deepEqual(chosen.body.points, expected(5));
      assert.deepEqual((await timeline('?bucket_seconds=3600')).body, {
        bucket_seconds: 3600,
        points: [{ at: new Date(start).toISOString(), completed: 2, failed: 3 }],
      });
      assert.deepEqual((await timeline('?bucket_seconds=7')).body.points, expected(7));
      const empty = await server.api<Timeline>('GET', `/api/v1/deployments/${pending.id}/timeline`, viewerKey);
      assert.deepEqual(empty.body, { bucket_seconds: 5, points: [] });
      const tooFine = await timeline('?bucket_seconds=4');
      assert.equal(tooFine.status, 400);
      const foreign = await server.api<ErrorBody>('GET', `/api/v1/deployments/${otherRollout.id}/timeline`, viewerKey);
      assert.equal(foreign.status, 404);
      assert.equal(foreign.body.error.code, 'deployment_not_found');
    });

    it("lists a deployment's failing devices with their error", async () => {
      const members = await server.api<{
        devices: {
          device_id: string;
          reason: string | null;
          error_message: string | null;
        }[];
      }>('GET', `/api/v1/deployments/${rollout.id}/devices`, viewerKey);
      const byId = new Map(members.body.devices.map((device) => [device.device_id, device]));
      assert.equal(byId.get('dl-1')?.reason, 'download_failed');
      assert.equal(typeof byId.get('dl-1')?.error_message, 'string');
      assert.equal(byId.get('inst-1')?.reason, 'install_failed');
      assert.ok(byId.get('inst-1')?.error_message);
      assert.ok(['bake_offline', 'bake_reverted', 'bake_unhealthy'].includes(byId.get('bake-1')?.reason ?? ''));
      assert.deepEqual([byId.get('ok-1')?.reason, byId.get('ok-1')?.error_message], [null, null]);
    });
  });
}
