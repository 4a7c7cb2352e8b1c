/**
 * The whole OTA flow of the real agent, over a stand-in tunnel server and firmware store
 * (test/helpers/agent-stand-in-server.ts); the end-to-end tests against the real server come
 * with the server's tunnel.
 */
import assert from 'node:assert/strict';
import { chmod, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Agent, AgentOptions } from '../../src/agent/agent.ts';
import { MemoryInstaller } from '../../src/agent/memory-installer.ts';
import { generateSigningKeyPair } from '../../src/protocol/manifest.ts';
import type { OtaProgressPayload, OtaResultPayload } from '../../src/protocol/tunnel.ts';
import {
  fastAgent,
  lastResult,
  resultsFor,
  signedPayload,
  updatePayload,
  withTempDir,
} from '../helpers/agent-fixtures.ts';
import { makeFirmware, StandInServer } from '../helpers/agent-stand-in-server.ts';

const keys = generateSigningKeyPair();
const firmware = makeFirmware(150_000, 2);
let server: StandInServer;
let deviceCounter = 0;

before(async () => {
  server = await StandInServer.start();
});
after(() => server.close());

async function withAgent(
  overrides: Partial<AgentOptions>,
  run: (agent: Agent, deviceId: string) => Promise<void>,
): Promise<void> {
  const deviceId = `dev-flow-${++deviceCounter}`;
  const agent = fastAgent(server, { deviceId, ...overrides });
  await agent.start();
  try {
    assert.equal(await agent.waitUntilConnected(2_000), true);
    await run(agent, deviceId);
  } finally {
    await agent.stop();
  }
}

async function finalResult(deviceId: string, updateId: string): Promise<OtaResultPayload> {
  await server.waitFor(`result of ${updateId}`, () => lastResult(server, deviceId, updateId) !== undefined);
  return lastResult(server, deviceId, updateId)!;
}

/** A gate a step hook can wait on, to hold the flow at one step while the test acts. */
function gate(step: string) {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  let reached!: () => void;
  const reachedStep = new Promise<void>((resolve) => {
    reached = resolve;
  });
  return {
    hook: async (name: string) => {
      if (name !== step) return;
      reached();
      await opened;
    },
    reached: reachedStep,
    open,
  };
}

