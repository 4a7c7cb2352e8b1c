/**
 * The dashboard's fleet pages in real headless Chromium, against a real server and 30 simulated
 * devices (real agent code, in this process) on three sites: 12 `site-north` (model gw-a) and 10
 * `site-south` (gw-b) online, 8 `site-east` (gw-b) never connected. The overview, the devices
 * table with its filters and pages, a device's page with a live update, the firmware upload with
 * its locally computed SHA256, a viewer's page without buttons, and the layout on a phone.
 * PGlite and the local store only: the API suites cover both databases and both stores.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { fetchSigningKey, registerDevices } from '../../src/simulator/register.ts';
import { type DeviceSpec, type Fleet, runFleet } from '../../src/simulator/simulator.ts';
import {
  assertNoPageErrors,
  chromiumMissing,
  openDashboard,
  PHONE,
  pageErrorsOf,
  screenshot,
  signIn,
  startDashboardStand,
} from '../helpers/browser.ts';
import { makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
import { eventually } from '../helpers/raw-device.ts';
import type { TestServer } from '../helpers/server.ts';

const skip = chromiumMissing();

/** Updates to this version fail on the devices given `installFailure`, and crawl on the `slowLink` one. */
const FAULT_VERSION = '1.2.0';

interface OtaRecord {
  ota_status: string;
  current_version: string;
}

