/**
 * How an audit entry reads, without a server: the action and target a route pattern gives (so a
 * route added later is named by rule), a body with its secrets redacted at any depth, the ids an
 * answer carries, and the CLI's line, with server text escaped.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { auditLine, sinceValue } from '../../src/cli/audit.ts';
import { CONTROL_CHARACTERS } from '../../src/protocol/text.ts';
import { answerIds, REDACTED, redacted, routeAudit } from '../../src/server/audit/rules.ts';

describe('audit rules', () => {
  const cases: [string, string, string, string, string | undefined][] = [
    ['POST', '/api/v1/orgs', 'organization.create', 'organization', undefined],
    ['POST', '/api/v1/api-keys', 'key.create', 'key', undefined],
    ['DELETE', '/api/v1/api-keys/:id', 'key.delete', 'key', 'id'],
    ['PATCH', '/api/v1/devices/:id', 'device.update', 'device', 'id'],
    ['POST', '/api/v1/devices/:id/ota/update', 'device.ota.update', 'device', 'id'],
    ['POST', '/api/v1/firmware/:version/download-url', 'firmware.download_url', 'firmware', 'version'],
    ['POST', '/api/v1/deployments/:id/pause', 'deployment.pause', 'deployment', 'id'],
    ['PUT', '/api/v1/settings/maintenance-windows', 'settings.maintenance_windows.update', 'settings', undefined],
    ['DELETE', '/api/v1/devices/:id/lock', 'device.lock.delete', 'device', 'id'],
    ['POST', '/api/v1/webhooks/:id/deliveries/:delivery/replay', 'webhook.deliveries.replay', 'webhook', 'id'],
  ];
  for (const [method, url, action, type, param] of cases) {
    it(`names ${method} ${url} ${action}`, () => {
      const { targetName: _, ...rule } = routeAudit(method, url);
      assert.deepEqual(rule, { action, targetType: type, targetParam: param });
    });
  }

  it("names an organization's settings by their path: settings/budgets is the target budgets", () => {
    assert.equal(routeAudit('PUT', '/api/v1/settings/budgets').targetName, 'budgets');
    assert.equal(routeAudit('PUT', '/api/v1/settings/maintenance-windows').targetName, 'maintenance-windows');
    assert.equal(routeAudit('POST', '/api/v1/deployments/:id/pause').targetName, undefined);
  });

  it('redacts every field named like a secret, at any depth, and credentials in URLs; keeps identifiers', () => {
    const body = {
      url: 'https://hooks.example.com/in',
      secret: 'whsec_abc',
      events: ['deployment'],
      auth: { api_key: 'k', Token: 't', password: 'p', signing_key_id: 'sk_1' },
      mirror: 'https://user:hunter2@mirror.example.com/x',
      list: [{ client_secret: 's' }],
    };
    assert.deepEqual(redacted(body), {
      url: 'https://hooks.example.com/in',
      secret: REDACTED,
      events: ['deployment'],
      auth: { api_key: REDACTED, Token: REDACTED, password: REDACTED, signing_key_id: 'sk_1' },
      mirror: `https://${REDACTED}@mirror.example.com/x`,
      list: [{ client_secret: REDACTED }],
    });
    assert.ok(!JSON.stringify(redacted(body)).includes('whsec_abc'));
  });

  it('cuts long lists and texts, saying how much more there was', () => {
    const ids = Array.from({ length: 250 }, (_, i) => `gw-${i}`);
    const kept = redacted({ device_ids: ids }) as { device_ids: string[] };
    assert.equal(kept.device_ids.length, 101);
    assert.equal(kept.device_ids.at(-1), '… 150 more');
    assert.match(redacted('x'.repeat(5000)) as string, /… \(5000 characters\)$/);
  });

  it("takes a creation's target and created id from the answer", () => {
    assert.deepEqual(answerIds({ id: 'dep_1', version: '2.0.0' }, undefined), {
      targetId: 'dep_1',
      createdId: 'dep_1',
    });
    assert.deepEqual(answerIds({ device_id: 'gw-1', api_key: 'x' }, undefined), { targetId: 'gw-1' });
    assert.deepEqual(answerIds({ status: 'queued', update_id: 'upd_1', device_id: 'gw-1' }, 'gw-1'), {
      targetId: 'gw-1',
      createdId: 'upd_1',
    });
    assert.deepEqual(answerIds(null, 'key_1'), { targetId: 'key_1' });
  });

  it('prints an entry as one line with every control character escaped', () => {
    const line = auditLine({
      at: '2030-01-31T02:00:00.123Z',
      outcome: 'success',
      status: 200,
      action: 'device.update',
      target_type: 'device',
      target_id: 'gw\u001b[2K-1',
      actor_key_id: 'key_1',
      actor_key_name: 'ci\u0007',
      actor_role: 'admin',
      source_address: '10.0.0.1',
      changes: { name: 'x' },
      created_id: null,
    });
    assert.ok(!new RegExp(`[${CONTROL_CHARACTERS}]`).test(line), line);
    assert.match(
      line,
      /^2030-01-31T02:00:00Z {2}success 200 +device\.update +device:gw\\x1b\[2K-1 +by ci\\x07 \(key_1, admin\) from 10\.0\.0\.1 {2}\{"name":"x"\}$/,
    );
  });

  it('reads --since 2h as two hours ago and passes a date-time on as it is', () => {
    assert.equal(sinceValue('2h', Date.parse('2030-01-31T02:00:00Z')), '2030-01-31T00:00:00.000Z');
    assert.equal(sinceValue('2030-01-01T00:00:00Z'), '2030-01-01T00:00:00Z');
  });
});
