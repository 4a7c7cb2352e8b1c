/**
 * The dashboard in real headless Chromium: the page and its assets are served by the server
 * itself, a wrong key is refused on the sign-in form, the keyboard alone signs in and moves
 * between sections, a lost event stream comes back by itself, and the page logs no error on
 * its way. PGlite and the local store only: the API suites cover both databases and stores.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'playwright-core';
import {
  assertNoPageErrors,
  chromiumMissing,
  launchChromium,
  openDashboard,
  pageErrorsOf,
  signIn,
} from '../helpers/browser.ts';
import { startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const skip = chromiumMissing();

describe('dashboard sign-in', { skip }, () => {
  let server: TestServer;
  let browser: Browser;

  before(async () => {
    [server, browser] = await Promise.all([
      startTestServer({ db: 'pglite', store: 'local', name: 'pglite+local' }),
      launchChromium(),
    ]);
  });
  after(async () => {
    await browser?.close();
    await server?.close();
    await stopSharedServices();
  });

  it('serves the page with a strict content security policy and no inline script', async () => {
    const response = await fetch(`${server.url}/`);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-security-policy') ?? '', /script-src 'self'/);
    const html = await response.text();
    assert.doesNotMatch(html, /<script>/);
    const script = await fetch(`${server.url}/assets/app.js`);
    assert.equal(script.status, 200);
    assert.match(script.headers.get('content-type') ?? '', /javascript/);
    const cached = await fetch(`${server.url}/assets/app.js`, {
      headers: { 'if-none-match': script.headers.get('etag') ?? '' },
    });
    assert.equal(cached.status, 304);
  });

  it('refuses a wrong key on the form with one clear line', async () => {
    const page = await openDashboard(browser, server.url);
    await page.getByLabel('API key').fill('efo_not_a_real_key');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').getByText('That key is not valid: unknown or revoked.').waitFor();
    // The only error is the browser's own line about the refused request.
    assert.ok(
      pageErrorsOf(page).every((line) => /status of 401/.test(line)),
      pageErrorsOf(page).join('\n'),
    );
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    await page.context().close();
  });

  it('signs in and moves between sections with the keyboard alone', async () => {
    const org = await server.createOrg('keyboard');
    const page = await openDashboard(browser, server.url);
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'api-key', 'the key field takes focus first');
    await page.keyboard.type(org.adminKey);
    await page.keyboard.press('Enter');
    await page.getByRole('button', { name: 'Sign out' }).waitFor();
    // Tab through the header to the Devices link and open it with Enter.
    for (let step = 0; step < 10; step++) {
      await page.keyboard.press('Tab');
      if ((await page.evaluate(() => document.activeElement?.textContent)) === 'Devices') break;
    }
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Devices', level: 1 }).waitFor();
    assert.match(page.url(), /#\/devices$/);
    assertNoPageErrors(page);
    await page.context().close();
  });

  it('reconnects a lost event stream by itself and keeps updating without a reload', async () => {
    const org = await server.createOrg('reconnect');
    for (const id of ['rc-1', 'rc-2']) {
      const created = await server.api('POST', '/api/v1/devices', org.adminKey, {
        device_id: id,
        current_version: '1.0.0',
      });
      assert.equal(created.status, 201);
    }
    const page = await openDashboard(browser, server.url);
    await signIn(page, org.adminKey);
    await page.getByRole('link', { name: 'Devices: 2' }).waitFor();
    await page.getByText('Live', { exact: true }).waitFor();
    // Every HTTP connection dropped, the event stream's too (as a proxy or a restart would).
    server.app.server.closeAllConnections();
    // This process's own pooled connection went too: let the client see it closed first.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const deleted = await server.api('DELETE', '/api/v1/devices/rc-1', org.adminKey);
    assert.equal(deleted.status, 204);
    // Only the stream can tell the page: it reconnects, reads again, and shows one device.
    await page.getByRole('link', { name: 'Devices: 1' }).waitFor({ timeout: 20_000 });
    await page.getByText('Live', { exact: true }).waitFor();
    const live = await server.api('POST', '/api/v1/devices', org.adminKey, {
      device_id: 'rc-3',
      current_version: '1.0.0',
    });
    assert.equal(live.status, 201);
    await server.api('DELETE', '/api/v1/devices/rc-2', org.adminKey);
    await page.getByRole('link', { name: 'Devices: 1' }).waitFor();
    assert.ok(
      pageErrorsOf(page).every((line) => /ERR_|network|Failed to fetch/i.test(line)),
      pageErrorsOf(page).join('\n'),
    );
    await page.context().close();
  });

  it('shows the sign-in form without errors', async () => {
    const page = await openDashboard(browser, server.url);
    await page.getByLabel('API key').waitFor();
    assertNoPageErrors(page);
    await page.context().close();
  });
});
