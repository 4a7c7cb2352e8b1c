/**
 * How to call every state-changing /api/v1 route validly, for the audit test generated from the
 * route table (audit.test.ts): a route with no entry here fails that test. Adding a route? Add
 * its entry: the key is `METHOD pattern` as Fastify registered it; the fixture makes the call
 * (with whatever setup it needs) and says which entry the audit log must then hold.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import type { Agent } from '../../src/agent/agent.ts';
import { registerDevice, settledOta, startAgent } from '../helpers/agents.ts';
import { makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
import type { TestServer } from '../helpers/server.ts';

export interface AuditFixtureContext {
  server: TestServer;
  org: { id: string; adminKey: string };
  /** A JSON call with the organization's admin key (or `key`); asserts a 2xx. */
  call<T = Record<string, unknown>>(method: string, path: string, body?: unknown, key?: string): Promise<T>;
  /** A fresh device of the organization, offline. */
  device(): Promise<string>;
  /** A fresh firmware version (semver), uploaded. */
  firmware(): Promise<string>;
  /** A running rolling deployment of two fresh offline devices, one per batch. */
  deployment(): Promise<string>;
  /** A device with its real agent connected (stopped with the test server). */
  onlineDevice(): Promise<{ deviceId: string; agent: Agent }>;
  /** A version every fixture may deploy (uploaded once). */
  readonly version: string;
}

/** The entry the audit log must hold after the call: by the organization's admin unless `by: 'system'`. */
export interface ExpectedEntry {
  action: string;
  target: [type: string, id: string];
  by?: 'admin' | 'system';
  /** The acting key when another admin key of the organization made the call (an approver). */
  byKey?: string;
}

export type RouteFixture = (ctx: AuditFixtureContext) => Promise<ExpectedEntry>;

const control =
  (name: string): RouteFixture =>
  async (ctx) => {
    const id = await ctx.deployment();
    if (name === 'resume') await ctx.call('POST', `/api/v1/deployments/${id}/pause`);
    await ctx.call('POST', `/api/v1/deployments/${id}/${name}`);
    return { action: `deployment.${name}`, target: ['deployment', id] };
  };

