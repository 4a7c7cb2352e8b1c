/**
 * Deployments, second generation, against the real agent over the real tunnel on each database:
 * what a deployment says during and after an incident agrees with itself and with the devices;
 * the server's record follows what a device runs; a device is busy at every door; every device
 * the target matched keeps a row that says why; and a notification lost between a change and its
 * effect only delays the effect.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { LISTENER_APPLICATION_NAME } from '../../src/server/infra/db.ts';
import type { Fault } from '../../src/simulator/faults.ts';
import type { Fleet } from '../../src/simulator/simulator.ts';
import { FLEET_SERVER_ENV, type FleetSetup, NEW, setupFleet } from '../helpers/deployment-fleet.ts';
import { makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
import { eventually } from '../helpers/raw-device.ts';
import {
  backendsUnderTest,
  startTestServer,
  stopSharedServices,
  TEST_DATABASE_URL,
  type TestServer,
} from '../helpers/server.ts';

const backends = await backendsUnderTest();
after(() => stopSharedServices());

interface OtaRecord {
  current_version: string;
  ota_status: string;
  error: { code: string; message: string } | null;
  rollback_versions: string[];
  previous_version: string | null;
  update_kind: string | null;
  held_by: string | null;
}

for (const backend of backends) {
  describe(`deployments tell the truth (${backend.name})`, () => {
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

    it('a canary that trips: its batch stays failed, the stop names its own counts, the rollback shows its outcome, fallen-back devices read reverted', async () => {
      // 30 devices, a canary of 10 of which 3 fall back within the bake: 3 failed of 3 judged > 10%.
      // The gate trips on the third fall-back, before any bake ends (a success is judged when its
      // bake ends): a long bake costs nothing, and gives a loaded machine 30 s to report them.
      const faults: (Fault | null)[] = ['bakeRevert', 'bakeRevert', 'bakeRevert'];
      const { devices, deploy, until, members, api } = await setup('trip', 30, { faults, bakeCrashAfterMs: 500 });
      const events: { deployment_id: string; batch: { index: number; state: string } | null }[] = [];
      const unsubscribe = server.services.feed.on('deployment', (event) => events.push(event));
      const created = await deploy({
        target: { device_ids: devices.map((device) => device.deviceId) },
        strategy: 'canary',
        canary_count: 10,
        failure_threshold_percent: 10,
        min_sample: 3,
        bake_minutes: 0.5,
        on_failure: 'rollback',
      });
      const ended = await until(created.id, 'rolled_back');
      // The stop states the rule and the counts it used, the batch's own.
      assert.ok(ended.stop, JSON.stringify(ended));
      assert.equal(ended.stop.batch, 0);
      assert.equal(ended.stop.size, 10);
      assert.ok(ended.stop.failed * 100 > 10 * ended.stop.judged, JSON.stringify(ended.stop));
      assert.ok(ended.stop.judged <= 10 && ended.stop.judged >= 3, JSON.stringify(ended.stop));
      assert.match(
        ended.stop_reason ?? '',
        new RegExp(
          `^batch 0 \\(canary\\): ${ended.stop.failed} failed of ${ended.stop.judged} with a verdict .* of 10 in the batch`,
        ),
      );
      // Every device ends where it started, and the record of each is final: the rollbacks
      // completed for those that ran 1.1.0, the fallen-back ones were skipped (they run 1.0.0).
      const settled = await eventually(
        async () => {
          const state = (await api<{ settled?: boolean } & typeof ended>('GET', `/api/v1/deployments/${created.id}`))
            .body;
          const rollback = state.rollback;
          return (
            rollback !== null &&
            rollback.queued + rollback.dispatched + rollback.in_progress === 0 &&
            rollback.completed + rollback.skipped === 10 - state.batches[0]!.counts.cancelled
          );
        },
        30_000,
        'the rollback ended',
      ).then(() => api<typeof ended>('GET', `/api/v1/deployments/${created.id}`));
      const final = settled.body;
      unsubscribe();
      assert.equal(final.batches[0]!.state, 'failed', 'a failed batch stays failed');
      assert.ok(
        !events.some(
          (event) => event.deployment_id === created.id && event.batch?.index === 0 && event.batch.state === 'passed',
        ),
        'batch 0 was never announced as passed',
      );
      assert.equal(final.batches[1]!.state, 'pending');
      assert.equal(final.batches[1]!.counts.cancelled, 20, 'the rest never started: cancelled');
      assert.ok(final.rollback!.skipped >= 3, JSON.stringify(final.rollback));
      assert.equal(final.rollback!.failed, 0);
      // A fallen-back device's record converges on its own report: its bake may have failed
      // first as unhealthy (the probe reached it before it booted 1.0.0 and said so).
      const fallenIds = new Set(devices.slice(0, 3).map((device) => device.deviceId));
      await eventually(
        async () =>
          (await members(created.id)).filter(
            (device) => fallenIds.has(device.device_id) && device.reason === 'bake_reverted',
          ).length === 3,
        30_000,
        'the fallen-back devices read reverted',
      ).catch(async (error: Error) => {
        const rows = (await members(created.id)).filter((device) => fallenIds.has(device.device_id));
        throw new Error(
          `${error.message}: ${JSON.stringify(rows.map((row) => [row.device_id, row.state, row.reason]))}`,
        );
      });
      // The canary's failures include its bake failures, and its bar cannot read all green: a
      // device that fell back after the gate had tripped (so after the deployment stopped watching
      // its bake) counts too, once it said so.
      const converged = (await api<typeof ended>('GET', `/api/v1/deployments/${created.id}`)).body;
      const canary = converged.batches[0]!;
      assert.ok(canary.counts.failed >= 3, JSON.stringify(canary));
      assert.equal(canary.bake_failed, canary.counts.failed, 'every failure of the canary was a bake failure');
      assert.equal(converged.bake_failed, canary.bake_failed);
      const all = await members(created.id);
      for (const fallen of devices.slice(0, 3)) {
        const row = all.find((device) => device.device_id === fallen.deviceId)!;
        assert.equal(row.state, 'failed');
        assert.equal(row.reason, 'bake_reverted');
        assert.match(row.explanation, /^reverted to 1\.0\.0 during the bake/);
        const ota = (await api<OtaRecord>('GET', `/api/v1/devices/${fallen.deviceId}/ota`)).body;
        assert.equal(ota.current_version, '1.0.0');
        assert.notEqual(ota.ota_status, 'completed', 'a device that fell back does not read completed');
      }
      await eventually(
        async () => (await members(created.id)).every((device) => device.current_version === '1.0.0'),
        20_000,
        'every device back on 1.0.0',
      );
      assert.deepEqual(final.controls, [], 'a rolled-back deployment offers no control');
    });

    it('a device that fell back after a crash: the record follows it, its history says so, and the version that crashed is no rollback target', async () => {
      const { devices, deploy, until, api } = await setup('fallback', 1, {
        faults: ['bakeRevert'],
        bakeCrashAfterMs: 300,
      });
      const id = devices[0]!.deviceId;
      const created = await deploy({
        target: { device_ids: [id] },
        strategy: 'all_at_once',
        bake_minutes: 0.1,
        failure_threshold_percent: 0,
        min_sample: 1,
        on_failure: 'pause',
      });
      const paused = await until(created.id, 'paused');
      assert.match(paused.stop_reason ?? '', /1 failed of 1 with a verdict/);
      const ota = (await api<OtaRecord>('GET', `/api/v1/devices/${id}/ota`)).body;
      assert.equal(ota.current_version, '1.0.0');
      assert.equal(ota.ota_status, 'failed');
      assert.equal(ota.update_kind, 'observed');
      assert.equal(ota.error?.code, 'reverted');
      assert.ok(!ota.rollback_versions.includes(NEW), JSON.stringify(ota));
      assert.notEqual(ota.previous_version, NEW);
      const history = (
        await api<{ updates: { kind: string; from_version: string; target_version: string }[] }>(
          'GET',
          `/api/v1/devices/${id}/ota/history`,
        )
      ).body.updates;
      assert.deepEqual(
        [history[0]?.kind, history[0]?.from_version, history[0]?.target_version],
        ['observed', NEW, '1.0.0'],
      );
      const listed = await api<{ devices: { device_id: string; ota: { kind: string; status: string } | null }[] }>(
        'GET',
        `/api/v1/devices?q=${id}`,
      );
      assert.equal(listed.status, 200, 'the device list shows a device whose latest history row is observed');
      assert.equal(listed.body.devices[0]?.ota?.kind, 'observed');
      // Cancel the paused deployment so it lets go of the device, then ask for a rollback.
      assert.equal((await api('POST', `/api/v1/deployments/${created.id}/cancel`)).status, 200);
      const rollback = await api<{ error: { code: string; message: string } }>(
        'POST',
        `/api/v1/devices/${id}/ota/rollback`,
        {},
      );
      assert.equal(rollback.status, 409, JSON.stringify(rollback.body));
      assert.equal(rollback.body.error.code, 'no_rollback_target');
      assert.doesNotMatch(rollback.body.error.message, new RegExp(NEW.replace(/\./g, '\\.')));
      const named = await api<{ error: { code: string } }>('POST', `/api/v1/devices/${id}/ota/rollback`, {
        version: NEW,
      });
      assert.equal(named.body.error.code, 'version_reverted');
    });

    it('a device re-flashed by hand: the record follows what it reports, with an entry in its history', async () => {
      const { devices, start, api } = await setup('reflash', 1, { connect: false, versions: ['1.0.0'] });
      const id = devices[0]!.deviceId;
      await start(devices, '1.2.0');
      await eventually(
        async () => {
          const record = (await api<OtaRecord>('GET', `/api/v1/devices/${id}/ota`)).body;
          return record.current_version === '1.2.0' && record.update_kind === 'observed';
        },
        10_000,
        'the record follows the device, with its history entry',
      );
      const ota = (await api<OtaRecord>('GET', `/api/v1/devices/${id}/ota`)).body;
      assert.deepEqual([ota.ota_status, ota.update_kind, ota.error?.code], ['idle', 'observed', 'reflashed']);
    });

    it('busy at every door: a device a deployment holds refuses single updates and rollbacks, other deployments list it busy with the holder, its firmware cannot be deleted', async () => {
      const { devices, deploy, deployment, members, api } = await setup('doors', 3);
      const ids = devices.map((device) => device.deviceId);
      const holder = await deploy({
        target: { device_ids: ids },
        strategy: 'rolling',
        batch_size: 1,
        bake_minutes: 10,
      });
      await eventually(
        async () => (await deployment(holder.id)).batches[0]!.state === 'baking',
        20_000,
        'batch 0 baking',
      );
      const waiting = ids[2]!;
      for (const [path, body] of [
        [`/api/v1/devices/${waiting}/ota/update`, { version: NEW }],
        [`/api/v1/devices/${waiting}/ota/update`, { version: NEW, force: true }],
        [`/api/v1/devices/${ids[0]}/ota/rollback`, {}],
      ] as const) {
        const refused = await api<{ error: { code: string; message: string; details?: { deployment_id: string } } }>(
          'POST',
          path,
          body,
        );
        assert.equal(refused.status, 409, `${path}: ${JSON.stringify(refused.body)}`);
        assert.equal(refused.body.error.code, 'device_busy');
        assert.equal(refused.body.error.details?.deployment_id, holder.id);
        assert.match(refused.body.error.message, new RegExp(holder.id));
      }
      // A second deployment over the same devices leaves them out as busy, and says who holds them.
      const second = await deploy({ target: { device_ids: ids }, strategy: 'all_at_once' });
      assert.equal(second.total, 0);
      // The first device runs 1.1.0 already (it is baking): that says more than busy.
      assert.deepEqual([second.excluded.busy, second.excluded.already_on_version], [2, 1]);
      const busy = await members(second.id, '&reason=busy');
      assert.deepEqual(
        busy.map((device) => [device.device_id, device.state, device.detail, device.batch]),
        ids.slice(1).map((id) => [id, 'skipped', holder.id, null]),
      );
      assert.match(busy[0]!.explanation, new RegExp(`busy in ${holder.id}`));
      // The firmware an open deployment installs stays, paused or scheduled alike.
      const deleteNew = () => api<{ error: { code: string; message: string } }>('DELETE', `/api/v1/firmware/${NEW}`);
      const inUse = await deleteNew();
      assert.equal(inUse.status, 409);
      assert.equal(inUse.body.error.code, 'firmware_in_use');
      assert.match(inUse.body.error.message, new RegExp(holder.id));
      assert.equal((await api('POST', `/api/v1/deployments/${holder.id}/pause`)).status, 200);
      assert.equal((await deleteNew()).status, 409);
      // Cancelled, it lets go: the devices take single updates again.
      assert.equal((await api('POST', `/api/v1/deployments/${holder.id}/cancel`)).status, 200);
      const free = await api<{ status: string }>('POST', `/api/v1/devices/${waiting}/ota/update`, { version: NEW });
      assert.equal(free.status, 202, JSON.stringify(free.body));
    });

    it('a rollback touches only the devices that still run the version; a device that moved on is skipped with why', async () => {
      const { devices, deploy, until, members, api } = await setup('moved-on', 3, {
        versions: ['1.0.0', NEW, '1.2.0'],
      });
      const ids = devices.map((device) => device.deviceId);
      const first = await deploy({ target: { device_ids: ids }, strategy: 'all_at_once' });
      await until(first.id, 'completed');
      const later = await deploy({ version: '1.2.0', target: { device_ids: [ids[0]] }, strategy: 'all_at_once' });
      await until(later.id, 'completed');
      const rolled = await api<{ status: string }>('POST', `/api/v1/deployments/${first.id}/rollback`);
      assert.equal(rolled.status, 200, JSON.stringify(rolled.body));
      await eventually(
        async () => {
          const state = (await api<{ rollback: Record<string, number> }>('GET', `/api/v1/deployments/${first.id}`))
            .body;
          return state.rollback.completed === 2 && state.rollback.skipped === 1;
        },
        20_000,
        'two rolled back, one skipped',
      );
      const rows = await members(first.id);
      const movedOn = rows.find((device) => device.device_id === ids[0])!;
      assert.deepEqual([movedOn.rollback_status, movedOn.current_version], ['skipped', '1.2.0']);
      assert.ok(
        rows.filter((device) => device.device_id !== ids[0]).every((device) => device.current_version === '1.0.0'),
      );
    });

    it('at dispatch a device whose version changed is skipped with why, never sent a downgrade, never counted as failed', async () => {
      const { devices, start, deploy, until, members } = await setup('changed', 2, { connect: false });
      const created = await deploy({ target: { device_ids: devices.map((d) => d.deviceId) }, strategy: 'all_at_once' });
      // One device comes online running 1.2.0 (re-flashed meanwhile); the other as planned.
      const reflashed = await start([devices[0]!], '1.2.0');
      await start([devices[1]!]);
      const done = await until(created.id, 'completed');
      assert.deepEqual([done.counts.completed, done.counts.skipped, done.counts.failed], [1, 1, 0]);
      const skipped = (await members(created.id)).find((device) => device.device_id === devices[0]!.deviceId)!;
      assert.deepEqual(
        [skipped.state, skipped.reason, skipped.current_version],
        ['skipped', 'version_changed', '1.2.0'],
      );
      assert.equal(reflashed.devices[0]!.lastResult, undefined, 'the device was never sent the update');
    });

    it('explains every device the target matched: the dry run and the created deployment list the left-out ones by reason', async () => {
      const { devices, deploy, members, api } = await setup('explain', 4, { versions: ['1.0.0', NEW] });
      const ids = devices.map((device) => device.deviceId);
      await api('PATCH', `/api/v1/devices/${ids[1]}`, { model: 'x86' });
      // Firmware for rpi4 only would leave x86 out; here the firmware takes every model, so
      // upgrade one device first to have one already on the version.
      const first = await deploy({ target: { device_ids: [ids[0]] }, strategy: 'all_at_once' });
      await eventually(async () => (await members(first.id))[0]?.state === 'completed', 20_000, 'one on 1.1.0');
      const plan = await api<{
        excluded: Record<string, { count: number; device_ids: string[] }>;
        not_found: { count: number; device_ids: string[] };
      }>('POST', '/api/v1/deployments', {
        version: NEW,
        target: { device_ids: [...ids, 'no-such-device'] },
        strategy: 'all_at_once',
        dry_run: true,
      });
      assert.equal(plan.status, 200, JSON.stringify(plan.body));
      assert.deepEqual(plan.body.excluded.already_on_version, { count: 1, device_ids: [ids[0]] });
      assert.deepEqual(plan.body.not_found, { count: 1, device_ids: ['no-such-device'] });
      const created = await deploy({ target: { device_ids: [...ids, 'no-such-device'] }, strategy: 'all_at_once' });
      assert.deepEqual([created.total, created.excluded.already_on_version], [3, 1]);
      const listed = await members(created.id);
      assert.equal(listed.length, 4, 'every matched device has a row, the left-out one included');
      const left = listed.find((device) => device.device_id === ids[0])!;
      assert.deepEqual([left.state, left.reason, left.batch], ['skipped', 'already_on_version', null]);
      const target = await api<{ device_ids: { device_id: string; found: boolean }[] }>(
        'GET',
        `/api/v1/deployments/${created.id}/target`,
      );
      assert.deepEqual(
        target.body.device_ids.map((entry) => [entry.device_id, entry.found]),
        [...ids.map((id) => [id, true]), ['no-such-device', false]],
      );
      const listing = await api<{ deployments: { id: string; target: Record<string, unknown> }[] }>(
        'GET',
        '/api/v1/deployments',
      );
      const summary = listing.body.deployments.find((each) => each.id === created.id)!;
      assert.deepEqual(summary.target, { device_ids_count: 5 }, 'a list answer summarises the ids');
    });

    it('a firmware delete racing the creation of a deployment that installs it: never both succeed (20 races)', async () => {
      const { devices, api, key } = await setup('race', 1, { connect: false, versions: [] });
      let deleted = 0;
      let created = 0;
      for (let round = 0; round < 20; round++) {
        const version = `2.0.${round}`;
        const firmware = await makeFirmwareFile(1024);
        assert.equal((await postFirmware(server.url, key, { version, sha256: firmware.sha256 }, firmware)).status, 201);
        const [deploy, remove] = await Promise.all([
          api<{ id: string }>('POST', '/api/v1/deployments', {
            version,
            target: { device_ids: [devices[0]!.deviceId] },
            strategy: 'all_at_once',
            start_at: '2999-01-01T00:00:00Z',
          }),
          api('DELETE', `/api/v1/firmware/${version}`),
        ]);
        assert.ok(!(deploy.status === 201 && remove.status === 204), `round ${round}: both succeeded`);
        assert.ok([201, 404].includes(deploy.status) && [204, 409].includes(remove.status), `round ${round}`);
        if (deploy.status === 201) {
          created += 1;
          assert.equal((await api('POST', `/api/v1/deployments/${deploy.body.id}/cancel`)).status, 200);
        }
        if (remove.status === 204) deleted += 1;
      }
      assert.equal(created + deleted, 20, 'each race had exactly one winner');
    });

    it('a cancel reaches the running devices even when the notification is lost (the listener killed between the cancel and its effect)', {
      skip: backend.db !== 'postgres' && 'PGlite delivers notifications in-process: none can be lost',
    }, async () => {
      const { devices, deploy, members, api, until } = await setup('lost', 3, {
        faults: ['slowLink', 'slowLink', 'slowLink'],
        slowLinkChunkDelayMs: 3000,
      });
      const created = await deploy({ target: { device_ids: devices.map((d) => d.deviceId) }, strategy: 'all_at_once' });
      await eventually(
        async () => (await members(created.id)).filter((device) => device.state === 'in_progress').length === 3,
        20_000,
        'all three downloading',
      );
      const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
      await admin.connect();
      try {
        const killed = await admin.query(
          'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1',
          [LISTENER_APPLICATION_NAME],
        );
        assert.ok(killed.rowCount! >= 1, 'the listener was there to kill');
        assert.equal((await api('POST', `/api/v1/deployments/${created.id}/cancel`)).status, 200);
      } finally {
        await admin.end();
      }
      await eventually(
        async () => (await members(created.id)).filter((device) => device.state === 'cancelled').length === 3,
        20_000,
        'the three running updates cancelled on the devices',
      );
      await until(created.id, 'cancelled');
      assert.ok((await members(created.id)).every((device) => device.current_version === '1.0.0'));
    });
  });
}
