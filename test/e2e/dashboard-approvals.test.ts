/**
 * Approvals in real headless Chromium: a deployment awaiting approval is listed with its state;
 * its page says who created it; the creator's person sees no Approve button (the server's
 * two-person rule, told in words), an admin of another person approves it with a comment there,
 * and the page then says who approved it, with the comment. PGlite and the local store only:
 * the API suite (test/integration/approvals.test.ts) covers both databases and the rollout.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'playwright-core';
import { assertNoPageErrors, chromiumMissing, openDashboard, signIn, startDashboardStand } from '../helpers/browser.ts';
import { makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
import type { TestServer } from '../helpers/server.ts';

const skip = chromiumMissing();

describe('dashboard approvals', { skip }, () => {
  let stand: Awaited<ReturnType<typeof startDashboardStand>> | undefined;
  let server: TestServer;
  let browser: Browser;
  const keys: Record<string, string> = {};
  let deploymentId: string;

  before(async () => {
    stand = await startDashboardStand();
    ({ server, browser } = stand);
    const org = await server.createOrg('dash-approvals');
    for (const version of ['1.0.0', '2.0.0']) {
      const firmware = await makeFirmwareFile(16 * 1024);
      const upload = await postFirmware(server.url, org.adminKey, { version, sha256: firmware.sha256 }, firmware);
      assert.equal(upload.status, 201, JSON.stringify(upload.body));
    }
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
  after(() => stand?.stop());

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
  });
});
