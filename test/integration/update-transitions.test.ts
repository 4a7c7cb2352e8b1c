/**
 * The one writer of an update's status against the real databases: it returns the status a
 * row really left (a timeout of a dispatched update says `dispatched`), refuses what status.ts
 * forbids, and every change reaches the event feed as a typed event from the statement that
 * made it. The feed ignores what is no known event and the database's own index agrees with
 * the ON CONFLICT predicate.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as devicesRepo from '../../src/server/devices/repo.ts';
import { EVENT_CHANNEL } from '../../src/server/events/feed.ts';
import type { OtaEvent } from '../../src/server/model/events.ts';
import { ACTIVE_STATUSES } from '../../src/server/model/update-status.ts';
import type { NewUpdate } from '../../src/server/updates/transitions.ts';
import { registerDevice } from '../helpers/agents.ts';
import { eventually } from '../helpers/raw-device.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const backends = await backendsUnderTest();
after(stopSharedServices);

for (const backend of backends) {
  describe(`update status transitions on ${backend.name}`, () => {
    let server: TestServer;
    let org: { id: string; adminKey: string };
    const received: OtaEvent[] = [];
    let counter = 0;

    before(async () => {
      server = await startTestServer(backend, { env: { EDGEFLOW_DISPATCH_INTERVAL_MS: '600000' } });
      org = await server.createOrg();
      server.services.feed.on('ota', (event) => received.push(event));
    });
    after(() => server.close());

    async function newUpdate(): Promise<NewUpdate> {
      const device = await registerDevice(server, org.adminKey);
      return {
        id: `upd_t${++counter}_${Date.now()}`,
        organizationId: org.id,
        deviceId: device.deviceId,
        deploymentId: null,
        kind: 'update',
        targetVersion: '1.1.0',
        fromVersion: '1.0.0',
        force: false,
      };
    }
    const eventsOf = (id: string) => received.filter((event) => event.update_id === id);
    /** A device's progress report of `update`, as the engine hands it to reportProgress. */
    const progressReport = (update: NewUpdate, phase: string, progress: number) => ({
      organizationId: org.id,
      id: update.id,
      deviceId: update.deviceId,
      phase,
      progress,
    });

    it('creates one active update per device and announces it with no previous status', async () => {
      const update = await newUpdate();
      const [created] = await server.services.transitions.create([update]);
      assert.equal(created?.status, 'queued');
      assert.equal(created?.previous_status, null);
      const second = await server.services.transitions.create([{ ...update, id: `${update.id}_again` }]);
      assert.deepEqual(second, [], 'a second active update for the device is not created');
      await eventually(async () => eventsOf(update.id).length === 1, 5000, 'the creation event');
      const [event] = eventsOf(update.id);
      assert.equal(event!.status, 'queued');
      assert.equal(event!.previous_status, null);
      assert.equal(event!.organization_id, org.id);
      assert.match(event!.at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    });

    it('a timeout reports the status the row really left, dispatched or in_progress', async () => {
      const { transitions } = server.services;
      const dispatched = await newUpdate();
      const reporting = await newUpdate();
      await transitions.create([dispatched, reporting]);
      await transitions.move({ organizationId: org.id, id: dispatched.id }, 'dispatched', { deadlineInSeconds: -1 });
      await transitions.move({ organizationId: org.id, id: reporting.id }, 'dispatched');
      await transitions.move({ organizationId: org.id, id: reporting.id }, 'in_progress', {
        progress: 40,
        deadlineInSeconds: -1,
      });
      const expired = await transitions.expireOverdue();
      const left = Object.fromEntries(expired.map((row) => [row.id, row.previous_status]));
      assert.equal(left[dispatched.id], 'dispatched');
      assert.equal(left[reporting.id], 'in_progress');
      for (const row of expired.filter((row) => [dispatched.id, reporting.id].includes(row.id))) {
        assert.equal(row.status, 'timed_out');
        assert.equal(row.error_code, 'timed_out');
        assert.ok(row.finished_at);
      }
      await eventually(
        async () => eventsOf(dispatched.id).some((event) => event.status === 'timed_out'),
        5000,
        'the timeout event',
      );
      const timedOut = eventsOf(dispatched.id).find((event) => event.status === 'timed_out')!;
      assert.equal(timedOut.previous_status, 'dispatched');
      assert.deepEqual(timedOut.error, {
        code: 'timed_out',
        message: 'the device did not report within the update timeout',
      });
    });

    it('refuses what status.ts forbids: nothing changes and nothing is announced', async () => {
      const { transitions } = server.services;
      const update = await newUpdate();
      await transitions.create([update]);
      const where = { organizationId: org.id, id: update.id };
      assert.equal(await transitions.move(where, 'in_progress'), undefined, 'queued → in_progress');
      assert.equal(await transitions.move(where, 'completed'), undefined, 'queued → completed');
      assert.equal((await transitions.move(where, 'dispatched'))?.previous_status, 'queued');
      assert.equal((await transitions.move(where, 'failed', { errorCode: 'x' }))?.previous_status, 'dispatched');
      assert.equal(await transitions.move(where, 'completed'), undefined, 'out of a terminal status');
      assert.equal(await transitions.move({ ...where, deviceId: 'someone-else' }, 'queued'), undefined);
      await eventually(async () => eventsOf(update.id).length >= 3, 5000, 'the three changes');
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.deepEqual(
        eventsOf(update.id).map((event) => [event.previous_status, event.status]),
        [
          [null, 'queued'],
          ['queued', 'dispatched'],
          ['dispatched', 'failed'],
        ],
      );
    });

    it('claims only queued updates of devices whose tunnel this process holds and that said what they run, each once', async () => {
      // A replica of its own (not this server's engine, which would claim for its node at once).
      const { transitions } = server.services;
      const presence = { nodeId: `node_claims_${Date.now()}` };
      const mine = await newUpdate();
      const elsewhere = await newUpdate();
      await transitions.create([mine, elsewhere]);
      await devicesRepo.markOnline(server.db, presence.nodeId, [
        { organizationId: org.id, deviceId: mine.deviceId, agentVersion: null },
      ]);
      // Online, but it has not said what it runs on this tunnel yet: not sent anything.
      assert.deepEqual(
        (await transitions.claim(presence.nodeId, 1000, 60)).filter((row) => row.id === mine.id),
        [],
      );
      const device = await devicesRepo.findDevice(server.db, org.id, mine.deviceId);
      await devicesRepo.reportCurrentVersions(server.db, [
        {
          organizationId: org.id,
          deviceId: mine.deviceId,
          currentVersion: device!.current_version,
          agentVersion: null,
          slot: null,
        },
      ]);
      const claimed = await transitions.claim(presence.nodeId, 1000, 60);
      assert.deepEqual(
        claimed.filter((row) => [mine.id, elsewhere.id].includes(row.id)).map((row) => [row.id, row.previous_status]),
        [[mine.id, 'queued']],
      );
      assert.equal(claimed.find((row) => row.id === mine.id)!.attempts, 1);
      assert.deepEqual(
        (await transitions.claim(presence.nodeId, 1000, 60)).filter((row) => row.id === mine.id),
        [],
      );
    });

    it('writes a burst of progress reports in one statement, forward only, and announces only changes', async () => {
      const { transitions } = server.services;
      const first = await newUpdate();
      const second = await newUpdate();
      const finished = await newUpdate();
      await transitions.create([first, second, finished]);
      for (const update of [first, second, finished]) {
        await transitions.move({ organizationId: org.id, id: update.id }, 'dispatched');
      }
      await transitions.move({ organizationId: org.id, id: finished.id }, 'failed', { errorCode: 'x' });
      const written = await transitions.reportProgress(
        [
          progressReport(first, 'downloading', 10),
          progressReport(first, 'downloading', 30), // the later report of the burst wins
          progressReport(second, 'installing', 50),
          progressReport(finished, 'downloading', 99), // terminal: untouched
          { ...progressReport(second, 'installing', 80), deviceId: 'not-its-device' },
        ],
        60,
      );
      assert.deepEqual(
        written.map((row) => [row.id, row.status, row.phase, row.progress, row.previous_status]).sort(),
        [
          [first.id, 'in_progress', 'downloading', 30, 'dispatched'],
          [second.id, 'in_progress', 'installing', 50, 'dispatched'],
        ].sort(),
      );
      const again = await transitions.reportProgress([progressReport(first, 'downloading', 20)], 60);
      assert.equal(again[0]?.progress, 30, 'progress never moves backwards');
      await eventually(async () => eventsOf(second.id).length === 3, 5000, 'the progress event');
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.deepEqual(
        eventsOf(first.id).map((event) => event.progress),
        [0, 0, 30],
        'created, dispatched, one progress event; the report that changed nothing is not announced',
      );
      assert.equal(eventsOf(finished.id).length, 3);
    });

    it('keeps every phase of a burst: a new phase is written after the last one, not folded into it', async () => {
      const { transitions } = server.services;
      const update = await newUpdate();
      await transitions.create([update]);
      await transitions.move({ organizationId: org.id, id: update.id }, 'dispatched');
      const report = (phase: string, progress: number) => progressReport(update, phase, progress);
      const written = await transitions.reportProgress(
        [report('downloading', 10), report('downloading', 60), report('installing', 80), report('rebooting', 90)],
        60,
      );
      assert.deepEqual(
        written.map((row) => [row.phase, row.progress]),
        [
          ['downloading', 60],
          ['installing', 80],
          ['rebooting', 90],
        ],
      );
      await eventually(async () => eventsOf(update.id).length === 5, 5000, 'one event per phase');
      assert.deepEqual(
        eventsOf(update.id)
          .slice(2)
          .map((event) => event.phase),
        ['downloading', 'installing', 'rebooting'],
      );
    });

    it('counts each status change in the metrics, not progress within a status', async () => {
      const { transitions, metrics } = server.services;
      const count = async (status: string) =>
        (await metrics.updatesByStatus.get()).values.find((value) => value.labels.status === status)?.value ?? 0;
      const before = await count('in_progress');
      const update = await newUpdate();
      await transitions.create([update]);
      const where = { organizationId: org.id, id: update.id };
      await transitions.move(where, 'dispatched');
      for (const progress of [10, 20, 30]) await transitions.move(where, 'in_progress', { progress });
      assert.equal(await count('in_progress'), before + 1);
    });

    it('the feed ignores a notification that is no known event, and goes on', async () => {
      await server.db.query('SELECT pg_notify($1, $2)', [EVENT_CHANNEL, '{"type":"ota","data":{"status":"bogus"}}']);
      await server.db.query('SELECT pg_notify($1, $2)', [EVENT_CHANNEL, 'not json']);
      const update = await newUpdate();
      await server.services.transitions.create([update]);
      await eventually(async () => eventsOf(update.id).length === 1, 5000, 'the next real event');
      assert.ok(received.every((event) => event.status !== ('bogus' as never)));
    });

    it("the database's unique index has the predicate ON CONFLICT names", async () => {
      const [index] = await server.db.query<{ indexdef: string }>(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'ota_updates_one_active_idx'",
      );
      const statuses = [...(index?.indexdef ?? '').matchAll(/'([a-z_]+)'/g)].map((match) => match[1]).sort();
      assert.deepEqual(statuses, [...ACTIVE_STATUSES].sort());
    });
  });
}