describe('OTA flow with A/B slots on disk', () => {
  it('reports download progress at most once per interval, however fast the download (phase changes always)', async () => {
    await withTempDir(async (dataDir) => {
      await withAgent({ dataDir, progressIntervalMs: 60_000 }, async (_agent, deviceId) => {
        // Several chunks of the stand-in's: with a report per 5 % step as well, each chunk was one.
        const big = makeFirmware(400_000, 5);
        const payload = updatePayload(server, 'throttled.bin', big, { update_id: 'u-throttled', version: '2.0.0' });
        await server.command(deviceId, 'ota_update', payload);
        assert.equal((await finalResult(deviceId, 'u-throttled')).status, 'completed');
        const downloading = server
          .commandsFrom(deviceId, 'ota_progress')
          .map((m) => m.payload as OtaProgressPayload)
          .filter((progress) => progress.phase === 'downloading');
        // Entering the phase reports 0 once (starting the download would say the same again: a
        // fleet's devices sent both at once); nothing in between within the interval.
        assert.equal(downloading.length, 1, JSON.stringify(downloading));
        assert.equal(downloading[0]?.bytes_downloaded ?? 0, 0);
      });
    });
  });

  it('downloads, verifies a signed update, installs into slot B, reboots, confirms and reports the new version', async () => {
    await withTempDir(async (dataDir) => {
      await withAgent(
        { dataDir, allowUnsigned: false, publicKeyPem: keys.publicKeyPem, organizationId: 'org-1' },
        async (agent, deviceId) => {
          const payload = signedPayload(
            updatePayload(server, 'ab-ok.bin', firmware, { update_id: 'u-ab-ok', version: '2.0.0' }),
            keys.privateKeyPem,
          );
          const ack = await server.command(deviceId, 'ota_update', payload);
          assert.deepEqual([ack.status, ack.data], ['success', { accepted: true, update_id: 'u-ab-ok' }]);

          const result = await finalResult(deviceId, 'u-ab-ok');
          assert.deepEqual(result, {
            update_id: 'u-ab-ok',
            status: 'completed',
            current_version: '2.0.0',
            previous_version: '1.0.0',
          });
          assert.equal(agent.currentVersion, '2.0.0');
          assert.deepEqual(JSON.parse(await readFile(join(dataDir, 'boot.json'), 'utf8')), {
            active: 'b',
            pending: null,
            tries: 0,
            maxTries: 3,
          });
          assert.deepEqual(await readFile(join(dataDir, 'slots/b/firmware.bin')), firmware.bytes);
          assert.deepEqual(await readdir(join(dataDir, 'download')), [], 'the download is removed after install');

          const phases = server
            .commandsFrom(deviceId, 'ota_progress')
            .map((m) => (m.payload as OtaProgressPayload).phase)
            .filter((phase, i, all) => phase !== all[i - 1]);
          assert.deepEqual(phases, [
            'downloading',
            'verifying',
            'installing',
            'rebooting',
            'health_checking',
            'committing',
          ]);
          const progress = server
            .commandsFrom(deviceId, 'ota_progress')
            .map((m) => (m.payload as OtaProgressPayload).progress);
          assert.deepEqual(
            progress,
            [...progress].sort((a, b) => a - b),
            'progress never goes backwards',
          );
          const infos = server.commandsFrom(deviceId, 'device_info');
          const latestInfo = infos.at(-1)?.payload as { current_version?: string } | undefined;
          assert.equal(latestInfo?.current_version, '2.0.0');
        },
      );
    });
  });

  it('reverts to the previous slot and version when the new version fails its health check', async () => {
    await withTempDir(async (dataDir) => {
      const healthCommand = 'test "$EDGEFLOW_VERSION" != "2.0.0"';
      await withAgent({ dataDir, healthCommand }, async (agent, deviceId) => {
        const payload = updatePayload(server, 'ab-sick.bin', firmware, { update_id: 'u-ab-sick', version: '2.0.0' });
        await server.command(deviceId, 'ota_update', payload);
        const result = await finalResult(deviceId, 'u-ab-sick');
        assert.equal(result.status, 'failed');
        assert.equal(result.error?.code, 'health_check_failed');
        assert.equal(result.current_version, '1.0.0');
        assert.equal(agent.currentVersion, '1.0.0');
        const boot = JSON.parse(await readFile(join(dataDir, 'boot.json'), 'utf8'));
        assert.deepEqual([boot.active, boot.pending], ['a', null]);
      });
    });
  });

  it('fails with checksum_mismatch and deletes the partial download when the bytes do not match', async () => {
    await withTempDir(async (dataDir) => {
      await withAgent({ dataDir }, async (agent, deviceId) => {
        const payload = {
          ...updatePayload(server, 'ab-bad.bin', firmware, { update_id: 'u-ab-bad', version: '2.0.0' }),
          sha256: 'f'.repeat(64),
        };
        await server.command(deviceId, 'ota_update', payload);
        const result = await finalResult(deviceId, 'u-ab-bad');
        assert.deepEqual(
          [result.status, result.error?.code, result.current_version],
          ['failed', 'checksum_mismatch', '1.0.0'],
        );
        assert.deepEqual(await readdir(join(dataDir, 'download')), []);
        assert.equal(agent.currentVersion, '1.0.0');
      });
    });
  });

  it('asks the cloud for a fresh link when the one it got has expired, then completes with it', async () => {
    await withTempDir(async (dataDir) => {
      await withAgent({ dataDir }, async (_agent, deviceId) => {
        const payload = {
          ...updatePayload(server, 'ab-expired.bin', firmware, { update_id: 'u-ab-expired', version: '2.0.0' }),
          ...server.firmwareLink('ab-expired.bin', new Date(Date.now() - 60_000)),
        };
        await server.command(deviceId, 'ota_update', payload);
        const result = await finalResult(deviceId, 'u-ab-expired');
        assert.equal(result.status, 'completed');
        assert.deepEqual(
          server.commandsFrom(deviceId, 'ota_refresh_url').map((m) => m.payload),
          [{ update_id: 'u-ab-expired' }],
        );
      });
    });
  });
});