describe('dashboard: overview, devices, firmware', { skip }, () => {
  let stand: Awaited<ReturnType<typeof startDashboardStand>> | undefined;
  let server: TestServer;
  let browser: Browser;
  let fleet: Fleet;
  let key: string;
  /** The signed-in admin's page, shared by the tests in order. */
  let page: Page;

  const api = <T>(method: string, path: string, body?: unknown) => server.api<T>(method, path, key, body);

  async function updateAndWait(deviceId: string, version: string, outcome: 'completed' | 'failed'): Promise<void> {
    const accepted = await api('POST', `/api/v1/devices/${deviceId}/ota/update`, { version });
    assert.equal(accepted.status, 202, JSON.stringify(accepted.body));
    await eventually(
      async () => (await api<OtaRecord>('GET', `/api/v1/devices/${deviceId}/ota`)).body.ota_status === outcome,
      20_000,
      `${deviceId} ${outcome}`,
    );
  }

  /** The link a card or a chart bar is, by what it reads out. */
  const link = (name: string) => page.getByRole('link', { name, exact: true });
  const rows = () => page.locator('main tbody tr');
  const shownRowCount = (count: number) =>
    eventually(async () => (await rows().count()) === count, 10_000, `${count} rows`);

  before(async () => {
    stand = await startDashboardStand();
    ({ server, browser } = stand);
    const org = await server.createOrg('Fleet pages');
    key = org.adminKey;
    for (const [version, size] of [
      ['1.0.0', 16 * 1024],
      ['1.1.0', 16 * 1024],
      [FAULT_VERSION, 1024 * 1024],
    ] as const) {
      const file = await makeFirmwareFile(size);
      const upload = await postFirmware(server.url, key, { version, sha256: file.sha256 }, file);
      assert.equal(upload.status, 201, JSON.stringify(upload.body));
    }
    const site = (prefix: string, count: number, model: string) =>
      registerDevices({ server: server.url, key, count, prefix, model, tags: [`site-${prefix.slice(0, -1)}`] });
    const [north, south, east] = await Promise.all([
      site('north-', 12, 'gw-a'),
      site('south-', 10, 'gw-b'),
      site('east-', 8, 'gw-b'),
    ]);
    assert.ok(north && south && east);
    await api('PATCH', '/api/v1/devices/north-1', { name: 'Pump house gateway' });
    const faults: Record<string, DeviceSpec['fault']> = {
      'south-1': 'installFailure',
      'south-2': 'installFailure',
      'south-3': 'slowLink',
    };
    fleet = runFleet({
      server: server.url,
      devices: [...north, ...south].map((device) => ({ ...device, fault: faults[device.deviceId] ?? null })),
      allowInsecure: true,
      publicKeyPem: await fetchSigningKey(server.url, key),
      organizationId: org.id,
      faultVersion: FAULT_VERSION,
      faultTuning: { slowLinkChunkDelayMs: 150 },
      reconnectBaseMs: 50,
      agentOptions: { downloadRetryBaseMs: 50, progressIntervalMs: 100, resultRetryBaseMs: 100 },
    });
    assert.ok(await fleet.waitUntilAllConnected(20_000), JSON.stringify(fleet.counters()));
    await Promise.all([
      ...['north-1', 'north-2', 'north-3', 'north-4'].map((id) => updateAndWait(id, '1.1.0', 'completed')),
      ...['south-1', 'south-2'].map((id) => updateAndWait(id, FAULT_VERSION, 'failed')),
    ]);
    // East never connects: a deployment to six of its devices stays under way, waiting for them.
    const deployment = await api('POST', '/api/v1/deployments', {
      version: '1.1.0',
      target: { device_ids: east.slice(0, 6).map((device) => device.deviceId) },
      strategy: 'all_at_once',
    });
    assert.equal(deployment.status, 201, JSON.stringify(deployment.body));
  });
  after(() => stand?.stop(fleet));

  it('signs in to the overview: online and offline devices, devices per version, the deployment under way, failures by code', async () => {
    page = await openDashboard(browser, server.url);
    await signIn(page, key);
    await page.getByRole('heading', { name: 'Fleet overview' }).waitFor();
    await link('Devices: 30').waitFor();
    await link('Online: 22').waitFor();
    await link('Offline: 8').waitFor();
    await link('1.0.0: 26 devices, 18 online').waitFor();
    await link('1.1.0: 4 devices, 4 online').waitFor();
    assert.equal(await page.locator('.version-chart').getByText('26 (18 online)').count(), 1);

    const active = page.getByRole('region', { name: 'Active deployments' });
    await active.getByRole('link', { name: '1.1.0 · all at once' }).waitFor();
    await active.getByText('0 of 6 completed').waitFor();

    const failures = page.getByRole('region', { name: 'Recent failures' });
    const installFailed = failures
      .getByRole('listitem')
      .filter({ has: page.locator('code', { hasText: 'install_failed' }) });
    await installFailed.getByText('2 failures').waitFor();
    for (const id of ['south-1', 'south-2']) await installFailed.getByRole('link', { name: id }).waitFor();
    await capture(page, 'overview');

    // Live: an update finishing elsewhere moves a device from one bar to the other, without a reload.
    await updateAndWait('north-5', '1.1.0', 'completed');
    await link('1.1.0: 5 devices, 5 online').waitFor({ timeout: 10_000 });
    await link('1.0.0: 25 devices, 17 online').waitFor();
    assertNoPageErrors(page);
  });

  it('lists the devices with filters kept in the URL, a search, and pages through them', async () => {
    await page.getByRole('navigation', { name: 'Sections' }).getByRole('link', { name: 'Devices' }).click();
    await page.getByText('30 devices').waitFor();
    await shownRowCount(25);
    await page.getByRole('navigation', { name: 'Pages' }).getByRole('button', { name: 'Next' }).click();
    await shownRowCount(5);
    await page.getByRole('navigation', { name: 'Pages' }).getByText('Page 2').waitFor();
    await page.getByRole('button', { name: 'Previous' }).click();
    await shownRowCount(25);

    await page.getByLabel('Tag', { exact: true }).selectOption('site-south');
    await page.getByText('10 devices match').waitFor();
    await shownRowCount(10);
    const ids = await page.locator('main tbody tr td:first-child').allTextContents();
    assert.deepEqual(ids.sort(), Array.from({ length: 10 }, (_, i) => `south-${i + 1}`).sort());
    assert.match(page.url(), /tag=site-south/);
    await capture(page, 'devices');

    // A reload (or a shared link) shows the same rows.
    await page.reload();
    await page.getByText('10 devices match').waitFor();
    assert.equal(await page.getByLabel('Tag', { exact: true }).inputValue(), 'site-south');

    await page.getByLabel('OTA status').selectOption('failed');
    await page.getByText('2 devices match').waitFor();
    await page.getByRole('row', { name: /south-1 .*install_failed/ }).waitFor();

    await page.getByRole('link', { name: 'clear the filters' }).click();
    await page.getByText('30 devices').waitFor();
    await page.getByLabel('Search').fill('pump');
    await page.getByText('1 device matches').waitFor();
    await page
      .getByRole('row', { name: /north-1 Pump house gateway gw-a site-north 1\.1\.0 online completed/ })
      .waitFor();
    assert.match(page.url(), /q=pump/);
    assertNoPageErrors(page);
  });

  it("shows a device's OTA record and history, rolls it back, updates another live, and shows the server's refusal", async () => {
    await page.getByRole('link', { name: 'north-1', exact: true }).click();
    const record = page.getByRole('region', { name: 'OTA record' });
    await record.getByText('completed', { exact: true }).waitFor();
    const history = page.getByRole('region', { name: 'History' });
    await history.getByRole('row', { name: /update 1\.0\.0 → 1\.1\.0 completed 100 %/ }).waitFor();
    // Back to its last known good version, once confirmed.
    await page.getByRole('button', { name: 'Roll back' }).click();
    await page.getByRole('status').getByText('Queued: to 1.0.0').waitFor();
    await history.getByRole('row', { name: /rollback 1\.1\.0 → 1\.0\.0 completed/ }).waitFor({ timeout: 20_000 });

    await page.goto(`${server.url}/#/devices/south-3`);
    await page.getByRole('heading', { name: 'south-3' }).waitFor();
    await page.getByLabel('Firmware version').selectOption(FAULT_VERSION);
    await page.getByRole('button', { name: `Update to ${FAULT_VERSION}` }).click();
    await page.getByRole('status').getByText(`Queued: to ${FAULT_VERSION}`).waitFor();
    // The slow link's download takes seconds: its progress shows while it moves, then the outcome.
    await record.getByText('updating', { exact: true }).waitFor({ timeout: 10_000 });
    await record.getByText('completed', { exact: true }).waitFor({ timeout: 20_000 });
    await page
      .getByRole('region', { name: 'Device' })
      .getByText(FAULT_VERSION, { exact: true })
      .waitFor({ timeout: 5_000 });
    await history
      .getByRole('row', { name: new RegExp(`1\\.0\\.0 → ${FAULT_VERSION.replace(/\./g, '\\.')} completed`) })
      .waitFor();
    await capture(page, 'device');

    await page.goto(`${server.url}/#/devices/east-8`);
    await page.getByRole('heading', { name: 'east-8' }).waitFor();
    await page.getByLabel('Firmware version').selectOption('1.2.0');
    await page.getByRole('button', { name: 'Update to 1.2.0' }).click();
    await page.getByRole('alert').getByText('device_offline').waitFor();
    assertOnlyRefusals(page, 409);
  });

  it('uploads firmware with its SHA256 computed in the browser, shows a refused upload, and refuses to delete a version in use', async () => {
    page = await openDashboard(browser, server.url);
    await signIn(page, key);
    await page.getByRole('navigation', { name: 'Sections' }).getByRole('link', { name: 'Firmware' }).click();
    const file = await makeFirmwareFile(3 * 1024 * 1024, 'gateway-2.0.0.bin');
    await page.getByLabel('Version', { exact: true }).fill('2.0.0');
    await page.getByLabel('Compatible models').fill('gw-a, gw-b');
    await page.getByLabel('Release notes').fill('Faster boot, fixed Wi-Fi reconnects.');
    await page.getByLabel('File (.bin)').setInputFiles(file.path);
    const hash = page.getByLabel('SHA256 (computed in this browser)');
    await eventually(async () => (await hash.textContent()) === file.sha256, 10_000, 'the hash shown');
    await page.getByRole('button', { name: 'Upload', exact: true }).click();
    await page.getByRole('status').getByText('Uploaded 2.0.0: 3.0 MiB').waitFor();
    // The bar counted the whole request: the file itself, the raw body of a PUT (notes on one line).
    const bar = page.getByRole('progressbar', { name: 'upload progress' });
    const [sent, total] = [
      Number(await bar.getAttribute('aria-valuenow')),
      Number(await bar.getAttribute('aria-valuemax')),
    ];
    assert.ok(sent === total && total === file.size, `${sent} of ${total} bytes`);
    const row = page.getByRole('row', { name: /^2\.0\.0 3\.0 MiB/ });
    await row.waitFor();
    assert.match((await row.textContent()) ?? '', /gw-a, gw-b.*Faster boot/);
    const listed = await api<{ firmware: { version: string; sha256: string; compatible_models: string[] }[] }>(
      'GET',
      '/api/v1/firmware',
    );
    const uploaded = listed.body.firmware.find((entry) => entry.version === '2.0.0');
    assert.deepEqual(uploaded && { sha256: uploaded.sha256, models: uploaded.compatible_models }, {
      sha256: file.sha256,
      models: ['gw-a', 'gw-b'],
    });
    await capture(page, 'firmware');

    // A version that exists with other content: refused before the file is read, and the page says why.
    await page.getByLabel('Version', { exact: true }).fill('1.1.0');
    await page.getByLabel('File (.bin)').setInputFiles(file.path);
    await eventually(async () => (await hash.textContent()) === file.sha256, 10_000, 'the hash shown');
    await page.getByRole('button', { name: 'Upload', exact: true }).click();
    await page.getByRole('alert').getByText('version_exists').waitFor();

    // Devices run 1.0.0: the server refuses, and says why.
    await page
      .getByRole('row', { name: /^1\.0\.0 / })
      .getByRole('button', { name: 'Delete' })
      .click();
    await page
      .getByRole('row', { name: /^1\.0\.0 / })
      .getByRole('alert')
      .getByText('firmware_in_use')
      .waitFor();
    // No device runs 2.0.0 or needs it to roll back: it goes.
    await page
      .getByRole('row', { name: /^2\.0\.0 / })
      .getByRole('button', { name: 'Delete' })
      .click();
    await page.getByRole('row', { name: /^2\.0\.0 / }).waitFor({ state: 'detached' });
    assert.equal((await api('GET', '/api/v1/firmware/2.0.0')).status, 404);
    assertOnlyRefusals(page, 409);
    await page.context().close();
  });

  it('shows a viewer no action buttons', async () => {
    const created = await api<{ key: string }>('POST', '/api/v1/api-keys', { role: 'viewer', name: 'wall screen' });
    assert.equal(created.status, 201);
    const viewer = await openDashboard(browser, server.url);
    await signIn(viewer, created.body.key);
    await viewer.goto(`${server.url}/#/firmware`);
    await viewer.getByRole('row', { name: /^1\.0\.0 / }).waitFor();
    assert.equal(await viewer.getByRole('heading', { name: 'Upload firmware' }).count(), 0);
    assert.equal(await viewer.locator('main').getByRole('button').count(), 0);

    await viewer.goto(`${server.url}/#/devices/north-2`);
    await viewer.getByRole('region', { name: 'OTA record' }).getByText('completed', { exact: true }).waitFor();
    await viewer.getByRole('region', { name: 'History' }).getByRole('row').nth(1).waitFor();
    assert.equal(await viewer.locator('main').getByRole('button').count(), 0);
    assert.equal(await viewer.getByLabel('Firmware version').count(), 0);
    assertNoPageErrors(viewer);
    await viewer.context().close();
  });

  it("shows a device's update lock on its page and in the list", async () => {
    // As the server holds it after the device's agent reported it (the agents here are simulated, without locks).
    await server.db.query(
      `UPDATE devices SET lock_reason = 'nightly backup', lock_since = now(), lock_until = NULL WHERE device_id = 'north-3'`,
    );
    const own = await openDashboard(browser, server.url);
    try {
      await signIn(own, key);
      await own.goto(`${server.url}/#/devices/north-3`);
      await own.getByText('locked: nightly backup (until released)').waitFor();
      await own.goto(`${server.url}/#/devices?q=north-3`);
      await own
        .getByRole('row', { name: /north-3/ })
        .getByText('locked', { exact: true })
        .waitFor();
      assertNoPageErrors(own);
    } finally {
      await own.context().close();
      await server.db.query(`UPDATE devices SET lock_reason = NULL, lock_since = NULL WHERE device_id = 'north-3'`);
    }
  });

  it('lists device ids in natural order (north-2 before north-10), and keeps relative times ticking', async () => {
    const own = await openDashboard(browser, server.url);
    await signIn(own, key);
    await own.goto(`${server.url}/#/devices?tag=site-north`);
    await own.getByText('12 devices match').waitFor();
    await eventually(async () => (await own.locator('main tbody tr').count()) === 12, 10_000, '12 rows');
    const ids = await own.locator('main tbody tr td:first-child').allTextContents();
    assert.deepEqual(
      ids,
      Array.from({ length: 12 }, (_, i) => `north-${i + 1}`),
    );

    // "created 3 s ago" must not stay 3 s: the time moves on without a reload.
    const file = await makeFirmwareFile(16 * 1024);
    const upload = await postFirmware(server.url, key, { version: '1.3.0', sha256: file.sha256 }, file);
    assert.equal(upload.status, 201);
    await own.getByRole('navigation', { name: 'Sections' }).getByRole('link', { name: 'Firmware' }).click();
    const created = own.getByRole('row', { name: /^1\.3\.0 / }).locator('time');
    const first = await created.textContent();
    assert.match(first ?? '', /^\d+ s ago$/);
    await eventually(async () => (await created.textContent()) !== first, 10_000, `"${first}" moving on`);
    assert.match((await created.textContent()) ?? '', /^\d+ s ago$/);
    assertNoPageErrors(own);
    await own.context().close();
  });

  it('fits a 390×844 screen: no sideways scroll of the page, the sections reachable, tables scroll inside', async () => {
    const phone = await openDashboard(browser, server.url, PHONE);
    await signIn(phone, key);
    await phone.getByRole('link', { name: 'Online: 22', exact: true }).waitFor();
    await phone.getByRole('region', { name: 'Recent failures' }).getByText('install_failed').waitFor();
    const pageWidth = () => phone.evaluate(() => document.documentElement.scrollWidth);
    assert.ok((await pageWidth()) <= PHONE.width, `overview is ${await pageWidth()} px wide`);
    await capture(phone, 'overview-phone');

    const nav = phone.getByRole('navigation', { name: 'Sections' });
    for (const section of ['Devices', 'Firmware', 'Deployments', 'Overview']) {
      assert.ok(await nav.getByRole('link', { name: section }).isVisible(), `${section} is reachable`);
    }
    await nav.getByRole('link', { name: 'Devices' }).click();
    await phone.getByText('30 devices').waitFor();
    assert.ok((await pageWidth()) <= PHONE.width, `devices is ${await pageWidth()} px wide`);
    const table = await phone.locator('.table-wrap').evaluate((wrap) => ({
      fits: wrap.getBoundingClientRect().right <= window.innerWidth,
    }));
    assert.deepEqual(table, { fits: true });
    // What a phone user looks for stays on screen without scrolling sideways: presence and OTA
    // status, also in a row with an error code.
    await phone.goto(`${server.url}/#/devices?q=south-1`);
    await phone.getByRole('row', { name: /south-1 .*install_failed/ }).waitFor();
    for (const column of ['Device', 'Version', 'Online', 'OTA']) {
      const box = await phone.getByRole('columnheader', { name: column, exact: true }).boundingBox();
      assert.ok(box && box.x >= 0 && box.x + box.width <= PHONE.width, `${column} on screen: ${JSON.stringify(box)}`);
    }
    const errorCode = await phone.locator('main tbody tr').first().locator('code.error-code').boundingBox();
    assert.ok(
      errorCode && errorCode.x + errorCode.width <= PHONE.width,
      `the error code on screen: ${JSON.stringify(errorCode)}`,
    );

    for (const view of ['#/devices/north-1', '#/firmware']) {
      await phone.goto(`${server.url}/${view}`);
      await phone.locator('main table').waitFor();
      assert.ok((await pageWidth()) <= PHONE.width, `${view} is ${await pageWidth()} px wide`);
    }
    assertNoPageErrors(phone);
    await phone.context().close();
  });
});

/** A screenshot once the bars have finished moving (their width eases over 0.3 s). */
async function capture(page: Page, name: string): Promise<void> {
  await page.waitForFunction(() => document.getAnimations().length === 0);
  await screenshot(page, name);
}

/** The only errors the page logged are the browser's own lines about requests the server refused with `status`. */
function assertOnlyRefusals(page: Page, status: number): void {
  const unexpected = pageErrorsOf(page).filter((line) => !line.includes(`status of ${status}`));
  assert.deepEqual(unexpected, [], 'the page logged other errors');
}
