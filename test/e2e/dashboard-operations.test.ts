/**
 * The operations pages in real headless Chromium, on one server and one browser: each block
 * makes its own organization, so none sees another's rows.
 *
 * - Audit: an admin finds it in the navigation, reads who did what, narrows it by outcome and
 *   pages through it; a viewer has no such entry.
 * - Approvals: a deployment awaiting approval is listed with its state; its page says who created
 *   it; the creator's person sees no Approve button (the server's two-person rule, told in words),
 *   an admin of another person approves it with a comment there, and the page then says who
 *   approved it, with the comment.
 * - Webhooks: an endpoint added with its events, its secret shown once, pinged (delivered to a
 *   real HTTPS receiver, signature checked) and a delivery replayed.
 * - Maintenance windows and budgets: a deployment made through the form with windows and a
 *   download budget (the organization's defaults shown beside them); its page says how many
 *   devices wait for their window and for bandwidth, each a link to those devices with their
 *   'waiting' badge, reason and when they may start. A malformed window is refused in words
 *   before any request. The scheduler decides on the server's clock (Config.now), set here.
 * - Offline bundles: an operator saves a version's bundle from the Firmware page (a lifetime it
 *   cannot read refused before any request, one too long refused by the server, both in words);
 *   the file is a bundle signed with the organization's key holding the firmware's image, and the
 *   real agent installs it; the device page's history then shows the offline install. A viewer
 *   has no such action.
 *
 * PGlite and the local store only: the API suites (test/integration/audit.test.ts,
 * approvals.test.ts, webhooks.test.ts) cover both databases, test/e2e/offline-install.test.ts
 * the offline install on every backend, test/e2e/cli-webhooks.test.ts the webhook commands.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'playwright-core';
import type { Agent } from '../../src/agent/agent.ts';
import { verifyManifest } from '../../src/protocol/manifest.ts';
import { type OfflineManifest, validateOfflineManifest } from '../../src/protocol/offline-bundle.ts';
import { parseBundleHeader } from '../../src/protocol/offline-bundle-file.ts';
import { registerDevice, removeAgentDirs, signingKey, startAgent, type TestDevice } from '../helpers/agents.ts';
import {
  assertNoPageErrors,
  chromiumMissing,
  type DashboardStand,
  openDashboard,
  pageErrorsOf,
  signIn,
  startDashboardStand,
} from '../helpers/browser.ts';
import { type FirmwareFile, makeFirmwareFile, postFirmware, sha256Of } from '../helpers/firmware.ts';
import { eventually } from '../helpers/raw-device.ts';
import type { TestServer } from '../helpers/server.ts';
import { tempDir } from '../helpers/temp.ts';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook-receiver.ts';

const skip = chromiumMissing();

type Org = { id: string; adminKey: string };

describe('dashboard operations', { skip }, () => {
  let stand: DashboardStand | undefined;
  let receiver: WebhookReceiver | undefined;
  let server: TestServer;
  let browser: Browser;
  /** The clock of maintenance windows and budgets (Config.now): the real one unless a block sets it. */
  let clockMs: number | undefined;

  before(async () => {
    receiver = await startWebhookReceiver();
    stand = await startDashboardStand({
      env: {
        EDGEFLOW_WEBHOOKS_CA_FILE: receiver.caFile,
        EDGEFLOW_WEBHOOKS_ALLOW_PRIVATE: 'true',
        EDGEFLOW_WEBHOOKS_POLL_MS: '50',
      },
      now: () => clockMs ?? Date.now(),
    });
    ({ server, browser } = stand);
  });
  after(async () => {
    await stand?.stop(receiver && { stop: () => receiver!.close() });
    await removeAgentDirs();
  });

  async function upload(org: Org, version: string, size = 16 * 1024): Promise<FirmwareFile> {
    const firmware = await makeFirmwareFile(size);
    const uploaded = await postFirmware(server.url, org.adminKey, { version, sha256: firmware.sha256 }, firmware);
    assert.equal(uploaded.status, 201, JSON.stringify(uploaded.body));
    return firmware;
  }

  describe('audit page', () => {
    let org: Org;
    let viewerKey: string;

    before(async () => {
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

  describe('approvals', () => {
    const keys: Record<string, string> = {};
    let deploymentId: string;

    before(async () => {
      const org = await server.createOrg('dash-approvals');
      for (const version of ['1.0.0', '2.0.0']) await upload(org, version);
      const device = await server.api('POST', '/api/v1/devices', org.adminKey, {
        device_id: 'dash-approval-1',
        current_version: '1.0.0',
      });
      assert.equal(device.status, 201, JSON.stringify(device.body));
      for (const who of ['alice', 'bob']) {
        const created = await server.api<{ key: string }>('POST', '/api/v1/api-keys', org.adminKey, {
          role: 'admin',
          name: `${who}-key`,
          owner: who,
        });
        keys[who] = created.body.key;
      }
      assert.equal((await server.api('PUT', '/api/v1/settings/approvals', keys.bob, { required: true })).status, 200);
      const created = await server.api<{ id: string; status: string }>('POST', '/api/v1/deployments', keys.alice, {
        version: '2.0.0',
        target: { all: true },
        strategy: 'all_at_once',
      });
      assert.equal(created.body.status, 'awaiting_approval', JSON.stringify(created.body));
      deploymentId = created.body.id;
    });

    it("shows the creator no Approve button; another person approves it with a comment on the deployment's page", async () => {
      const creator = await openDashboard(browser, server.url);
      await signIn(creator, keys.alice!);
      await creator.getByRole('link', { name: 'Deployments', exact: true }).click();
      await creator.getByRole('row', { name: /^2\.0\.0 awaiting approval/ }).waitFor();
      await creator.evaluate((id) => {
        location.hash = `#/deployments/${id}`;
      }, deploymentId);
      await creator.getByRole('heading', { name: 'Awaiting approval (created by alice (key alice-key))' }).waitFor();
      await creator.getByText('You created it').waitFor();
      assert.equal(await creator.getByRole('button', { name: 'Approve' }).count(), 0);
      assert.equal(await creator.getByRole('button', { name: 'Cancel' }).count(), 1, 'the creator may cancel it');
      assertNoPageErrors(creator);
      await creator.context().close();

      const approver = await openDashboard(browser, server.url);
      await signIn(approver, keys.bob!);
      await approver.evaluate((id) => {
        location.hash = `#/deployments/${id}`;
      }, deploymentId);
      await approver.getByRole('heading', { name: /^Awaiting approval/ }).waitFor();
      await approver.getByLabel('Comment (required to reject)').fill('release notes checked');
      await approver.getByRole('button', { name: 'Approve' }).click();
      await approver.getByRole('heading', { name: /^Deployment of 2\.0\.0 running$/ }).waitFor();
      await approver.getByText(/Approved by bob \(key bob-key\)/).waitFor();
      await approver.getByText('release notes checked').waitFor();
      const stored = await server.api<{ status: string; approval: { comment: string } }>(
        'GET',
        `/api/v1/deployments/${deploymentId}`,
        keys.bob,
      );
      assert.equal(stored.body.status, 'running');
      assert.equal(stored.body.approval.comment, 'release notes checked');
      assertNoPageErrors(approver);
      await approver.context().close();
    });
  });

  describe('webhooks page', () => {
    it('adds an endpoint with its events, shows the secret once, pings and replays', async () => {
      const org = await server.createOrg('dash-hooks');
      const hooks = receiver!;
      const page = await openDashboard(browser, server.url);
      await signIn(page, org.adminKey);
      await page.getByRole('link', { name: 'Webhooks' }).click();
      await page.getByLabel('URL (https://)').fill(hooks.urlOf('page'));
      await page.getByLabel('deployment.state_changed').check();
      await page.getByRole('button', { name: 'Add endpoint' }).click();
      const secret = await page.locator('[data-secret]').textContent();
      assert.match(secret ?? '', /^whsec_/);
      hooks.secrets.set('page', secret!);
      await page.getByRole('link', { name: hooks.urlOf('page') }).click();
      await page.getByRole('button', { name: 'Send a ping' }).click();
      await eventually(async () => hooks.received.some((entry) => entry.path === 'page' && entry.signatureValid), 5000);
      await eventually(async () => {
        await page.getByRole('button', { name: 'Refresh' }).click();
        return (await page.locator('tr[data-delivery]').first().textContent())?.includes('delivered') ?? false;
      }, 5000);
      await page.getByRole('button', { name: 'Replay' }).first().click();
      await page.getByText('(replay of').first().waitFor();
      assertNoPageErrors(page);
      await page.context().close();
    });
  });

  describe('maintenance windows and budgets', () => {
    let org: Org;
    const NEW = '2.0.0';
    /** When their windows (mon-fri 02:00-05:00, no jitter) open, from Monday 2026-12-07 00:30 UTC. */
    const OPENS = {
      'tokyo-1': '2026-12-07T17:00:00.000Z',
      'utc-1': '2026-12-07T02:00:00.000Z',
    };

    before(async () => {
      // Monday 00:30 UTC: 02:30 in Helsinki (inside mon-fri 02:00-05:00), Monday 09:30 in Tokyo.
      clockMs = Date.parse('2026-12-07T00:30:00Z');
      org = await server.createOrg('dash-windows');
      await upload(org, NEW);
      const put = async (path: string, body: unknown) =>
        assert.equal((await server.api('PUT', path, org.adminKey, body)).status, 200, path);
      await put('/api/v1/settings/maintenance-windows', {
        maintenance_windows: [{ days: ['sat', 'sun'], start: '22:00', end: '02:00' }],
        timezone: 'UTC',
        window_jitter_minutes: 0,
      });
      await put('/api/v1/settings/budgets', { max_concurrent_downloads: 50 });
      // Registered, never connected: windows and budgets are the scheduler's, no agent needed.
      for (const [id, timezone] of [
        ['hel-1', 'Europe/Helsinki'],
        ['hel-2', 'Europe/Helsinki'],
        ['utc-1', undefined],
        ['tokyo-1', 'Asia/Tokyo'],
      ] as const) {
        await registerDevice(server, org.adminKey, { device_id: id, ...(timezone ? { timezone } : {}) });
      }
    });
    after(() => {
      clockMs = undefined;
    });

    /** The new-deployment form with its limits open. */
    async function openForm() {
      const page = await openDashboard(browser, `${server.url}/#/deployments/new`);
      await signIn(page, org.adminKey);
      await page.getByLabel('Version', { exact: true }).selectOption(NEW);
      await page.getByText('Limits and schedule').click();
      return page;
    }

    it('refuses a malformed window or rate in words, sending no request', async () => {
      const page = await openForm();
      const posted: string[] = [];
      page.on('request', (request) => {
        if (request.method() === 'POST') posted.push(request.url());
      });
      const windows = page.getByLabel('Maintenance windows');
      const refusal = page.getByRole('alert');
      for (const [field, text, words] of [
        [
          windows,
          'mon-xx 02:00',
          'Windows: a window is "DAYS HH:MM-HH:MM" (e.g. "mon-fri 02:00-05:00"), got "mon-xx 02:00"',
        ],
        [windows, 'mon-xx 02:00-05:00', 'Windows: unknown day in window "mon-xx 02:00-05:00": use mon … sun or daily'],
        [
          page.getByLabel('Max bandwidth'),
          'fast',
          'The bandwidth must be a rate of at least 1KiB/s such as 10MB/s or 512KiB/s (got "fast")',
        ],
      ] as const) {
        await field.fill(text);
        await page.getByRole('button', { name: 'Preview' }).click();
        await refusal.getByText(words, { exact: true }).waitFor();
        assert.equal(await refusal.locator('code').textContent(), 'invalid_form');
        await field.fill('');
      }
      assert.deepEqual(posted, [], 'nothing was sent');
      assert.equal(await page.getByRole('heading', { name: /^Plan:/ }).count(), 0);
      assertNoPageErrors(page);
      await page.context().close();
    });

    it('creates a deployment with windows and a budget; its page shows who waits for what, and until when', async () => {
      const page = await openForm();
      await page
        .getByText(
          'Organization default (windows left empty): maintenance windows: sat,sun 22:00-02:00; time zone of ' +
            'devices without one: UTC; start jitter: up to 0 min (at most half a window). For all its deployments ' +
            'together: downloading at once: 50; bandwidth: no cap.',
        )
        .waitFor();
      await page.getByLabel('All at once', { exact: true }).check();
      await page.getByLabel('Maintenance windows').fill('mon-fri 02:00-05:00');
      await page.getByLabel('Max downloads at once').fill('1');
      await page.getByLabel('Max bandwidth').fill('10MB/s');
      await page.getByRole('button', { name: 'Preview' }).click();
      const plan = page.getByRole('region', { name: `Plan: ${NEW} to 4 devices` });
      await plan.getByText(/windows mon-fri 02:00-05:00 \(device time\), ≤1 downloading, ≤10 MB\/s/).waitFor();
      await plan.getByRole('columnheader', { name: 'Expected (in their windows)' }).waitFor();
      // The first device now (Helsinki), the last at Tokyo's opening: in the browser's time.
      const [first, last] = await page.evaluate(
        (times) => times.map((at) => new Date(at).toLocaleString()),
        ['2026-12-07T00:30:00.000Z', OPENS['tokyo-1']],
      );
      await plan.getByRole('cell', { name: `from ${first}, the last device from ${last}` }).waitFor();
      await page.getByRole('button', { name: 'Start deployment' }).click();
      await page
        .getByRole('heading', { name: new RegExp(`^Deployment of ${NEW.replaceAll('.', '\\.')} running$`) })
        .waitFor();
      const id = /#\/deployments\/([\w-]+)/.exec(page.url())?.[1];
      assert.ok(id, page.url());

      // Helsinki's window is open: one device goes (the budget: one download at once), the other
      // waits for bandwidth; UTC's and Tokyo's open later that day.
      const waiting = page.locator('dt', { hasText: /^Waiting$/ }).locator('xpath=following-sibling::dd[1]');
      await waiting.getByRole('link', { name: '2 for their window' }).waitFor();
      await waiting.getByRole('link', { name: '1 for bandwidth' }).waitFor();
      const table = page.getByRole('region', { name: 'Devices of this deployment' });
      /** Device, batch, state (its badge), reason and where it stands, as the table shows them. */
      const rows = async () =>
        (await table
          .locator('tbody tr')
          .evaluateAll((trs) =>
            trs.map((tr) => [...tr.querySelectorAll('td')].slice(0, 5).map((td) => td.textContent?.trim())),
          )) as string[][];
      // The opening in the reader's time (the browser's zone and locale), the instant on hover.
      const local = (iso: string) => page.evaluate((at) => new Date(at).toLocaleString(), iso);
      const windowRows = await Promise.all(
        Object.entries(OPENS).map(async ([device, opens]) => [
          device,
          '#0',
          'waiting',
          'window',
          `waiting for its window (opens ${await local(opens)})`,
        ]),
      );
      const helsinki = (first: string, second: string) => [
        [first, '#0', 'queued', '—', 'queued: waiting for the device to take the update'],
        [second, '#0', 'waiting', 'bandwidth', 'waiting for bandwidth'],
      ];
      let shown: string[][] = [];
      await eventually(
        async () => {
          shown = await rows();
          const sent = shown.find((row) => row[2] === 'queued')?.[0];
          const expected = sent === 'hel-2' ? helsinki('hel-2', 'hel-1') : helsinki('hel-1', 'hel-2');
          return JSON.stringify(shown) === JSON.stringify([...expected, ...windowRows].sort());
        },
        5000,
        'one Helsinki device sent, the other waiting for bandwidth, the others for their window',
      ).catch((error: Error) => assert.fail(`${error.message}: ${JSON.stringify(shown)}`));

      await waiting.getByRole('link', { name: '2 for their window' }).click();
      await page.waitForURL(new RegExp(`#/deployments/${id}\\?reason=window$`));
      await eventually(
        async () => JSON.stringify(await rows()) === JSON.stringify(windowRows),
        5000,
        'only the two waiting for their window',
      ).catch(async (error: Error) => assert.fail(`${error.message}: ${JSON.stringify(await rows())}`));
      assert.equal(
        await page
          .getByLabel('Reason')
          .evaluate((select) => (select as HTMLSelectElement).selectedOptions[0]?.textContent),
        'waiting: for their window (2)',
      );
      for (const opens of Object.values(OPENS)) {
        assert.equal(await table.locator(`tbody time[datetime="${opens}"][title="${opens}"]`).count(), 1, opens);
      }
      // What the page shows is what the server decided.
      const listed = await server.api<{ devices: { device_id: string; reason: string; detail: string }[] }>(
        'GET',
        `/api/v1/deployments/${id}/devices?reason=window`,
        org.adminKey,
      );
      assert.deepEqual(
        listed.body.devices.map((device) => [device.device_id, device.reason, device.detail]),
        Object.entries(OPENS).map(([device, opens]) => [device, 'window', opens]),
      );
      assertNoPageErrors(page);
      await page.context().close();
    });
  });

  describe('offline bundles', () => {
    let org: Org;
    let device: TestDevice;
    let agent: Agent | undefined;
    let operatorKey: string;
    let viewerKey: string;
    let firmware: FirmwareFile;

    before(async () => {
      org = await server.createOrg('dash-offline');
      firmware = await upload(org, '1.1.0', 48 * 1024);
      const key = async (role: string) =>
        (await server.api<{ key: string }>('POST', '/api/v1/api-keys', org.adminKey, { role })).body.key;
      [operatorKey, viewerKey] = await Promise.all([key('operator'), key('viewer')]);
      device = await registerDevice(server, org.adminKey, { model: 'gateway-a' });
      agent = await startAgent(server, org, device, { model: 'gateway-a' });
    });
    after(() => agent?.stop());

    /** The Firmware page with version 1.1.0's Offline bundle opened. */
    async function openBundleForm(key: string) {
      const page = await openDashboard(browser, `${server.url}/#/firmware`);
      await signIn(page, key);
      await page
        .getByRole('row', { name: /^1\.1\.0\b/ })
        .getByText('Offline bundle')
        .click();
      return { page, form: page.getByRole('form', { name: 'Offline bundle of 1.1.0' }) };
    }

    it("refuses a lifetime it cannot read before any request, and shows the server's refusal of one too long", async () => {
      const { page, form } = await openBundleForm(operatorKey);
      const posted: string[] = [];
      page.on('request', (request) => {
        if (request.method() === 'POST') posted.push(new URL(request.url()).pathname);
      });
      const refusal = page.getByRole('alert');
      await form.getByLabel('Valid for').fill('30 days');
      await form.getByRole('button', { name: 'Save bundle' }).click();
      await refusal.getByText('Valid for takes 90m, 12h, 30d or 2w, not "30 days"', { exact: true }).waitFor();
      assert.equal(await refusal.locator('code').textContent(), 'invalid_form');
      assert.deepEqual(posted, [], 'nothing was sent');

      await form.getByLabel('Valid for').fill('400d');
      await form.getByRole('button', { name: 'Save bundle' }).click();
      await refusal.getByText('an offline bundle may be valid for at most 366 days', { exact: true }).waitFor();
      assert.equal(await refusal.locator('code').textContent(), 'invalid_expiry');
      assert.deepEqual(posted, ['/api/v1/firmware/1.1.0/offline-bundle']);
      // The refused request: a 400 the page logged, and nothing else.
      assert.deepEqual(
        pageErrorsOf(page).filter((error) => !/status of 400/.test(error)),
        [],
      );
      await page.context().close();
    });

    it('saves a signed bundle that the real agent installs; the device page then shows the offline install', async () => {
      const { page, form } = await openBundleForm(operatorKey);
      await form.getByLabel('Valid for').fill('2d');
      const asked = Date.now();
      const [download] = await Promise.all([
        page.waitForEvent('download'),
        form.getByRole('button', { name: 'Save bundle' }).click(),
      ]);
      assert.equal(download.suggestedFilename(), 'edgeflow-1.1.0.bundle');
      const file = path.join(await tempDir('edgeflow-bundles-'), download.suggestedFilename());
      await download.saveAs(file);

      // The file read as the agent reads it: the header, the manifest signed with the
      // organization's key, the image the firmware's, valid for the two days asked.
      const bytes = await readFile(file);
      const parsed = parseBundleHeader(bytes);
      assert.ok(parsed.ok, JSON.stringify(parsed));
      const manifest = parsed.header.manifest as OfflineManifest;
      assert.ok(validateOfflineManifest.Check(manifest), JSON.stringify(manifest));
      assert.ok(verifyManifest(manifest, parsed.header.signature, await signingKey(server, org.adminKey)), 'signed');
      const image = bytes.subarray(parsed.imageOffset);
      assert.deepEqual(
        [manifest.organization_id, manifest.version, manifest.size, manifest.sha256, image.length, sha256Of(image)],
        [org.id, '1.1.0', firmware.size, firmware.sha256, firmware.size, firmware.sha256],
      );
      const lifetime = Date.parse(manifest.expires_at) - asked;
      assert.ok(lifetime >= 2 * 86_400_000 - 1000 && lifetime <= 2 * 86_400_000 + 60_000, manifest.expires_at);
      await page
        .getByRole('status')
        .getByText(`Saved edgeflow-1.1.0.bundle: bundle ${manifest.bundle_id}, valid until`)
        .waitFor();
      assertNoPageErrors(page);
      await page.context().close();

      // The real agent checks it (the pinned key, the organization, model, expiry, sha256) and installs it.
      const installed = await agent!.installOffline(file);
      assert.deepEqual([installed.status, installed.bundle_id], ['installing', manifest.bundle_id]);
      const bundleId = installed.bundle_id;
      await eventually(async () => agent!.currentVersion === '1.1.0' && agent!.otaState === null, 10_000, 'committed');
      await eventually(
        async () =>
          (
            await server.api<{ offline_bundle_id: string | null }>(
              'GET',
              `/api/v1/devices/${device.deviceId}/ota`,
              org.adminKey,
            )
          ).body.offline_bundle_id === bundleId,
        10_000,
        'offline install recorded',
      );

      const devicePage = await openDashboard(browser, `${server.url}/#/devices/${device.deviceId}`);
      await signIn(devicePage, org.adminKey);
      const history = devicePage.getByRole('region', { name: 'History' });
      await history
        .getByRole('row', { name: new RegExp(`installed offline bundle ${bundleId} 1\\.0\\.0 → 1\\.1\\.0`) })
        .waitFor();
      await devicePage.getByText(`installed offline to 1.1.0 (bundle ${bundleId})`).waitFor();
      assertNoPageErrors(devicePage);
      await devicePage.context().close();
    });

    it('gives a viewer no Offline bundle action', async () => {
      const page = await openDashboard(browser, `${server.url}/#/firmware`);
      await signIn(page, viewerKey);
      await page.getByRole('row', { name: /^1\.1\.0\b/ }).waitFor();
      assert.equal(await page.getByText('Offline bundle').count(), 0);
      assert.equal(await page.getByRole('button', { name: 'Save bundle' }).count(), 0);
      assertNoPageErrors(page);
      await page.context().close();
    });
  });
});
