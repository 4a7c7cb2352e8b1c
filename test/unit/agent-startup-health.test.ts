/**
 * Issue 18, item 9, on the agent's side (the RAUC case against the real server is
 * test/e2e/agent-startup-health.test.ts): an installer that fails at start — here one whose
 * boot loader environment cannot be read, a stand-in for both U-Boot copies being corrupt —
 * leaves the agent connected and saying why, on the last version it knew running, until a retry
 * starts it.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MemoryInstaller } from '../../src/agent/memory-installer.ts';
import { fastAgent, withTempDir } from '../helpers/agent-fixtures.ts';
import { StandInServer } from '../helpers/agent-stand-in-server.ts';

let server: StandInServer;
before(async () => {
  server = await StandInServer.start();
});
after(() => server.close());

/** The in-memory installer, whose first `failures` boots fail as a corrupt environment would. */
class UnreadableAtFirst extends MemoryInstaller {
  constructor(private failures: number) {
    super({ initialVersion: '1.0.0' });
  }
  override async boot() {
    if (this.failures-- > 0)
      throw new Error('fw_printenv -c /etc/fw_env.config exited with 1: Bad CRC, using default environment');
    return super.boot();
  }
}

describe('an agent whose installer fails at start', () => {
  it('reports why with the last version it knew, refuses updates, and recovers on a retry', async () => {
    await withTempDir(async (dataDir) => {
      await writeFile(join(dataDir, 'last-known.json'), JSON.stringify({ version: '1.4.0', slot: 'b' }));
      const deviceId = 'dev-unhealthy';
      const agent = fastAgent(server, {
        deviceId,
        dataDir,
        installer: new UnreadableAtFirst(2),
        startupRetryMs: 1_000,
      });
      const logged: string[] = [];
      agent.on('unhealthy', (why: string) => logged.push(why));
      await agent.start();
      try {
        await server.waitFor('device_info', () => server.commandsFrom(deviceId, 'device_info').length > 0);
        const info = server.commandsFrom(deviceId, 'device_info')[0]!.payload as Record<string, unknown>;
        assert.equal(info.current_version, '1.4.0', 'the last version it knew running, not the factory one');
        assert.equal(info.slot, 'b');
        assert.match(String(info.health_error), /^the installer cannot start: fw_printenv .* Bad CRC/);
        assert.equal(logged.length, 1, 'said once, not at every retry');

        const health = await server.command(deviceId, 'health_check', {});
        assert.equal((health.data as { status: string }).status, 'unhealthy');
        const refused = await server.command(deviceId, 'ota_update', {});
        assert.equal(refused.status, 'error');
        assert.equal(refused.error_code, 'device_unhealthy');

        await server.waitFor(
          'device_info without a health error',
          () => server.commandsFrom(deviceId, 'device_info').some((m) => !('health_error' in (m.payload as object))),
          20_000,
        );
        assert.equal(agent.healthError, undefined);
        assert.equal(agent.currentVersion, '1.0.0', 'from the installer again');
      } finally {
        await agent.stop();
      }
    });
  });
});
