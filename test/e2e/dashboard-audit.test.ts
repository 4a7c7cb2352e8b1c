/**
 * The Audit page in real headless Chromium: an admin finds it in the navigation, reads who did
 * what, narrows it by outcome and pages through it; a viewer has no such entry. PGlite and the
 * local store only: test/integration/audit.test.ts covers both databases.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'playwright-core';
import { assertNoPageErrors, chromiumMissing, launchChromium, openDashboard, signIn } from '../helpers/browser.ts';
import { startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const skip = chromiumMissing();

describe('dashboard audit page', { skip }, () => {
  let server: TestServer;
  let browser: Browser;
  let org: { id: string; adminKey: string };
  let viewerKey: string;

  before(async () => {
    [server, browser] = await Promise.all([
      startTestServer({ db: 'pglite', store: 'local', name: 'pglite+local' }),
      launchChromium(),
    ]);
    org = await server.createOrg('audited');
    viewerKey = (
      await server.api<{ key: string }>('POST', '/api/v1/api-keys', org.adminKey, { role: 'viewer', name: 'wall' })
    ).body.key;
    // 27 entries with the organization's and the key's creation: more than a page of 25.
    await Promise.all(
      Array.from({ length: 24 }, (_, i) =>
        server.api('POST', '/api/v1/devices', org.adminKey, { device_id: `gw-${i}`, current_version: '1.0.0' }),
      ),
    );
    await server.api('DELETE', '/api/v1/devices/gw-0', viewerKey);
  });
  after(async () => {
    await browser?.close();
    await server?.close();
    await stopSharedServices();
  });

  it('shows an admin who did what, filtered by outcome, a page at a time', async () => {
    const page = await openDashboard(browser, server.url);
    await signIn(page, org.adminKey);
    await page.getByRole('navigation', { name: 'Sections' }).getByRole('link', { name: 'Audit' }).click();
    await page.getByRole('heading', { name: 'Audit log' }).waitFor();
    const rows = page.locator('tbody tr');
    await rows.first().getByText('device.delete').waitFor();
    assert.equal(await rows.count(), 25);
    assert.match((await rows.first().textContent()) ?? '', /device gw-0.*denied.*403.*wall/);

    await page.getByRole('button', { name: 'Next' }).click();
    await page.getByText('Page 2').waitFor();
    await page.waitForFunction(() => document.querySelectorAll('tbody tr').length === 2);

    await page.getByLabel('Outcome').selectOption('denied');
    await page.waitForFunction(() => document.querySelectorAll('tbody tr').length === 1);
    assert.match(page.url(), /#\/audit\?outcome=denied/);
    assertNoPageErrors(page);
    await page.context().close();
  });

  it('gives a viewer no Audit entry', async () => {
    const page = await openDashboard(browser, server.url);
    await signIn(page, viewerKey);
    const nav = page.getByRole('navigation', { name: 'Sections' });
    await nav.getByRole('link', { name: 'Devices' }).waitFor();
    assert.equal(await nav.getByRole('link', { name: 'Audit' }).count(), 0);
    assertNoPageErrors(page);
    await page.context().close();
  });
});
