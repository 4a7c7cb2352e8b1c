/**
 * The dashboard in real headless Chromium: the page and its assets are served by the server
 * itself, a wrong key is refused on the sign-in form, and the page logs no error on its way.
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

  it('shows the sign-in form without errors', async () => {
    const page = await openDashboard(browser, server.url);
    await page.getByLabel('API key').waitFor();
    assertNoPageErrors(page);
    await page.context().close();
  });
});
