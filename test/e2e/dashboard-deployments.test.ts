/**
 * The deployment pages in real headless Chromium against a real server and 28 simulated devices
 * (the real agent code, in this process): a canary created from the form after its dry run, its
 * counts and batch states followed live on the deployment page, paused and resumed from it, a
 * failure gate that trips on four devices whose health check fails on 2.0.0, a viewer who sees
 * no control, the page at phone size; then, on four more devices, a canary that one device fails
 * in its bake (it falls back) rolled back live on the page with its rollback's outcome, the
 * devices another deployment holds found by their reason, and a completed deployment that offers
 * only a rollback — the buttons always the server's `controls`. PGlite and the local store only:
 * the API suites cover both databases and both stores; this file checks what the browser shows.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Locator, Page } from 'playwright-core';
import { fetchSigningKey, registerDevices } from '../../src/simulator/register.ts';
import { type Fleet, runFleet } from '../../src/simulator/simulator.ts';
import {
  assertNoPageErrors,
  chromiumMissing,
  openDashboard,
  PHONE,
  screenshot,
  signIn,
  startDashboardStand,
} from '../helpers/browser.ts';
import { makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
import { eventually } from '../helpers/raw-device.ts';
import type { TestServer } from '../helpers/server.ts';

const skip = chromiumMissing();

const VERSION = '2.0.0';
const HEALTHY = 20;
/** Their ids sort after the healthy ones: never in the canary (the first 25 % by id). */
const FAULTY = 4;
const CANARY = 6;
/** The second fleet: its first device crashes on ROLLBACK_VERSION in the bake and falls back. */
const ROLLBACK_VERSION = '3.0.0';
const ROLLBACK_FLEET = 4;

const text = async (locator: Locator) => (await locator.textContent()) ?? '';

/** The deployments list's row of the deployment of VERSION in `status`. */
const listRow = (page: Page, status: string) =>
  page.getByRole('row', { name: new RegExp(`^${VERSION.replaceAll('.', '\\.')} ${status}`) });

interface Deployment {
  id: string;
  status: string;
  controls: string[];
  counts: Record<string, number>;
  excluded: Record<string, number>;
  rollback: Record<string, number> | null;
  batches: { index: number; kind: string; size: number; state: string }[];
  stop_reason: string | null;
}

