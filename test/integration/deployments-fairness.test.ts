/**
 * One organization cannot stall the others, on each database: its open deployments are capped,
 * the ones scheduled far ahead cost nothing until their start, and a dynamic deployment over a
 * list of 100,000 device ids matches only what changed. The victim's rollout of five devices,
 * beside the abuse, is held to a bound stated as a ratio to its own unloaded run in the same test.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Fleet } from '../../src/simulator/simulator.ts';
import { FLEET_SERVER_ENV, setupFleet } from '../helpers/deployment-fleet.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const backends = await backendsUnderTest();
after(() => stopSharedServices());

const CAP = 25;
/**
 * How much slower the victim's rollout may be beside the abuse than alone: three times, plus two
 * seconds for a busy machine's noise on a run of about one second. Before the fair scheduler it
 * was about 100 times slower (154 s instead of 1.6 s).
 */
const SLOWDOWN_RATIO = 3;
const SLOWDOWN_SLACK_MS = 2000;

for (const backend of backends) {
  describe(`fair between organizations (${backend.name})`, () => {
    let server: TestServer;
    const fleets: Fleet[] = [];

    before(async () => {
      server = await startTestServer(backend, {
        env: { ...FLEET_SERVER_ENV, EDGEFLOW_MAX_OPEN_DEPLOYMENTS: String(CAP) },
      });
    });
    after(async () => {
      await Promise.all(fleets.map((fleet) => fleet.stop()));
      await server?.close();
    });

    it(`another organization's abuse slows a 5-device rollout by at most ${SLOWDOWN_RATIO}× (+${SLOWDOWN_SLACK_MS / 1000} s), its open deployments are capped, and the ones scheduled ahead cost nothing`, async (context) => {
      const victim = await setupFleet(server, fleets, 'victim', 10);
      const rollout = async (ids: string[]) => {
        const started = performance.now();
        const created = await victim.deploy({ target: { device_ids: ids }, strategy: 'all_at_once' });
        await victim.until(created.id, 'completed', 120_000);
        return performance.now() - started;
      };
      const ids = victim.devices.map((device) => device.deviceId);
      const alone = await rollout(ids.slice(0, 5));

      // The abuser: a dynamic deployment over 100,000 listed ids, then scheduled deployments for
      // the year 2999 up to the cap, and one more, refused.
      const abuser = await setupFleet(server, fleets, 'abuser', 3);
      const listed = Array.from({ length: 100_000 }, (_, index) => `x${index}`);
      listed[0] = abuser.devices[0]!.deviceId;
      const dynamic = await abuser.deploy({ target: { device_ids: listed }, strategy: 'all_at_once', dynamic: true });
      assert.deepEqual(dynamic.target, { device_ids_count: 100_000 });
      for (let index = 1; index < CAP; index++) {
        await abuser.deploy({ target: { all: true }, strategy: 'all_at_once', start_at: '2999-01-01T00:00:00Z' });
      }
      const refused = await abuser.api<{ error: { code: string; message: string } }>('POST', '/api/v1/deployments', {
        version: '1.1.0',
        target: { all: true },
        strategy: 'all_at_once',
        start_at: '2999-01-01T00:00:00Z',
      });
      assert.equal(refused.status, 409, JSON.stringify(refused.body));
      assert.equal(refused.body.error.code, 'too_many_deployments');
      // Keep the dynamic deployment matching: a device of the abuser changes all along.
      let churning = true;
      const churn = (async () => {
        for (let round = 0; churning; round++) {
          await abuser.api('PATCH', `/api/v1/devices/${abuser.devices[1]!.deviceId}`, { tags: [`t${round % 7}`] });
        }
      })();
      let beside: number;
      try {
        beside = await rollout(ids.slice(5));
      } finally {
        churning = false;
        await churn;
      }
      const bound = SLOWDOWN_RATIO * alone + SLOWDOWN_SLACK_MS;
      context.diagnostic(`rollout alone ${Math.round(alone)} ms, beside the abuse ${Math.round(beside)} ms`);
      assert.ok(
        beside <= bound,
        `beside the abuse the rollout took ${Math.round(beside)} ms; alone ${Math.round(alone)} ms (bound ${Math.round(bound)} ms)`,
      );
      // Scheduled far ahead: never leased by a pass, never given a state other than scheduled.
      const touched = await server.db.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM deployments
         WHERE organization_id = $1 AND start_at > now() AND (lease_node IS NOT NULL OR state <> 'scheduled')`,
        [abuser.org.id],
      );
      assert.equal(touched[0]?.n, 0);
    });
  });
}