describe('OTA commands', () => {
  it('answers a malformed ota_update with invalid_command', async () => {
    await withAgent({ storage: 'memory' }, async (_agent, deviceId) => {
      const response = await server.command(deviceId, 'ota_update', { update_id: 'u-x', version: '2.0.0' });
      assert.equal(response.status, 'error');
      assert.match(response.error ?? '', /^invalid_command:/);
    });
  });

  it('acks a duplicate of the running update, refuses another one as busy, and cancels a download', async () => {
    const held = gate('phase:downloading');
    await withAgent({ storage: 'memory', stepHook: held.hook }, async (_agent, deviceId) => {
      const payload = updatePayload(server, 'busy.bin', firmware, { update_id: 'u-busy', version: '2.0.0' });
      await server.command(deviceId, 'ota_update', payload);
      await held.reached;

      const duplicate = await server.command(deviceId, 'ota_update', payload);
      assert.deepEqual(duplicate.data, { accepted: true, update_id: 'u-busy', duplicate: true });
      const other = await server.command(deviceId, 'ota_update', { ...payload, update_id: 'u-other' });
      assert.equal(other.status, 'error');
      assert.match(other.error ?? '', /^busy:/);

      const cancel = await server.command(deviceId, 'ota_cancel', { update_id: 'u-busy' });
      assert.deepEqual(cancel.data, { cancelled: true, update_id: 'u-busy' });
      held.open();
      const result = await finalResult(deviceId, 'u-busy');
      assert.deepEqual([result.status, result.error?.code, result.current_version], ['failed', 'cancelled', '1.0.0']);
    });
  });

  it('puts off its first download request within start_within_ms, at random (here: near the end)', async (t) => {
    t.mock.method(Math, 'random', () => 0.99);
    await withAgent({ storage: 'memory' }, async (_agent, deviceId) => {
      const payload = updatePayload(server, 'spread.bin', firmware, {
        update_id: 'u-spread',
        version: '2.0.0',
        start_within_ms: 1_500,
      });
      const sent = Date.now();
      await server.command(deviceId, 'ota_update', payload);
      const reports = () =>
        server
          .commandsFrom(deviceId, 'ota_progress')
          .map((m) => m.payload as OtaProgressPayload)
          .filter((progress) => progress.update_id === 'u-spread');
      await new Promise((resolve) => setTimeout(resolve, 500));
      // Waiting is not downloading: the phase is reported when the download starts.
      assert.deepEqual(reports(), [], 'no progress while it waits');
      await server.waitFor('the download', () =>
        server.firmwareRequests.some((request) => request.name === 'spread.bin'),
      );
      const waited = Date.now() - sent;
      assert.ok(waited >= 1_400, `the first request came ${waited} ms after the command`);
      assert.equal((await finalResult(deviceId, 'u-spread')).status, 'completed');
      assert.equal(reports()[0]?.phase, 'downloading');
    });
  });

  it('cancelled while it puts off its download, it downloads nothing', async (t) => {
    t.mock.method(Math, 'random', () => 0.99);
    await withAgent({ storage: 'memory' }, async (_agent, deviceId) => {
      const payload = updatePayload(server, 'spread-cancel.bin', firmware, {
        update_id: 'u-spread-cancel',
        version: '2.0.0',
        start_within_ms: 60_000,
      });
      await server.command(deviceId, 'ota_update', payload);
      const cancel = await server.command(deviceId, 'ota_cancel', { update_id: 'u-spread-cancel' });
      assert.deepEqual(cancel.data, { cancelled: true, update_id: 'u-spread-cancel' });
      const result = await finalResult(deviceId, 'u-spread-cancel');
      assert.deepEqual([result.status, result.error?.code], ['failed', 'cancelled']);
      assert.equal(server.firmwareRequests.filter((request) => request.name === 'spread-cancel.bin').length, 0);
    });
  });

  it('refuses to cancel once the install has begun', async () => {
    const held = gate('phase:installing');
    await withAgent({ storage: 'memory', stepHook: held.hook }, async (_agent, deviceId) => {
      const payload = updatePayload(server, 'late.bin', firmware, { update_id: 'u-late', version: '2.0.0' });
      await server.command(deviceId, 'ota_update', payload);
      await held.reached;
      const cancel = await server.command(deviceId, 'ota_cancel', { update_id: 'u-late' });
      assert.equal(cancel.status, 'error');
      assert.match(cancel.error ?? '', /^too_late:/);
      held.open();
      assert.equal((await finalResult(deviceId, 'u-late')).status, 'completed');
    });
  });

  it('acks a finished update again as a duplicate and re-sends its result', async () => {
    await withAgent({ storage: 'memory' }, async (_agent, deviceId) => {
      const payload = updatePayload(server, 'again.bin', firmware, { update_id: 'u-again', version: '2.0.0' });
      await server.command(deviceId, 'ota_update', payload);
      await finalResult(deviceId, 'u-again');
      const sent = resultsFor(server, deviceId, 'u-again').length;
      const again = await server.command(deviceId, 'ota_update', payload);
      assert.deepEqual(again.data, { accepted: true, update_id: 'u-again', duplicate: true });
      await server.waitFor('the result again', () => resultsFor(server, deviceId, 'u-again').length === sent + 1);
      assert.equal(resultsFor(server, deviceId, 'u-again').at(-1)?.current_version, '2.0.0');
    });
  });

  it('completes at once, without downloading, when already on the target version and not forced', async () => {
    await withAgent({ storage: 'memory' }, async (agent, deviceId) => {
      const before = server.firmwareRequests.length;
      const payload = updatePayload(server, 'same.bin', firmware, { update_id: 'u-same', version: '1.0.0' });
      await server.command(deviceId, 'ota_update', payload);
      const result = await finalResult(deviceId, 'u-same');
      assert.deepEqual([result.status, result.current_version], ['completed', '1.0.0']);
      assert.equal(server.firmwareRequests.length, before);
      assert.equal(agent.currentVersion, '1.0.0');
    });
  });

  it('re-installs the running version when forced', async () => {
    await withAgent({ storage: 'memory' }, async (_agent, deviceId) => {
      const before = server.firmwareRequests.length;
      const payload = updatePayload(server, 'force.bin', firmware, {
        update_id: 'u-force',
        version: '1.0.0',
        force: true,
      });
      await server.command(deviceId, 'ota_update', payload);
      assert.equal((await finalResult(deviceId, 'u-force')).status, 'completed');
      assert.equal(server.firmwareRequests.length, before + 1);
    });
  });
});

