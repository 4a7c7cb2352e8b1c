/**
 * The deployment pages in real headless Chromium against a real server and 24 simulated devices
 * (the real agent code, in this process): a canary created from the form after its dry run, its
 * counts and batch states followed live on the deployment page, paused and resumed from it, a
 * failure gate that trips on four devices whose health check fails on 2.0.0, a viewer who sees
 * no control, and the page at phone size. PGlite and the local store only: the API suites cover
 * both databases and both stores; this file checks what the browser shows.
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

const text = async (locator: Locator) => (await locator.textContent()) ?? '';

/** The deployments list's row of the deployment of VERSION in `status`. */
const listRow = (page: Page, status: string) =>
  page.getByRole('row', { name: new RegExp(`^${VERSION.replaceAll('.', '\\.')} ${status}`) });

interface Deployment {
  id: string;
  status: string;
  counts: Record<string, number>;
  batches: { index: number; kind: string; size: number; state: string }[];
  abort_reason: string | null;
}

describe('dashboard deployments', { skip }, () => {
  let stand: Awaited<ReturnType<typeof startDashboardStand>> | undefined;
  let server: TestServer;
  let browser: Browser;
  let fleet: Fleet;
  let key: string;
  let viewerKey: string;
  let page: Page;
  let deploymentId: string;

  const deployment = async () => (await server.api<Deployment>('GET', `/api/v1/deployments/${deploymentId}`, key)).body;
  /** The figure the page shows for a device status ("Devices by status"). */
  const shownCount = async (status: string) =>
    Number(
      await page
        .getByRole('region', { name: 'Devices by status' })
        .getByRole('term')
        .filter({ hasText: new RegExp(`^${status}$`) })
        .locator('xpath=following-sibling::dd')
        .textContent(),
    );
  /** The page's heading with the deployment's status badge in it. */
  const statusHeading = (status: string) =>
    page.getByRole('heading', { name: new RegExp(`^Deployment of ${VERSION.replaceAll('.', '\\.')} ${status}$`) });
  const batchRegion = (index: number, kind: string) => page.getByRole('region', { name: `Batch #${index} (${kind})` });

  before(async () => {
    stand = await startDashboardStand();
    ({ server, browser } = stand);
    const org = await server.createOrg('dash-deployments');
    key = org.adminKey;
    const viewer = await server.api<{ key: string }>('POST', '/api/v1/api-keys', key, { role: 'viewer' });
    assert.equal(viewer.status, 201, JSON.stringify(viewer.body));
    viewerKey = viewer.body.key;
    const firmware = await makeFirmwareFile(64 * 1024);
    const upload = await postFirmware(server.url, key, { version: VERSION, sha256: firmware.sha256 }, firmware);
    assert.equal(upload.status, 201, JSON.stringify(upload.body));
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
    assert.ok(await fleet.waitUntilAllConnected(15_000), 'every simulated device online');
    page = await openDashboard(browser, server.url);
    await signIn(page, key);
  });
  after(() => stand?.stop(fleet));

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
    await canary.getByText('baking').waitFor({ timeout: 15_000 });
    await canary.getByText(/bake ends in \d:\d\d/).waitFor();
    await screenshot(page, 'deployment-rollout');
    await page.getByRole('button', { name: 'Pause' }).click();
    await statusHeading('paused').waitFor();
    assert.equal((await deployment()).status, 'paused');
    assert.equal(await shownCount('completed'), CANARY);

    // Paused: the canary's bake ends, the rest waits.
    await canary.getByText('passed').waitFor({ timeout: 15_000 });
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

  it('shows the gate tripping: the abort reason, the failing devices with their error, the chart', async () => {
    await page.getByText(/^Stopped: batch 1 crossed the failure threshold/).waitFor({ timeout: 20_000 });
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
    // Only a rollback is left to do on an aborted deployment.
    assert.deepEqual(await page.locator('.page-actions').getByRole('button').allInnerTexts(), ['Roll back']);
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
      /^\d+ completed · 4 failed of 24$/,
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
});
