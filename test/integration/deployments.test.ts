/**
 * Fleet deployments end to end: real agents (the simulator, in this process; 200 devices in the
 * rolling run and in the canary that completes, 120 in the canary that rolls back) against a
 * real server on each database. Each scenario has an organization and a fleet of its own; bakes are
 * seconds long (bake_minutes 0.05) and the bake faults strike one second after the commit.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Fault } from '../../src/simulator/faults.ts';
import type { Fleet } from '../../src/simulator/simulator.ts';
import {
  type DeploymentBody,
  type DeploymentDeviceBody,
  FLEET_SERVER_ENV,
  type FleetSetup,
  NEW,
  setupFleet,
} from '../helpers/deployment-fleet.ts';
import { eventually } from '../helpers/raw-device.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const backends = await backendsUnderTest();
after(() => stopSharedServices());

for (const backend of backends) {
  describe(`fleet deployments (${backend.name})`, () => {
    let server: TestServer;
    const fleets: Fleet[] = [];

    before(async () => {
      server = await startTestServer(backend, { env: FLEET_SERVER_ENV });
    });
    after(async () => {
      await Promise.all(fleets.map((fleet) => fleet.stop()));
      await server?.close();
    });

    const setup = (name: string, count: number, options: FleetSetup = {}) =>
      setupFleet(server, fleets, name, count, options);
    type Deployment = DeploymentBody;
    type DeploymentDevice = DeploymentDeviceBody;

    it('plans a rolling deployment in a dry run, then runs exactly that plan batch after batch', async () => {
      const { api, until, members } = await setup('rolling', 200);
      const request = { version: NEW, target: { all: true }, strategy: 'rolling', batch_size: '25%', bake_minutes: 0 };
      const plan = await api<{ total: number; batches: { size: number; device_ids: string[] }[] }>(
        'POST',
        '/api/v1/deployments',
        { ...request, dry_run: true },
      );
      assert.equal(plan.status, 200, JSON.stringify(plan.body));
      assert.deepEqual(
        plan.body.batches.map((batch) => batch.size),
        [50, 50, 50, 50],
      );
      const events: { deployment_id: string; status: string; batch: { index: number; state: string } | null }[] = [];
      const unsubscribe = server.services.feed.on('deployment', (event) => events.push(event));
      const created = await api<Deployment>('POST', '/api/v1/deployments', request);
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const done = await until(created.body.id, 'completed');
      await eventually(async () => events.some((event) => event.status === 'completed'), 5000, 'completed announced');
      unsubscribe();
      const passed = events
        .filter((event) => event.deployment_id === created.body.id && event.batch?.state === 'passed')
        .map((event) => event.batch!.index);
      assert.deepEqual(passed, [0, 1, 2, 3], 'each batch announced as passed, in order');
      assert.equal(done.counts.completed, 200);
      assert.deepEqual(
        done.batches.map((batch) => [batch.state, batch.counts.completed]),
        [
          ['passed', 50],
          ['passed', 50],
          ['passed', 50],
          ['passed', 50],
        ],
      );
      const devices = await members(created.body.id);
      for (const [index, batch] of plan.body.batches.entries()) {
        const taken = devices.filter((device) => device.batch === index).map((device) => device.device_id);
        assert.equal(taken.length, batch.size);
        // The plan names the first ids of each batch (PLAN_SAMPLE_IDS).
        assert.deepEqual(
          taken.slice(0, batch.device_ids.length),
          batch.device_ids,
          'the real run took the planned batches',
        );
      }
      // Batch order: every update of a batch was created after the previous batch's last one finished.
      const rows = await server.db.query<{ device_id: string; created_at: Date; finished_at: Date }>(
        'SELECT device_id, created_at, finished_at FROM ota_updates WHERE deployment_id = $1',
        [created.body.id],
      );
      const batchOf = new Map(devices.map((device) => [device.device_id, device.batch]));
      for (let index = 1; index < 4; index++) {
        const previousEnd = Math.max(
          ...rows.filter((row) => batchOf.get(row.device_id) === index - 1).map((row) => row.finished_at.getTime()),
        );
        const start = Math.min(
          ...rows.filter((row) => batchOf.get(row.device_id) === index).map((row) => row.created_at.getTime()),
        );
        assert.ok(start >= previousEnd, `batch ${index} started after batch ${index - 1} ended`);
      }
    });

    it('completes a canary of 10% and then the rest all at once over 200 devices, the rest only after the canary passed', async () => {
      const { api, until, members } = await setup('canary-ok', 200);
      const created = await api<Deployment>('POST', '/api/v1/deployments', {
        version: NEW,
        target: { all: true },
        strategy: 'canary',
        canary_percent: 10,
        bake_minutes: 0.02,
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const done = await until(created.body.id, 'completed', 40_000);
      assert.equal(done.counts.completed, 200);
      assert.deepEqual(
        done.batches.map((batch) => [batch.kind, batch.state, batch.size, batch.counts.completed]),
        [
          ['canary', 'passed', 20, 20],
          ['batch', 'passed', 180, 180],
        ],
      );
      // The rest was queued only after every canary device had committed and baked.
      const rows = await server.db.query<{ device_id: string; created_at: Date; finished_at: Date }>(
        `SELECT device_id, created_at, finished_at FROM ota_updates WHERE deployment_id = $1 AND kind = 'update'`,
        [created.body.id],
      );
      assert.equal(rows.length, 200, 'one update per device');
      const canary = new Set(
        (await members(created.body.id)).filter((device) => device.batch === 0).map((device) => device.device_id),
      );
      const canaryEnd = Math.max(
        ...rows.filter((row) => canary.has(row.device_id)).map((row) => row.finished_at.getTime()),
      );
      const restStart = Math.min(
        ...rows.filter((row) => !canary.has(row.device_id)).map((row) => row.created_at.getTime()),
      );
      assert.ok(restStart >= canaryEnd + 0.02 * 60_000, 'the rest started after the canary baked');
    });

    it('stops a canary whose bake fails (a device reverts) and rolls its updated devices back; the rest is untouched', async () => {
      // 120 devices; the canary is the first 12, two of which revert during the bake (2 of 12 > 10%).
      const faults: (Fault | null)[] = ['bakeRevert', 'bakeRevert'];
      const { devices, api, until, members, deployment } = await setup('canary', 120, { faults });
      const ids = devices.map((device) => device.deviceId);
      const created = await api<Deployment>('POST', '/api/v1/deployments', {
        version: NEW,
        target: { device_ids: ids },
        strategy: 'canary',
        canary_count: 12,
        failure_threshold_percent: 10,
        min_sample: 4,
        bake_minutes: 0.05,
        on_failure: 'rollback',
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const ended = await until(created.body.id, 'rolled_back');
      assert.equal(ended.batches[0]!.state, 'failed');
      assert.equal(ended.batches[1]!.state, 'pending');
      const rollbacks = async () =>
        await server.db.query<{ device_id: string; status: string }>(
          `SELECT device_id, status FROM ota_updates WHERE deployment_id = $1 AND kind = 'rollback'`,
          [created.body.id],
        );
      // Every canary device that still ran the new version when the gate tripped gets one rollback;
      // the reverted ones run 1.0.0 already. The rollbacks are created over several passes, so the
      // wait is for the devices (all back on 1.0.0) as much as for the rows created so far.
      let backOnOld = 0;
      await eventually(
        async () => {
          const rows = await rollbacks();
          backOnOld = (await members(created.body.id)).filter((member) => member.current_version === '1.0.0').length;
          return backOnOld === ids.length && rows.every((rollback) => rollback.status === 'completed');
        },
        20_000,
        'the rollbacks completed, every device back on 1.0.0',
        () => backOnOld,
      );
      const all = await members(created.body.id);
      const canary = all.filter((member) => member.batch === 0);
      assert.equal(canary.length, 12);
      for (const reverted of ids.slice(0, 2)) {
        assert.ok(
          ['bake_offline', 'bake_reverted', 'bake_unhealthy'].includes(
            all.find((d) => d.device_id === reverted)?.reason ?? '',
          ),
          `${reverted} failed its bake`,
        );
      }
      // The reverted devices' updates completed; the deployment counts them as failed in the bake,
      // and lists them among its failing devices.
      const bakeFailures = all
        .filter((member) => (member.reason ?? '').startsWith('bake_'))
        .map((member) => member.device_id);
      assert.equal((await deployment(created.body.id)).bake_failed, bakeFailures.length);
      const failing = await api<{ devices: DeploymentDevice[] }>(
        'GET',
        `/api/v1/deployments/${created.body.id}/devices?failing=true`,
      );
      assert.deepEqual(
        failing.body.devices.map((device) => device.device_id),
        all
          .filter(
            (member) => (member.reason ?? '').startsWith('bake_') || ['failed', 'timed_out'].includes(member.state),
          )
          .map((member) => member.device_id),
      );
      assert.ok(ids.slice(0, 2).every((id) => bakeFailures.includes(id)));
      const rolledBack = (await rollbacks()).map((rollback) => rollback.device_id);
      assert.ok(rolledBack.length > 0, 'the healthy canary devices were rolled back');
      assert.ok(
        rolledBack.every((device) => canary.some((member) => member.device_id === device)),
        'only canary devices were rolled back',
      );
      for (const device of all.filter((member) => member.batch === 1)) {
        assert.equal(device.state, 'cancelled', `${device.device_id} never touched`);
        assert.equal(device.update_id, null);
      }
      assert.equal(all.length, 120);
      assert.ok(
        all.every((device) => device.current_version === '1.0.0'),
        JSON.stringify(all.filter((device) => device.current_version !== '1.0.0')),
      );
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.equal(new Set(rolledBack).size, rolledBack.length, 'no device was rolled back twice');
      assert.equal((await rollbacks()).length, rolledBack.length, 'and none after the end');
    });

    it('pauses, resumes, promotes past a bake and cancels; a second deployment lists the devices as busy', async () => {
      const { api, until, deployment } = await setup('controls', 9);
      const created = await api<Deployment>('POST', '/api/v1/deployments', {
        version: NEW,
        target: { all: true },
        strategy: 'rolling',
        batch_size: 3,
        bake_minutes: 10,
      });
      assert.equal(created.status, 201);
      const id = created.body.id;
      const busy = await api<{ excluded: { busy: { count: number } } }>('POST', '/api/v1/deployments', {
        version: NEW,
        target: { all: true },
        strategy: 'all_at_once',
        dry_run: true,
      });
      assert.equal(busy.body.excluded.busy.count, 9);
      await eventually(async () => (await deployment(id)).batches[0]!.state === 'baking', 20_000, 'batch 0 baking');
      const paused = await api<Deployment>('POST', `/api/v1/deployments/${id}/pause`);
      assert.equal(paused.body.status, 'paused');
      assert.equal((await api<Deployment>('POST', `/api/v1/deployments/${id}/resume`)).body.status, 'running');
      const promoted = await api<Deployment>('POST', `/api/v1/deployments/${id}/promote`);
      assert.equal(promoted.status, 200, JSON.stringify(promoted.body));
      await eventually(async () => (await deployment(id)).batches[1]!.state === 'baking', 20_000, 'batch 1 baking');
      const cancelled = await api<Deployment>('POST', `/api/v1/deployments/${id}/cancel`);
      assert.equal(cancelled.body.status, 'cancelled');
      const late = await api<{ error: { code: string } }>('POST', `/api/v1/deployments/${id}/pause`);
      assert.equal(late.status, 409);
      assert.equal(late.body.error.code, 'deployment_finished');
      const final = await until(id, 'cancelled');
      assert.deepEqual([final.counts.completed, final.counts.cancelled], [6, 3], 'the third batch was never touched');
      const listed = await api<{ deployments: { id: string }[] }>('GET', '/api/v1/deployments?status=cancelled');
      assert.deepEqual(
        listed.body.deployments.map((each) => each.id),
        [id],
      );
      assert.deepEqual((await api<{ deployments: unknown[] }>('GET', '/api/v1/deployments?status=running')).body, {
        deployments: [],
      });
      const viewer = await api<{ key: string }>('POST', '/api/v1/api-keys', { role: 'viewer' });
      assert.equal(viewer.status, 201, JSON.stringify(viewer.body));
      assert.equal((await server.api('GET', `/api/v1/deployments/${id}`, viewer.body.key)).status, 200);
      assert.equal((await server.api('POST', `/api/v1/deployments/${id}/rollback`, viewer.body.key)).status, 403);
      const missing = await api<{ error: { code: string } }>('GET', '/api/v1/deployments/dep_nope');
      assert.equal(missing.status, 404);
      assert.equal(missing.body.error.code, 'deployment_not_found');
    });

    it('judges no failure rate before min_sample devices have a verdict; crossing it then aborts', async () => {
      const faults: (Fault | null)[] = ['downloadError', null, null, null, 'downloadError', null, null, null];
      const { devices, api, until } = await setup('sample', 8, { faults });
      const ids = devices.map((device) => device.deviceId);
      const body = (deviceIds: string[], minSample: number) => ({
        version: NEW,
        target: { device_ids: deviceIds },
        strategy: 'all_at_once',
        failure_threshold_percent: 50,
        min_sample: minSample,
        bake_minutes: 0.05,
        on_failure: 'abort',
      });
      // The faulty device fails within a second, long before the others have baked: alone it is 100%.
      const patient = await api<Deployment>('POST', '/api/v1/deployments', body(ids.slice(0, 4), 4));
      const hasty = await api<Deployment>('POST', '/api/v1/deployments', body(ids.slice(4), 1));
      const judgedAll = await until(patient.body.id, 'completed');
      assert.deepEqual([judgedAll.counts.completed, judgedAll.counts.failed], [3, 1], '1 of 4 is within 50%');
      const judgedOne = await until(hasty.body.id, 'failed');
      assert.match(judgedOne.stop_reason ?? '', /failed of .* with a verdict/);
    });

    it('retries a failed device after a backoff, and dispatches no more than max_per_minute', async () => {
      const { devices, api, until, members } = await setup('retries', 4, { faults: ['downloadError'] });
      const created = await api<Deployment>('POST', '/api/v1/deployments', {
        version: NEW,
        target: { all: true },
        strategy: 'all_at_once',
        failure_threshold_percent: 100,
        max_retries: 1,
        max_per_minute: 3,
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const id = created.body.id;
      const rowsOf = async () =>
        server.db.query<{ device_id: string; status: string }>(
          `SELECT device_id, status FROM ota_updates WHERE deployment_id = $1 ORDER BY created_at`,
          [id],
        );
      await eventually(async () => (await rowsOf()).length === 3, 10_000, 'three devices dispatched');
      await new Promise((resolve) => setTimeout(resolve, 1500));
      assert.equal((await rowsOf()).length, 3, 'the fourth waits for the next minute');
      // The failed device's retry waits for the rate too; cancel to end the test.
      const failing = devices[0]!.deviceId;
      await eventually(
        async () => (await members(id)).find((device) => device.device_id === failing)?.state === 'retrying',
        10_000,
        'the faulty device failed once',
      );
      await api('POST', `/api/v1/deployments/${id}/cancel`);
      await until(id, 'cancelled');
    });

    it('retries a failed device once max_retries allows, then counts it failed', async () => {
      const { devices, api, until } = await setup('retry-once', 3, { faults: ['downloadError'] });
      const created = await api<Deployment>('POST', '/api/v1/deployments', {
        version: NEW,
        target: { all: true },
        strategy: 'all_at_once',
        failure_threshold_percent: 50,
        max_retries: 1,
      });
      const done = await until(created.body.id, 'completed');
      assert.deepEqual([done.counts.completed, done.counts.failed], [2, 1]);
      const attempts = await server.db.query<{ status: string }>(
        `SELECT status FROM ota_updates WHERE deployment_id = $1 AND device_id = $2 ORDER BY created_at`,
        [created.body.id, devices[0]!.deviceId],
      );
      assert.deepEqual(
        attempts.map((row) => row.status),
        ['failed', 'failed'],
        'one retry after the first failure',
      );
    });

    it('waits for start_at, and a dynamic deployment takes a device that comes to match', async () => {
      const { devices, api, until, deployment } = await setup('dynamic', 3);
      const startAt = new Date(Date.now() + 1500).toISOString();
      const created = await api<Deployment>('POST', '/api/v1/deployments', {
        version: NEW,
        target: { tags: ['late'] },
        strategy: 'all_at_once',
        dynamic: true,
        start_at: startAt,
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      assert.equal(created.body.status, 'scheduled');
      assert.equal(created.body.total, 0);
      const id = created.body.id;
      await until(id, 'running');
      const tagged = await api('PATCH', `/api/v1/devices/${devices[1]!.deviceId}`, { tags: ['late'] });
      assert.equal(tagged.status, 200, JSON.stringify(tagged.body));
      await eventually(async () => (await deployment(id)).counts.completed === 1, 15_000, 'the new match updated');
      const state = await deployment(id);
      assert.deepEqual([state.status, state.total], ['running', 1], 'a dynamic deployment keeps running');
      await api('POST', `/api/v1/deployments/${id}/cancel`);
    });

    it('cancels the running updates on the devices where that is still safe; the next batch is never touched', async () => {
      const { devices, api, until, members } = await setup('stop', 4, {
        faults: ['slowLink', 'slowLink'],
        slowLinkChunkDelayMs: 5000,
      });
      const created = await api<Deployment>('POST', '/api/v1/deployments', {
        version: NEW,
        target: { device_ids: devices.map((device) => device.deviceId) },
        strategy: 'rolling',
        batch_size: 2,
        bake_minutes: 0,
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const id = created.body.id;
      await eventually(
        async () => (await members(id)).filter((member) => member.state === 'in_progress').length === 2,
        20_000,
        'both devices of the first batch downloading',
      );
      const cancelled = await api<Deployment>('POST', `/api/v1/deployments/${id}/cancel`);
      assert.equal(cancelled.status, 200, JSON.stringify(cancelled.body));
      // The devices stop their downloads on ota_cancel and report it: cancelled, not failed.
      await eventually(
        async () =>
          (await members(id)).filter((member) => member.state === 'cancelled' && member.update_id !== null).length ===
          2,
        20_000,
        'the two running updates cancelled on the devices',
      );
      const rows = await server.db.query<{ status: string; error_code: string | null }>(
        'SELECT status, error_code FROM ota_updates WHERE deployment_id = $1',
        [id],
      );
      assert.deepEqual(
        rows.map((row) => [row.status, row.error_code]),
        [
          ['cancelled', 'cancelled'],
          ['cancelled', 'cancelled'],
        ],
      );
      const final = await until(id, 'cancelled');
      assert.deepEqual([final.counts.cancelled], [4]);
      const all = await members(id);
      assert.ok(
        all.every((member) => member.current_version === '1.0.0'),
        JSON.stringify(all),
      );
    });

    it('times a silent device out after device_timeout_minutes', async () => {
      const { devices, api, until, members } = await setup('timeout', 2, {
        faults: ['slowLink'],
        slowLinkChunkDelayMs: 5000,
      });
      const created = await api<Deployment>('POST', '/api/v1/deployments', {
        version: NEW,
        target: { all: true },
        strategy: 'all_at_once',
        device_timeout_minutes: 0.03,
        failure_threshold_percent: 100,
      });
      const done = await until(created.body.id, 'completed');
      assert.deepEqual([done.counts.completed, done.counts.timed_out], [1, 1]);
      const slow = (await members(created.body.id)).find((device) => device.device_id === devices[0]!.deviceId);
      assert.equal(slow?.state, 'timed_out');
    });

    it('dispatches an offline device when it comes online while the deployment is active', async () => {
      const { devices, start, api, until, deployment } = await setup('offline', 4, { connect: false });
      await start(devices.slice(0, 3));
      const created = await api<Deployment>('POST', '/api/v1/deployments', {
        version: NEW,
        target: { all: true },
        strategy: 'all_at_once',
      });
      await eventually(async () => (await deployment(created.body.id)).counts.completed === 3, 20_000, '3 done');
      assert.equal((await deployment(created.body.id)).status, 'running');
      await start(devices.slice(3));
      const done = await until(created.body.id, 'completed');
      assert.equal(done.counts.completed, 4);
    });
  });
}