describe('OTA security on the device', () => {
  it('refuses an unsigned update when a key is pinned, downloading nothing', async () => {
    await withAgent(
      { storage: 'memory', allowUnsigned: false, publicKeyPem: keys.publicKeyPem },
      async (agent, deviceId) => {
        const before = server.firmwareRequests.length;
        const payload = updatePayload(server, 'unsigned.bin', firmware, { update_id: 'u-unsigned', version: '2.0.0' });
        await server.command(deviceId, 'ota_update', payload);
        const result = await finalResult(deviceId, 'u-unsigned');
        assert.deepEqual(
          [result.status, result.error?.code, result.current_version],
          ['failed', 'signature_required', '1.0.0'],
        );
        assert.equal(server.firmwareRequests.length, before);
        assert.equal(agent.currentVersion, '1.0.0');
      },
    );
  });

  it('refuses a tampered manifest', async () => {
    await withAgent(
      { storage: 'memory', allowUnsigned: false, publicKeyPem: keys.publicKeyPem },
      async (_agent, deviceId) => {
        const payload = signedPayload(
          updatePayload(server, 'tampered.bin', firmware, { update_id: 'u-tampered', version: '2.0.0' }),
          keys.privateKeyPem,
        );
        const tampered = { ...payload, manifest: { ...payload.manifest!, issued_at: '2030-01-01T00:00:00Z' } };
        await server.command(deviceId, 'ota_update', tampered);
        assert.equal((await finalResult(deviceId, 'u-tampered')).error?.code, 'signature_invalid');
      },
    );
  });

  it('refuses a downgrade, but applies a signed rollback for this device', async () => {
    const secured = {
      storage: 'memory' as const,
      initialVersion: '2.0.0',
      allowUnsigned: false,
      publicKeyPem: keys.publicKeyPem,
    };
    await withAgent(secured, async (agent, deviceId) => {
      const down = signedPayload(
        updatePayload(server, 'down.bin', firmware, { update_id: 'u-down', version: '1.5.0' }),
        keys.privateKeyPem,
      );
      await server.command(deviceId, 'ota_update', down);
      assert.equal((await finalResult(deviceId, 'u-down')).error?.code, 'downgrade_refused');

      const rollback = signedPayload(
        updatePayload(server, 'rollback.bin', firmware, { update_id: 'u-rollback', version: '1.5.0' }),
        keys.privateKeyPem,
        { kind: 'rollback', device_id: deviceId, update_id: 'u-rollback' },
      );
      await server.command(deviceId, 'ota_update', rollback);
      const result = await finalResult(deviceId, 'u-rollback');
      assert.deepEqual([result.status, result.current_version], ['completed', '1.5.0']);
      assert.equal(agent.currentVersion, '1.5.0');
    });
  });
});

