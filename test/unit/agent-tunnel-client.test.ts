/**
 * The agent's tunnel client against a small real `ws` server started here. That server is a
 * stand-in for the EdgeFlow server (test/helpers/agent-stand-in-server.ts), whose tunnel endpoint
 * is built in parallel; the end-to-end tests against the real server come with the server's tunnel.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { AGENT_VERSION } from '../../src/agent/agent.ts';
import { silentLogger } from '../../src/agent/logger.ts';
import { MemoryInstaller } from '../../src/agent/memory-installer.ts';
import {
  CommandRefusedError,
  InsecureServerUrlError,
  RequestRefusedError,
  TunnelClient,
  type TunnelClientOptions,
  tunnelUrl,
} from '../../src/agent/tunnel-client.ts';
import type { HealthCheckData } from '../../src/protocol/tunnel.ts';
import { fastAgent, resultsFor, updatePayload } from '../helpers/agent-fixtures.ts';
import { makeFirmware, StandInServer } from '../helpers/agent-stand-in-server.ts';

let server: StandInServer;
before(async () => {
  server = await StandInServer.start();
});
after(() => server.close());

function client(deviceId: string, overrides: Partial<TunnelClientOptions> = {}): TunnelClient {
  return new TunnelClient({
    server: server.baseUrl,
    deviceId,
    apiKey: 'key-1',
    agentVersion: AGENT_VERSION,
    firmwareVersion: () => '1.2.3',
    logger: silentLogger,
    allowInsecure: true,
    heartbeatIntervalMs: 100,
    reconnectBaseMs: 20,
    ...overrides,
  });
}

async function withClient(tunnel: TunnelClient, run: () => Promise<void>): Promise<void> {
  tunnel.start();
  try {
    await run();
  } finally {
    await tunnel.stop();
  }
}

const connects = (deviceId: string) => server.framesFrom(deviceId, (m) => m.type === 'connect').length;

describe('tunnel URL', () => {
  it('derives wss://…/tunnel from an https:// or wss:// server URL, keeping a path prefix', () => {
    assert.equal(tunnelUrl('https://ota.example.com'), 'wss://ota.example.com/tunnel');
    assert.equal(tunnelUrl('wss://ota.example.com:8443/'), 'wss://ota.example.com:8443/tunnel');
    assert.equal(tunnelUrl('https://example.com/edgeflow/'), 'wss://example.com/edgeflow/tunnel');
    assert.equal(tunnelUrl('wss://example.com/tunnel'), 'wss://example.com/tunnel');
  });

  it('refuses ws:// and http:// unless insecure is explicitly allowed', () => {
    assert.throws(() => tunnelUrl('ws://ota.example.com'), InsecureServerUrlError);
    assert.throws(() => tunnelUrl('http://ota.example.com'), InsecureServerUrlError);
    assert.throws(() => client('dev-insecure', { allowInsecure: false }), InsecureServerUrlError);
    assert.equal(tunnelUrl('http://127.0.0.1:8080', true), 'ws://127.0.0.1:8080/tunnel');
  });
});

describe('tunnel client (against a stand-in ws server)', () => {
  it('opens with a connect envelope carrying exactly type, device_id, api_key, version (and timestamp)', async () => {
    const tunnel = client('dev-connect');
    await withClient(tunnel, async () => {
      assert.equal(await tunnel.waitUntilConnected(2_000), true);
      const first = server.frames.find((f) => f.deviceId === 'dev-connect');
      assert.ok(first);
      const { timestamp, ...fields } = first.raw;
      assert.deepEqual(fields, { type: 'connect', device_id: 'dev-connect', api_key: 'key-1', version: AGENT_VERSION });
      assert.ok(!Number.isNaN(Date.parse(String(timestamp))), 'timestamp is RFC 3339');
    });
  });

  it('sends a ping every heartbeat interval and stays connected while pongs come back', async () => {
    const tunnel = client('dev-ping');
    await withClient(tunnel, async () => {
      await tunnel.waitUntilConnected(2_000);
      await server.waitFor('three pings', () => server.framesFrom('dev-ping', (m) => m.type === 'ping').length >= 3);
      const ping = server.frames.find((f) => f.deviceId === 'dev-ping' && f.message.type === 'ping');
      assert.deepEqual(Object.keys(ping?.raw ?? {}).sort(), ['timestamp', 'type']);
      assert.equal(connects('dev-ping'), 1, 'no reconnect while the link answers');
    });
  });

  it('drops a silent link after two missed intervals and reconnects', async () => {
    const tunnel = client('dev-silent');
    await withClient(tunnel, async () => {
      await tunnel.waitUntilConnected(2_000);
      server.answerPings = false;
      try {
        await server.waitFor('a reconnect after the silence', () => connects('dev-silent') >= 2, 3_000);
      } finally {
        server.answerPings = true;
      }
    });
  });

  it('answers health_check with status, firmware version and uptime', async () => {
    const tunnel = client('dev-health');
    await withClient(tunnel, async () => {
      await tunnel.waitUntilConnected(2_000);
      const response = await server.command('dev-health', 'health_check', {});
      assert.equal(response.status, 'success');
      const data = response.data as HealthCheckData;
      assert.equal(data.status, 'healthy');
      assert.equal(data.version, '1.2.3');
      assert.equal(typeof data.uptime, 'number');
    });
  });

  it('answers health_check from the given health verdict: unhealthy with its message when it says so', async () => {
    let verdict = { healthy: true, message: 'ok' };
    const tunnel = client('dev-health-verdict', { health: () => verdict });
    await withClient(tunnel, async () => {
      await tunnel.waitUntilConnected(2_000);
      const healthy = (await server.command('dev-health-verdict', 'health_check', {})).data as HealthCheckData;
      assert.equal(healthy.status, 'healthy');
      verdict = { healthy: false, message: 'crashed' };
      const unhealthy = (await server.command('dev-health-verdict', 'health_check', {})).data as HealthCheckData & {
        message: string;
      };
      assert.equal(unhealthy.status, 'unhealthy');
      assert.equal(unhealthy.message, 'crashed');
      assert.equal(unhealthy.version, '1.2.3');
    });
  });

  it('answers an unknown action with status error instead of ignoring it', async () => {
    const tunnel = client('dev-unknown');
    await withClient(tunnel, async () => {
      await tunnel.waitUntilConnected(2_000);
      const response = await server.command('dev-unknown', 'format_disk', {});
      assert.equal(response.status, 'error');
      assert.equal(response.error, 'unknown_action: unknown action "format_disk"');
      assert.equal(response.error_code, 'unknown_action');
    });
  });

  it("answers a handler's refusal with status error, its code and message", async () => {
    const tunnel = client('dev-throws');
    tunnel.handle('refuse', () => {
      throw new CommandRefusedError('busy', 'try later');
    });
    tunnel.handle('explode', () => {
      throw new Error('disk on fire');
    });
    await withClient(tunnel, async () => {
      await tunnel.waitUntilConnected(2_000);
      const refused = await server.command('dev-throws', 'refuse', {});
      assert.deepEqual([refused.status, refused.error, refused.error_code], ['error', 'busy: try later', 'busy']);
      const exploded = await server.command('dev-throws', 'explode', {});
      assert.deepEqual(
        [exploded.status, exploded.error, exploded.error_code],
        ['error', 'internal_error: disk on fire', 'internal_error'],
      );
    });
  });

  it("rejects a request the server refused with its code, read from an older server's plain string too", async () => {
    const tunnel = client('dev-refused');
    await withClient(tunnel, async () => {
      await tunnel.waitUntilConnected(2_000);
      // The stand-in answers an unknown update's refresh with a bare "unknown update", as servers before error_code.
      const refusal = await tunnel.request('ota_refresh_url', { update_id: 'u-unknown' }).then(
        () => assert.fail('accepted'),
        (error: unknown) => {
          assert.ok(error instanceof RequestRefusedError, String(error));
          return error.refusal;
        },
      );
      assert.deepEqual(refusal, { code: 'unspecified', message: 'unknown update' });
    });
  });

  it('resolves a device → cloud request with the matching response, and times out without one', async () => {
    const tunnel = client('dev-request');
    await withClient(tunnel, async () => {
      await tunnel.waitUntilConnected(2_000);
      assert.deepEqual(await tunnel.request('device_info', { current_version: '1.2.3' }), { ok: true });
      server.acknowledgeResults = false;
      try {
        await assert.rejects(tunnel.request('ota_result', {}, { timeoutMs: 100 }), /no response within 100 ms/);
      } finally {
        server.acknowledgeResults = true;
      }
      await assert.rejects(tunnel.request('ota_refresh_url', { update_id: 'nope' }), /unknown update/);
    });
  });

  it('reconnects with backoff after the server closes the link (going away, replaced)', async () => {
    const tunnel = client('dev-reconnect');
    await withClient(tunnel, async () => {
      await tunnel.waitUntilConnected(2_000);
      server.disconnect('dev-reconnect', 1001, 'server shutting down');
      await server.waitFor(
        'reconnect after 1001',
        () => connects('dev-reconnect') === 2 && server.isConnected('dev-reconnect'),
      );
      server.disconnect('dev-reconnect', 4009, 'replaced');
      await server.waitFor(
        'reconnect after 4009',
        () => connects('dev-reconnect') === 3 && server.isConnected('dev-reconnect'),
      );
    });
  });

  it('comes back within the restart jitter after 1012/1001, however long its backoff has grown', async () => {
    // A backoff of up to ten minutes: without the restart rule this device would stay away.
    const tunnel = client('dev-restart', { reconnectBaseMs: 600_000, reconnectCapMs: 600_000, restartJitterMs: 300 });
    await withClient(tunnel, async () => {
      assert.equal(await tunnel.waitUntilConnected(2_000), true);
      for (const [round, code] of [
        [2, 1012],
        [3, 1001],
      ] as const) {
        server.disconnect('dev-restart', code, 'server restarting');
        await server.waitFor(
          `reconnect after ${code}`,
          () => connects('dev-restart') === round && server.isConnected('dev-restart'),
        );
      }
    });
  });

  it('keeps retrying after the server refuses its credentials, and gets in once they are accepted', async () => {
    server.deviceKeys.set('dev-auth', 'the-right-key');
    const tunnel = client('dev-auth', { apiKey: 'rotated-key' });
    await withClient(tunnel, async () => {
      await server.waitFor('three refused attempts', () => connects('dev-auth') >= 3);
      assert.equal(tunnel.connected, false);
      server.deviceKeys.set('dev-auth', 'rotated-key');
      assert.equal(await tunnel.waitUntilConnected(2_000), true);
    });
  });

  it('stops reconnecting once stopped', async () => {
    const tunnel = client('dev-stop');
    tunnel.start();
    await tunnel.waitUntilConnected(2_000);
    await tunnel.stop();
    await new Promise((resolve) => setTimeout(resolve, 150));
    assert.equal(connects('dev-stop'), 1);
    assert.equal(server.isConnected('dev-stop'), false);
  });
});

describe('agent over the tunnel', () => {
  it('sends device_info after every connected', async () => {
    const agent = fastAgent(server, { deviceId: 'dev-info', storage: 'memory' });
    await agent.start();
    try {
      await server.waitFor('device_info', () => server.commandsFrom('dev-info', 'device_info').length === 1);
      server.disconnect('dev-info');
      await server.waitFor('second device_info', () => server.commandsFrom('dev-info', 'device_info').length === 2);
      const [, second] = server.commandsFrom('dev-info', 'device_info');
      const { boot_id, ...info } = (second?.payload ?? {}) as Record<string, unknown>;
      // The agent's time zone: its configured one, else the system's (maintenance windows are in it).
      assert.deepEqual(info, {
        current_version: '1.0.0',
        agent_version: AGENT_VERSION,
        timezone: Intl.DateTimeFormat().resolvedOptions().timeZone,
      });
      assert.equal(
        typeof boot_id,
        'string',
        'the boot it runs in (its soft restarts, for an agent without a reboot command)',
      );
    } finally {
      await agent.stop();
    }
  });

  it('resends an ota_result until the server acknowledges it, across reconnects', async () => {
    const installer = new MemoryInstaller({ initialVersion: '1.0.0' });
    const agent = fastAgent(server, { deviceId: 'dev-resend', storage: 'memory', installer, requestTimeoutMs: 150 });
    const payload = updatePayload(server, 'resend.bin', makeFirmware(20_000), {
      update_id: 'u-resend',
      version: '2.0.0',
    });
    server.acknowledgeResults = false;
    await agent.start();
    try {
      assert.equal(await agent.waitUntilConnected(2_000), true);
      assert.equal((await server.command('dev-resend', 'ota_update', payload)).status, 'success');
      await server.waitFor(
        'three unacknowledged sends',
        () => resultsFor(server, 'dev-resend', 'u-resend').length >= 3,
      );
      server.disconnect('dev-resend');
      const before = resultsFor(server, 'dev-resend', 'u-resend').length;
      await server.waitFor(
        'a resend after reconnecting',
        () => resultsFor(server, 'dev-resend', 'u-resend').length > before,
      );
      server.acknowledgeResults = true;
      await server.waitFor('acknowledged', () => agent.unacknowledgedResults === 0);
      const sent = resultsFor(server, 'dev-resend', 'u-resend').length;
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal(resultsFor(server, 'dev-resend', 'u-resend').length, sent, 'no resend after the acknowledgement');
      assert.ok(resultsFor(server, 'dev-resend', 'u-resend').every((r) => r.status === 'completed'));
    } finally {
      server.acknowledgeResults = true;
      await agent.stop();
    }
  });
});