export const AUDIT_ROUTE_FIXTURES: Record<string, RouteFixture> = {
  'POST /api/v1/orgs': async (ctx) => {
    const org = await ctx.call<{ id: string }>('POST', '/api/v1/orgs', { name: 'audited' }, ctx.server.adminKey);
    return { action: 'organization.create', target: ['organization', org.id], by: 'system' };
  },
  'POST /api/v1/api-keys': async (ctx) => {
    const key = await ctx.call<{ id: string }>('POST', '/api/v1/api-keys', { role: 'viewer', name: 'ci' });
    return { action: 'key.create', target: ['key', key.id] };
  },
  'DELETE /api/v1/api-keys/:id': async (ctx) => {
    const key = await ctx.call<{ id: string }>('POST', '/api/v1/api-keys', { role: 'viewer' });
    await ctx.call('DELETE', `/api/v1/api-keys/${key.id}`);
    return { action: 'key.revoke', target: ['key', key.id] };
  },
  'POST /api/v1/devices': async (ctx) => {
    const id = await ctx.device();
    return { action: 'device.create', target: ['device', id] };
  },
  'PATCH /api/v1/devices/:id': async (ctx) => {
    const id = await ctx.device();
    await ctx.call('PATCH', `/api/v1/devices/${id}`, { name: 'renamed' });
    return { action: 'device.update', target: ['device', id] };
  },
  'DELETE /api/v1/devices/:id': async (ctx) => {
    const id = await ctx.device();
    await ctx.call('DELETE', `/api/v1/devices/${id}`);
    return { action: 'device.delete', target: ['device', id] };
  },
  'POST /api/v1/firmware': async (ctx) => {
    const version = await ctx.firmware();
    return { action: 'firmware.create', target: ['firmware', version] };
  },
  'PUT /api/v1/firmware/:version': async (ctx) => {
    const version = `3.1.${Date.now() % 100_000}`;
    const file = await makeFirmwareFile(1024);
    const response = await fetch(
      `${ctx.server.url}/api/v1/firmware/${version}?sha256=${file.sha256}&filename=fw-${version}.bin`,
      {
        method: 'PUT',
        headers: { authorization: `Bearer ${ctx.org.adminKey}`, 'content-type': 'application/octet-stream' },
        body: await readFile(file.path),
      },
    );
    assert.equal(response.status, 201, await response.text());
    return { action: 'firmware.create', target: ['firmware', version] };
  },
  'DELETE /api/v1/firmware/:version': async (ctx) => {
    const version = await ctx.firmware();
    await ctx.call('DELETE', `/api/v1/firmware/${version}`);
    return { action: 'firmware.delete', target: ['firmware', version] };
  },
  'POST /api/v1/firmware/:version/download-url': async (ctx) => {
    await ctx.call('POST', `/api/v1/firmware/${ctx.version}/download-url`, {});
    return { action: 'firmware.download_url', target: ['firmware', ctx.version] };
  },
  'POST /api/v1/devices/:id/ota/update': async (ctx) => {
    const { deviceId } = await ctx.onlineDevice();
    await ctx.call('POST', `/api/v1/devices/${deviceId}/ota/update`, { version: ctx.version });
    return { action: 'device.ota.update', target: ['device', deviceId] };
  },
  'POST /api/v1/devices/:id/ota/rollback': async (ctx) => {
    const { deviceId } = await ctx.onlineDevice();
    await ctx.call('POST', `/api/v1/devices/${deviceId}/ota/update`, { version: ctx.version });
    const record = await settledOta(ctx.server, ctx.org.adminKey, deviceId);
    assert.equal(record.ota_status, 'completed', JSON.stringify(record));
    await ctx.call('POST', `/api/v1/devices/${deviceId}/ota/rollback`, {});
    return { action: 'device.ota.rollback', target: ['device', deviceId] };
  },
  'POST /api/v1/deployments': async (ctx) => {
    const id = await ctx.deployment();
    return { action: 'deployment.create', target: ['deployment', id] };
  },
  'POST /api/v1/deployments/:id/pause': control('pause'),
  'POST /api/v1/deployments/:id/resume': control('resume'),
  'POST /api/v1/deployments/:id/cancel': control('cancel'),
  'POST /api/v1/deployments/:id/promote': control('promote'),
  'POST /api/v1/deployments/:id/rollback': control('rollback'),
  'POST /api/v1/deployments/:id/approve': async (ctx) => {
    const { id, approver } = await awaitingApproval(ctx);
    await ctx.call('POST', `/api/v1/deployments/${id}/approve`, { comment: 'looks right' }, approver.key);
    return { action: 'deployment.approve', target: ['deployment', id], byKey: approver.id };
  },
  'POST /api/v1/deployments/:id/reject': async (ctx) => {
    const { id, approver } = await awaitingApproval(ctx);
    await ctx.call('POST', `/api/v1/deployments/${id}/reject`, { comment: 'not this week' }, approver.key);
    return { action: 'deployment.reject', target: ['deployment', id], byKey: approver.id };
  },
  'PUT /api/v1/settings/approvals': async (ctx) => {
    // Only deployments taking a device tagged so need approval: the other fixtures' deployments run.
    await ctx.call('PUT', '/api/v1/settings/approvals', { required: true, tags: [APPROVAL_TAG] });
    return { action: 'settings.approvals.update', target: ['settings', 'approvals'] };
  },
  'PUT /api/v1/settings/maintenance-windows': async (ctx) => {
    await ctx.call('PUT', '/api/v1/settings/maintenance-windows', { window_jitter_minutes: 5 });
    return { action: 'settings.maintenance_windows.update', target: ['settings', 'maintenance-windows'] };
  },
  'PUT /api/v1/settings/budgets': async (ctx) => {
    await ctx.call('PUT', '/api/v1/settings/budgets', { max_concurrent_downloads: null });
    return { action: 'settings.budgets.update', target: ['settings', 'budgets'] };
  },
  'POST /api/v1/firmware/:version/offline-bundle': async (ctx) => {
    await ctx.call('POST', `/api/v1/firmware/${ctx.version}/offline-bundle`, {});
    return { action: 'firmware.offline_bundle', target: ['firmware', ctx.version] };
  },
  'POST /api/v1/webhooks': async (ctx) => {
    const id = await webhook(ctx);
    return { action: 'webhook.create', target: ['webhook', id] };
  },
  'PATCH /api/v1/webhooks/:id': async (ctx) => {
    const id = await webhook(ctx);
    await ctx.call('PATCH', `/api/v1/webhooks/${id}`, { enabled: false });
    return { action: 'webhook.update', target: ['webhook', id] };
  },
  'DELETE /api/v1/webhooks/:id': async (ctx) => {
    const id = await webhook(ctx);
    await ctx.call('DELETE', `/api/v1/webhooks/${id}`);
    return { action: 'webhook.delete', target: ['webhook', id] };
  },
  'POST /api/v1/webhooks/:id/rotate-secret': async (ctx) => {
    const id = await webhook(ctx);
    await ctx.call('POST', `/api/v1/webhooks/${id}/rotate-secret`, {});
    return { action: 'webhook.rotate_secret', target: ['webhook', id] };
  },
  'POST /api/v1/webhooks/:id/ping': async (ctx) => {
    const id = await webhook(ctx);
    await ctx.call('POST', `/api/v1/webhooks/${id}/ping`, {});
    return { action: 'webhook.ping', target: ['webhook', id] };
  },
  'POST /api/v1/webhooks/:id/deliveries/:delivery_id/replay': async (ctx) => {
    const id = await webhook(ctx);
    await ctx.call('POST', `/api/v1/webhooks/${id}/ping`, {});
    const { deliveries } = await ctx.call<{ deliveries: { id: string }[] }>('GET', `/api/v1/webhooks/${id}/deliveries`);
    assert.ok(deliveries[0], 'the ping made a delivery');
    await ctx.call('POST', `/api/v1/webhooks/${id}/deliveries/${deliveries[0].id}/replay`, {});
    return { action: 'webhook.deliveries.replay', target: ['webhook', id] };
  },
};