describe('other installers', () => {
  it('memory installer: a boot failure of the new version reverts and reports boot_failed', async () => {
    const installer = new MemoryInstaller({ initialVersion: '1.0.0', failBoot: true });
    await withAgent({ storage: 'memory', installer }, async (agent, deviceId) => {
      const payload = updatePayload(server, 'noboot.bin', firmware, { update_id: 'u-noboot', version: '2.0.0' });
      await server.command(deviceId, 'ota_update', payload);
      const result = await finalResult(deviceId, 'u-noboot');
      assert.deepEqual([result.status, result.error?.code, result.current_version], ['failed', 'boot_failed', '1.0.0']);
      assert.equal(agent.currentVersion, '1.0.0');
    });
  });

  it('memory installer: an install failure reports install_failed on the previous version', async () => {
    const installer = new MemoryInstaller({ initialVersion: '1.0.0', failInstall: true });
    await withAgent({ storage: 'memory', installer }, async (_agent, deviceId) => {
      const payload = updatePayload(server, 'noinstall.bin', firmware, { update_id: 'u-noinstall', version: '2.0.0' });
      await server.command(deviceId, 'ota_update', payload);
      const result = await finalResult(deviceId, 'u-noinstall');
      assert.deepEqual(
        [result.status, result.error?.code, result.current_version],
        ['failed', 'install_failed', '1.0.0'],
      );
    });
  });

  it('script installer: hands the image to the operator script and commits through it', async () => {
    await withTempDir(async (dataDir) => {
      const script = join(dataDir, 'updater.sh');
      // A toy updater with its own slots: "installed" becomes "current" on commit.
      await writeFile(
        script,
        `#!/bin/sh
set -e
cd "$(dirname "$0")"
case "$1" in
  install) cp "$2" staged.bin; echo "$3" > staged.version; echo "$3" > current.version ;;
  commit) rm -f staged.bin staged.version ;;
  revert) cat previous.version > current.version ;;
  current-version) cat current.version 2>/dev/null || echo 1.0.0 ;;
  *) exit 2 ;;
esac
echo "$1 $2 $3" >> calls.log
`,
      );
      await chmod(script, 0o755);
      await writeFile(join(dataDir, 'previous.version'), '1.0.0\n');
      await withAgent({ dataDir, installer: 'script', installScript: script }, async (agent, deviceId) => {
        const payload = updatePayload(server, 'script.bin', firmware, { update_id: 'u-script', version: '2.0.0' });
        await server.command(deviceId, 'ota_update', payload);
        const result = await finalResult(deviceId, 'u-script');
        assert.deepEqual([result.status, result.current_version], ['completed', '2.0.0']);
        assert.equal(agent.currentVersion, '2.0.0');
        const calls = (await readFile(join(dataDir, 'calls.log'), 'utf8')).trim().split('\n');
        assert.match(calls.find((c) => c.startsWith('install')) ?? '', /^install .*\.part 2\.0\.0$/);
        assert.ok(calls.includes('commit  '));
      });
    });
  });
});
