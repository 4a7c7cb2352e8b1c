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
 * - Offline installs: a bundle the real agent installed from a file shows in the device page's
 *   history.
 *
 * PGlite and the local store only: the API suites (test/integration/audit.test.ts,
 * approvals.test.ts, webhooks.test.ts) cover both databases, test/e2e/offline-install.test.ts
 * the offline install on every backend, test/e2e/cli-webhooks.test.ts the webhook commands.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'playwright-core';
import type { Agent } from '../../src/agent/agent.ts';
import type { OfflineManifest } from '../../src/protocol/offline-bundle.ts';
import { encodeBundleHeader } from '../../src/protocol/offline-bundle-file.ts';
import { registerDevice, removeAgentDirs, startAgent, type TestDevice } from '../helpers/agents.ts';
import {
  assertNoPageErrors,
  chromiumMissing,
  type DashboardStand,
  openDashboard,
  signIn,
  startDashboardStand,
} from '../helpers/browser.ts';
import { makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
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

  before(async () => {
    receiver = await startWebhookReceiver();
    stand = await startDashboardStand({
      env: {
        EDGEFLOW_WEBHOOKS_CA_FILE: receiver.caFile,
        EDGEFLOW_WEBHOOKS_ALLOW_PRIVATE: 'true',
        EDGEFLOW_WEBHOOKS_POLL_MS: '50',
      },
    });
    ({ server, browser } = stand);
  });
  after(async () => {
    await stand?.stop(receiver && { stop: () => receiver!.close() });
    await removeAgentDirs();
  });

  async function upload(org: Org, version: string, size = 16 * 1024): Promise<void> {
    const firmware = await makeFirmwareFile(size);
    const uploaded = await postFirmware(server.url, org.adminKey, { version, sha256: firmware.sha256 }, firmware);
    assert.equal(uploaded.status, 201, JSON.stringify(uploaded.body));
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

  describe('offline installs', () => {
    let org: Org;
    let device: TestDevice;
    let agent: Agent | undefined;

    before(async () => {
      org = await server.createOrg('dash-offline');
      await upload(org, '1.1.0', 48 * 1024);
      device = await registerDevice(server, org.adminKey, { model: 'gateway-a' });
      agent = await startAgent(server, org, device, { model: 'gateway-a' });
    });
    after(() => agent?.stop());

    /** A bundle as `edgeflow-ota firmware export` writes it: the signed manifest, then the image. */
    async function exportBundle(version: string): Promise<string> {
      const signed = await server.api<{ manifest: OfflineManifest; signature: string }>(
        'POST',
        `/api/v1/firmware/${version}/offline-bundle`,
        org.adminKey,
        {},
      );
      assert.equal(signed.status, 200, JSON.stringify(signed.body));
      const link = await server.api<{ url: string }>('POST', `/api/v1/firmware/${version}/download-url`, org.adminKey);
      const image = Buffer.from(await (await fetch(link.body.url)).arrayBuffer());
      const file = path.join(await tempDir('edgeflow-bundles-'), `edgeflow-${version}.bundle`);
      await writeFile(file, Buffer.concat([encodeBundleHeader(signed.body.manifest, signed.body.signature), image]));
      return file;
    }

    it('the device page shows an offline install in its history', async () => {
      const installed = await agent!.installOffline(await exportBundle('1.1.0'));
      assert.equal(installed.status, 'installing');
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

      const page = await openDashboard(browser, `${server.url}/#/devices/${device.deviceId}`);
      await signIn(page, org.adminKey);
      const history = page.getByRole('region', { name: 'History' });
      await history
        .getByRole('row', { name: new RegExp(`installed offline bundle ${bundleId} 1\\.0\\.0 → 1\\.1\\.0`) })
        .waitFor();
      await page.getByText(`installed offline to 1.1.0 (bundle ${bundleId})`).waitFor();
      assertNoPageErrors(page);
      await page.context().close();
    });
  });
});