describe('dashboard deployments', { skip }, () => {
  let stand: Awaited<ReturnType<typeof startDashboardStand>> | undefined;
  let server: TestServer;
  let browser: Browser;
  let fleet: Fleet;
  let rollbackFleet: Fleet;
  let key: string;
  let viewerKey: string;
  let page: Page;
  let deploymentId: string;

  const deployment = async () => (await server.api<Deployment>('GET', `/api/v1/deployments/${deploymentId}`, key)).body;
  /** The figure the page shows for a device state ("Devices by state"). */
  const shownCount = async (status: string) =>
    Number(
      await page
        .getByRole('region', { name: 'Devices by state' })
        .getByRole('term')
        .filter({ hasText: new RegExp(`^${status}$`) })
        .locator('xpath=following-sibling::dd')
        .textContent(),
    );
  /** The page's heading with the deployment's status badge in it. */
  const statusHeading = (status: string, version = VERSION) =>
    page.getByRole('heading', { name: new RegExp(`^Deployment of ${version.replaceAll('.', '\\.')} ${status}$`) });
  /** The labels of the operator's buttons in the page header. */
  const controls = () => page.locator('.page-actions').getByRole('button').allInnerTexts();
  const createDeployment = async (body: Record<string, unknown>) => {
    const created = await server.api<Deployment>('POST', '/api/v1/deployments', key, body);
    assert.equal(created.status, 201, JSON.stringify(created.body));
    return created.body;
  };
  const batchRegion = (index: number, kind: string) => page.getByRole('region', { name: `Batch #${index} (${kind})` });

  before(async () => {
    stand = await startDashboardStand();
    ({ server, browser } = stand);
    const org = await server.createOrg('dash-deployments');
    key = org.adminKey;
    const viewer = await server.api<{ key: string }>('POST', '/api/v1/api-keys', key, { role: 'viewer' });
    assert.equal(viewer.status, 201, JSON.stringify(viewer.body));
    viewerKey = viewer.body.key;
    // 1.0.0, what the devices run at start: where a rollback takes them back.
    for (const version of ['1.0.0', VERSION, ROLLBACK_VERSION]) {
      const firmware = await makeFirmwareFile(64 * 1024);
      const upload = await postFirmware(server.url, key, { version, sha256: firmware.sha256 }, firmware);
      assert.equal(upload.status, 201, JSON.stringify(upload.body));
    }
    const register = (count: number, prefix: string) =>
      registerDevices({ server: server.url, key, count, prefix, tags: ['dash'] });
    const healthy = await register(HEALTHY, 'dash-');
    const faulty = await register(FAULTY, 'dash-x');
    fleet = runFleet({
      server: server.url,
      devices: [
        ...healthy.map((device) => ({ ...device, fault: null })),
        ...faulty.map((device) => ({ ...device, fault: 'healthCheckFailure' as const })),
      ],
      allowInsecure: true,
      publicKeyPem: await fetchSigningKey(server.url, key),
      organizationId: org.id,
      faultVersion: VERSION,
      reconnectBaseMs: 50,
      agentOptions: { progressIntervalMs: 200, resultRetryBaseMs: 100 },
    });
    const reverting = await registerDevices({
      server: server.url,
      key,
      count: ROLLBACK_FLEET,
      prefix: 'rb-',
      tags: ['rb'],
    });
    rollbackFleet = runFleet({
      server: server.url,
      devices: reverting.map((device, index) => ({ ...device, fault: index === 0 ? ('bakeRevert' as const) : null })),
      allowInsecure: true,
      publicKeyPem: await fetchSigningKey(server.url, key),
      organizationId: org.id,
      faultVersion: ROLLBACK_VERSION,
      // Well inside the canary's bake of 24 s, after the page showed it baking.
      faultTuning: { bakeCrashAfterMs: 6000 },
      reconnectBaseMs: 50,
      agentOptions: { progressIntervalMs: 200, resultRetryBaseMs: 100 },
    });
    assert.ok(await fleet.waitUntilAllConnected(15_000), 'every simulated device online');
    assert.ok(await rollbackFleet.waitUntilAllConnected(15_000), 'every device of the second fleet online');
    page = await openDashboard(browser, server.url);
    await signIn(page, key);
  });
  after(() => stand?.stop(fleet, rollbackFleet));

  it('creates a canary from the form after showing its dry run, with the batch sizes the API then creates', async () => {
    await page.getByRole('link', { name: 'Deployments', exact: true }).click();
    await page.getByText('No deployment yet.').waitFor();
    await page.getByRole('link', { name: 'New deployment' }).click();

    await page.getByLabel('Version', { exact: true }).selectOption(VERSION);
    await page.getByLabel('Devices matching every field below').check();
    await page.getByLabel('Tags', { exact: true }).fill('dash');
    await page.getByLabel('Canary first, then the rest').check();
    await page.getByLabel('Canary size', { exact: true }).fill('25');
    await page.getByLabel('Unit of the canary size').selectOption('percent');
    await page.getByLabel('Failure threshold (%)').fill('10');
    await page.getByLabel('Minimum sample').fill('4');
    // Long enough to pause the rollout in the canary's bake, short for the test.
    await page.getByLabel('Bake (minutes)').fill('0.15');
    await page.getByLabel('On failure').selectOption('abort');
    assert.equal(await page.getByRole('button', { name: 'Start deployment' }).count(), 0, 'no Start before a preview');

    await page.getByRole('button', { name: 'Preview' }).click();
    const plan = page.getByRole('region', { name: `Plan: ${VERSION} to ${HEALTHY + FAULTY} devices` });
    await plan.waitFor();
    const rows = await plan.getByRole('table').getByRole('row').allInnerTexts();
    assert.deepEqual(
      rows.slice(1).map((row) => row.split('\t').slice(0, 3)),
      [
        ['#0', 'canary', String(CANARY)],
        ['#1', 'batch', String(HEALTHY + FAULTY - CANARY)],
      ],
    );
    assert.match(await text(plan), /Nothing was created\./);
    assert.equal(
      (await server.api<{ deployments: unknown[] }>('GET', '/api/v1/deployments', key)).body.deployments.length,
      0,
    );
    await screenshot(page, 'deployment-new-plan');

    // A change after the preview makes it stale: no Start until the next preview.
    await page.getByLabel('Minimum sample').fill('5');
    await page.getByText('The form changed since the preview').waitFor();
    assert.equal(await page.getByRole('button', { name: 'Start deployment' }).count(), 0);
    await page.getByLabel('Minimum sample').fill('4');
    await page.getByRole('button', { name: 'Preview' }).click();
    await page.getByRole('button', { name: 'Start deployment' }).click();

    await page.getByRole('heading', { name: `Deployment of ${VERSION}` }).waitFor();
    deploymentId = decodeURIComponent(new URL(page.url()).hash.split('/')[2]!);
    const created = await deployment();
    assert.deepEqual(
      created.batches.map((batch) => [batch.kind, batch.size]),
      [
        ['canary', CANARY],
        ['batch', HEALTHY + FAULTY - CANARY],
      ],
    );
    assertNoPageErrors(page);
  });

  it('follows the canary live, pauses in its bake and resumes, then counts the rest rising without a reload', async () => {
    // Set in this document only: a reload would lose it.
    await page.evaluate(() => {
      (window as unknown as { notReloaded: boolean }).notReloaded = true;
    });
    const canary = batchRegion(0, 'canary');
    const rest = batchRegion(1, 'batch');
    await canary.getByText('baking', { exact: true }).waitFor({ timeout: 15_000 });
    await canary.getByText(/bake ends in \d:\d\d/).waitFor();
    await screenshot(page, 'deployment-rollout');
    await page.getByRole('button', { name: 'Pause' }).click();
    await statusHeading('paused').waitFor();
    assert.equal((await deployment()).status, 'paused');
    // Committed: baking, or baked by now.
    assert.equal((await shownCount('baking')) + (await shownCount('completed')), CANARY);
    assert.deepEqual(await controls(), ['Resume', 'Cancel', 'Promote next batch', 'Roll back']);

    // Paused: the canary's bake ends, the rest waits.
    await canary.getByText('passed').waitFor({ timeout: 15_000 });
    await eventually(async () => (await shownCount('completed')) === CANARY, 5000, 'the canary completed');
    assert.equal(await rest.getByText('pending').count(), 1);
    assert.match((await rest.getByRole('img').getAttribute('aria-label')) ?? '', /^0 completed of 18$/);

    await page.getByRole('button', { name: 'Resume' }).click();
    // Running again, unless the rest's failures already stopped it.
    await statusHeading('(running|failed)').waitFor();
    assert.notEqual((await deployment()).status, 'paused');
    await eventually(
      async () => (await shownCount('completed')) >= CANARY + 10,
      20_000,
      'the rest completing on the page',
    );
    assert.equal(await page.evaluate(() => (window as unknown as { notReloaded?: boolean }).notReloaded), true);
    assertNoPageErrors(page);
  });

  it('shows the gate tripping: the stop reason, the failing devices with their error, the chart', async () => {
    await page
      .getByText(
        /^Stopped: batch 1 \(batch\): \d+ failed of \d+ with a verdict \(.*\), more than the 10% allowed; on_failure abort$/,
      )
      .waitFor({ timeout: 20_000 });
    await statusHeading('failed').waitFor();
    assert.equal((await deployment()).status, 'failed');
    assert.equal(await batchRegion(1, 'batch').getByText('failed', { exact: true }).count(), 1);

    const failing = page.getByRole('region', { name: 'Failing devices' });
    await eventually(async () => (await failing.getByRole('row').count()) === FAULTY + 1, 10_000, 'four failing rows');
    for (let index = 1; index <= FAULTY; index++) {
      const row = failing.getByRole('row', { name: new RegExp(`^dash-x${index}\\b`) });
      assert.match(await text(row), /health_check_failed/);
      assert.equal(await row.getByRole('link').getAttribute('href'), `#/devices/dash-x${index}`);
    }
    await page.getByRole('img', { name: /^Completions and failures over time: \d+ completed and 4 failed/ }).waitFor();
    // Only a rollback is left to do on an aborted deployment: the server says so.
    assert.deepEqual((await deployment()).controls, ['rollback']);
    assert.deepEqual(await controls(), ['Roll back']);
    await screenshot(page, 'deployment-stopped');
    assertNoPageErrors(page);
  });

  it('lists deployments with status and progress, filtered in the URL, and a new one without a reload', async () => {
    await page.getByRole('link', { name: 'Deployments', exact: true }).click();
    const row = (status: string) => listRow(page, status);
    await row('failed').waitFor();
    assert.match(await text(row('failed')), /canary 25%, then all at once/);
    assert.match(
      (await row('failed').getByRole('img').getAttribute('aria-label')) ?? '',
      /^\d+ completed · 4 failed( · \d+ cancelled or skipped)? of 24$/,
    );

    // Created elsewhere (the CLI, another operator): its `deployment` event brings it in.
    const scheduled = await server.api('POST', '/api/v1/deployments', key, {
      version: VERSION,
      target: { tags: ['dash'] },
      strategy: 'rolling',
      batch_size: '50%',
      start_at: new Date(Date.now() + 24 * 3600_000).toISOString(),
    });
    assert.equal(scheduled.status, 201, JSON.stringify(scheduled.body));
    await row('scheduled').waitFor();
    assert.match(await text(row('scheduled')), /rolling by 50%/);
    await screenshot(page, 'deployments');

    await page.getByLabel('Status').selectOption('running');
    await page.getByText('No running deployment.').waitFor();
    assert.match(page.url(), /#\/deployments\?status=running$/);
    await page.getByLabel('Status').selectOption('failed');
    await row('failed').waitFor();
    assert.equal(await row('scheduled').count(), 0);
    assertNoPageErrors(page);
  });

  it('shows a viewer the deployment without any control, and fits a phone screen', async () => {
    const phone = await openDashboard(browser, `${server.url}/#/deployments/${deploymentId}`, PHONE);
    await signIn(phone, viewerKey);
    await phone.getByRole('heading', { name: `Deployment of ${VERSION}` }).waitFor();
    await phone.getByRole('region', { name: 'Failing devices' }).getByRole('row').nth(FAULTY).waitFor();
    assert.equal(await phone.locator('main').getByRole('button').count(), 0, 'a viewer sees no action button');
    const overflow = await phone.evaluate(
      () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
    );
    assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow} px at 390 px`);
    await screenshot(phone, 'deployment-phone');

    await phone.getByRole('link', { name: 'Deployments', exact: true }).click();
    await listRow(phone, 'failed').waitFor();
    assert.equal(await phone.getByRole('link', { name: 'New deployment' }).count(), 0);
    assertNoPageErrors(phone);
    await phone.context().close();
  });

  it('rolls back a canary that fails its bake, live: the failure counted, the stop reason, the chart, the rollback outcome', async () => {
    await page.evaluate(() => {
      (window as unknown as { notReloaded: boolean }).notReloaded = true;
    });
    const created = await createDeployment({
      version: ROLLBACK_VERSION,
      target: { tags: ['rb'] },
      strategy: 'canary',
      canary_count: 3,
      min_sample: 1,
      failure_threshold_percent: 10,
      bake_minutes: 0.4,
      on_failure: 'rollback',
    });
    deploymentId = created.id;
    await page.evaluate((id) => {
      location.hash = `#/deployments/${id}`;
    }, created.id);
    const canary = batchRegion(0, 'canary');
    await canary.getByText('baking', { exact: true }).waitFor({ timeout: 15_000 });
    assert.deepEqual(await controls(), ['Pause', 'Cancel', 'Promote next batch', 'Roll back']);

    // rb-1 crashes on 3.0.0 in its bake and falls back: the gate rolls the canary back.
    await page
      .getByText(/^Stopped: batch 0 \(canary\): 1 failed of 1 with a verdict \(100\.0%, of 3 in the batch\)/)
      .waitFor({ timeout: 20_000 });
    await statusHeading('rolled back', ROLLBACK_VERSION).waitFor();
    assert.equal(await canary.getByText('failed', { exact: true }).count(), 1, 'the failed canary stays failed');
    assert.equal(await shownCount('failed'), 1);
    assert.equal(await shownCount('failed in the bake'), 1);
    const bar = page.getByRole('region', { name: 'Devices by state' }).getByRole('img');
    const words = (await bar.getAttribute('aria-label')) ?? '';
    assert.match(words, /· 1 failed \(1 in the bake\)/, words);
    assert.doesNotMatch(words, /^3 completed/, 'never "all completed" for a canary that failed');

    // The chart adds the bake failure without a reload.
    await page
      .getByRole('img', { name: /^Completions and failures over time: \d+ completed and 1 failed/ })
      .waitFor({ timeout: 10_000 });
    const rollback = page.getByRole('region', { name: 'Rollback' });
    await rollback.getByRole('img', { name: '2 completed · 1 skipped of 3, done' }).waitFor({ timeout: 20_000 });
    assert.deepEqual(await controls(), [], 'a rolled-back deployment offers nothing');

    const failing = page.getByRole('region', { name: 'Failing devices' });
    const reverted = failing.getByRole('row', { name: /^rb-1\b/ });
    await reverted.waitFor();
    assert.match(await text(reverted), /reverted to 1\.0\.0 during the bake; rollback skipped/);
    assert.match(await text(reverted), /bake_reverted/);
    assert.equal(await page.evaluate(() => (window as unknown as { notReloaded?: boolean }).notReloaded), true);
    await screenshot(page, 'deployment-rolled-back');

    // The device that fell back says so, not "completed".
    await page.getByRole('link', { name: 'rb-1', exact: true }).first().click();
    await page.getByRole('heading', { name: 'OTA record' }).waitFor();
    await page.getByText('reverted to 1.0.0').first().waitFor();
    assertNoPageErrors(page);
  });

  it('filters the devices of a deployment by reason: the ones another deployment holds read "busy in" it', async () => {
    const later = new Date(Date.now() + 24 * 3600_000).toISOString();
    const holding = await createDeployment({
      version: VERSION,
      target: { device_ids: ['rb-1', 'rb-2'] },
      strategy: 'all_at_once',
      start_at: later,
    });
    const left = await createDeployment({
      version: VERSION,
      target: { tags: ['rb'] },
      strategy: 'all_at_once',
      start_at: later,
    });
    assert.equal(left.excluded.busy, 2);

    await page.evaluate((id) => {
      location.hash = `#/deployments/${id}`;
    }, left.id);
    await statusHeading('scheduled').waitFor();
    assert.deepEqual(await controls(), ['Pause', 'Cancel']);
    const devices = page.getByRole('region', { name: 'Devices of this deployment' });
    await devices.getByRole('row', { name: /^rb-4\b/ }).waitFor();
    assert.equal(await devices.getByRole('row').count(), ROLLBACK_FLEET + 1, 'every device the target matched');

    await page.getByRole('link', { name: '2 busy' }).click();
    await eventually(async () => (await devices.getByRole('row').count()) === 3, 10_000, 'the two busy devices');
    assert.equal(await page.getByLabel('Reason', { exact: true }).inputValue(), 'busy');
    for (const deviceId of ['rb-1', 'rb-2']) {
      const row = devices.getByRole('row', { name: new RegExp(`^${deviceId}\\b`) });
      assert.match(await text(row), new RegExp(`skippedbusyskipped: busy in ${holding.id}`));
    }
    await page.getByLabel('Reason', { exact: true }).selectOption('');
    await page.getByLabel('State', { exact: true }).selectOption('pending');
    await eventually(async () => (await devices.getByRole('row').count()) === 3, 10_000, 'the two waiting devices');
    assert.match(await text(devices.getByRole('row', { name: /^rb-3\b/ })), /waiting for batch 0/);

    // The holding deployment lists its target ids, read when opened.
    await page.evaluate((id) => {
      location.hash = `#/deployments/${id}`;
    }, holding.id);
    await page.getByText('2 devices listed').waitFor();
    await page.getByText('Listed ids').click();
    await page.getByRole('link', { name: 'rb-2', exact: true }).first().waitFor();
    await screenshot(page, 'deployment-devices-busy');

    for (const id of [left.id, holding.id]) {
      assert.equal((await server.api('POST', `/api/v1/deployments/${id}/cancel`, key)).status, 200);
    }
    await statusHeading('cancelled').waitFor();
    assert.deepEqual(await controls(), []);
    assertNoPageErrors(page);
  });

  it('offers only a rollback on a completed deployment', async () => {
    const done = await createDeployment({
      version: VERSION,
      target: { device_ids: ['rb-2', 'rb-3', 'rb-4'] },
      strategy: 'all_at_once',
    });
    await page.evaluate((id) => {
      location.hash = `#/deployments/${id}`;
    }, done.id);
    await statusHeading('completed').waitFor({ timeout: 20_000 });
    assert.deepEqual((await server.api<Deployment>('GET', `/api/v1/deployments/${done.id}`, key)).body.controls, [
      'rollback',
    ]);
    await eventually(async () => (await controls()).join() === 'Roll back', 5000, 'only Roll back');
    await page.getByText('3 devices listed').waitFor();
    await page
      .getByRole('region', { name: 'Devices by state' })
      .getByRole('img', { name: '3 completed of 3' })
      .waitFor();
    assertNoPageErrors(page);
  });
});