const APPROVAL_TAG = 'audit-approval';

/**
 * A deployment awaiting approval (the policy asks it of devices tagged APPROVAL_TAG), and an admin
 * key of another person, who may approve or reject it.
 */
async function awaitingApproval(ctx: AuditFixtureContext) {
  await ctx.call('PUT', '/api/v1/settings/approvals', { required: true, tags: [APPROVAL_TAG] });
  const deviceId = await ctx.device();
  await ctx.call('PATCH', `/api/v1/devices/${deviceId}`, { tags: [APPROVAL_TAG] });
  const created = await ctx.call<{ id: string; status: string }>('POST', '/api/v1/deployments', {
    version: ctx.version,
    target: { device_ids: [deviceId] },
    strategy: 'all_at_once',
  });
  assert.equal(created.status, 'awaiting_approval', JSON.stringify(created));
  const approver = await ctx.call<{ id: string; key: string }>('POST', '/api/v1/api-keys', {
    role: 'admin',
    name: 'approver',
    owner: `bob-${created.id}`,
  });
  return { id: created.id, approver };
}

/** An endpoint of the organization (a name that resolves nowhere: its deliveries only fail, in the background). */
async function webhook(ctx: AuditFixtureContext): Promise<string> {
  const created = await ctx.call<{ id: string }>('POST', '/api/v1/webhooks', {
    url: 'https://hooks.example.invalid/edgeflow',
    events: ['deployment.state_changed'],
  });
  return created.id;
}

let counter = 0;
/** A context on `server` for `org`; `agents` collects the agents it starts (stop them after). */
export function auditFixtureContext(
  server: TestServer,
  org: { id: string; adminKey: string },
  version: string,
  agents: Agent[],
): AuditFixtureContext {
  const call: AuditFixtureContext['call'] = async (method, path, body, key = org.adminKey) => {
    const response = await server.api(method, path, key, body);
    assert.ok(response.status < 300, `${method} ${path}: ${response.status} ${JSON.stringify(response.body)}`);
    return response.body as never;
  };
  const device = async () => {
    const created = await call<{ device_id: string }>('POST', '/api/v1/devices', {
      device_id: `audit-${++counter}`,
      current_version: '1.0.0',
    });
    return created.device_id;
  };
  return {
    server,
    org,
    version,
    call,
    device,
    async firmware() {
      const version = `3.0.${++counter}`;
      const file = await makeFirmwareFile(1024);
      const upload = await postFirmware(server.url, org.adminKey, { version, sha256: file.sha256 }, file);
      assert.equal(upload.status, 201, JSON.stringify(upload.body));
      return version;
    },
    async deployment() {
      const devices = [await device(), await device()];
      const created = await call<{ id: string }>('POST', '/api/v1/deployments', {
        version,
        target: { device_ids: devices },
        strategy: 'rolling',
        batch_size: 1,
      });
      return created.id;
    },
    async onlineDevice() {
      const registered = await registerDevice(server, org.adminKey, { device_id: `audit-online-${++counter}` });
      const agent = await startAgent(server, org, registered);
      agents.push(agent);
      return { deviceId: registered.deviceId, agent };
    },
  };
}
