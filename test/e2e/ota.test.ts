/**
 * Single-device OTA end to end: the real server, the real agent (A/B slots on disk, pinned
 * signing key) over a real WebSocket tunnel, downloading through the real store's links. On
 * every backend under test (PGlite + local store, PostgreSQL + S3-protocol server).
 */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { after, afterEach, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Agent } from '../../src/agent/agent.ts';
import {
  type OtaRecord,
  registerDevice,
  removeAgentDirs,
  settledOta,
  signingKey,
  startAgent,
} from '../helpers/agents.ts';
import { type FirmwareFile, makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
import { connectRaw, eventually } from '../helpers/raw-device.ts';
import {
  backendsUnderTest,
  persistentState,
  startTestServer,
  stopSharedServices,
  type TestServer,
} from '../helpers/server.ts';

const backends = await backendsUnderTest();
after(async () => {
  await removeAgentDirs();
  await stopSharedServices();
});

type ErrorBody = { error: { code: string; message: string } };
type History = {
  updates: { id: string; kind: string; status: string; target_version: string; error_code: string | null }[];
};

async function commandsDispatched(server: TestServer): Promise<number> {
  return (await server.services.metrics.commandsDispatched.get()).values[0]?.value ?? 0;
}

for (const backend of backends) {
  describe(`single-device OTA on ${backend.name}`, () => {
    let server: TestServer;
    let org: { id: string; adminKey: string };
    let v100: FirmwareFile;
    let v110: FirmwareFile;
    const agents: Agent[] = [];

    before(async () => {
      server = await startTestServer(backend, {
        env: { EDGEFLOW_DISPATCH_INTERVAL_MS: '200', EDGEFLOW_HEALTH_CHECK_TIMEOUT_MS: '2000' },
      });
      org = await server.createOrg('acme');
      v100 = await makeFirmwareFile(256 * 1024);
      v110 = await makeFirmwareFile(2 * 1024 * 1024);
      for (const [version, file] of [
        ['1.0.0', v100],
        ['1.1.0', v110],
      ] as const) {
        const upload = await postFirmware(server.url, org.adminKey, { version, sha256: file.sha256 }, file);
        assert.equal(upload.status, 201);
      }
    });
    afterEach(async () => {
      await Promise.all(agents.splice(0).map((agent) => agent.stop()));
    });
    after(() => server.close());

    const update = (deviceId: string, body: Record<string, unknown>, key = org.adminKey) =>
      server.api<{ status: string; update_id: string | null } & ErrorBody>(
        'POST',
        `/api/v1/devices/${deviceId}/ota/update`,
        key,
        body,
      );
    /** A server of its own (other settings), with an organization, firmware 1.1.0 and a device. */
    async function isolatedServer(env: Record<string, string>) {
      const own = await startTestServer(backend, { env });
      try {
        const ownOrg = await own.createOrg('isolated');
        const upload = await postFirmware(own.url, ownOrg.adminKey, { version: '1.1.0', sha256: v110.sha256 }, v110);
        assert.equal(upload.status, 201);
        return { server: own, org: ownOrg, device: await registerDevice(own, ownOrg.adminKey) };
      } catch (error) {
        await own.close();
        throw error;
      }
    }
    const history = async (deviceId: string) =>
      (await server.api<History>('GET', `/api/v1/devices/${deviceId}/ota/history`, org.adminKey)).body.updates;

    it('updates a device: download, verify, install, reboot, health check, commit, report — then rolls it back', async () => {
      const device = await registerDevice(server, org.adminKey, { model: 'rpi4' });
      const agent = await startAgent(server, org, device);
      agents.push(agent);
      const events = collectEvents(server.url, org.adminKey);
      const before = await commandsDispatched(server);

      const accepted = await update(device.deviceId, { version: '1.1.0' });
      assert.equal(accepted.status, 202, JSON.stringify(accepted.body));
      assert.equal(accepted.body.status, 'queued');
      const record = await settledOta(server, org.adminKey, device.deviceId);
      assert.equal(record.ota_status, 'completed', JSON.stringify(record));
      assert.equal(record.current_version, '1.1.0');
      assert.equal(record.target_version, '1.1.0');
      assert.equal(record.progress, 100);
      assert.equal(record.previous_version, '1.0.0');
      assert.ok(record.last_update_at);
      assert.equal(agent.currentVersion, '1.1.0', 'the device itself booted the new version');
      assert.equal(await commandsDispatched(server), before + 1);

      const seen = await events.stop();
      const statuses = seen.filter((e) => e.update_id === accepted.body.update_id).map((e) => e.status);
      assert.ok(statuses.includes('in_progress'), `events: ${statuses.join(',')}`);
      assert.equal(statuses.at(-1), 'completed');
      // Progress is reported live, phase by phase; but progress reports are best effort (the agent
      // keeps only the latest while its tunnel is busy or down, and a loaded server may apply two at
      // once), so on a busy machine not every phase need show: some did, before the result.
      const phases = seen.map((e) => e.phase).filter((phase) => phase !== null && phase !== 'completed');
      assert.ok(
        phases.some((phase) => ['downloading', 'verifying', 'installing', 'rebooting'].includes(String(phase))),
        `phases: ${phases.join(',')}`,
      );

      // 1.0.0 is now the device's last known good version: the store must keep it.
      const keep = await server.api<ErrorBody>('DELETE', '/api/v1/firmware/1.0.0', org.adminKey);
      assert.equal(keep.status, 409);
      assert.equal(keep.body.error.code, 'firmware_in_use');

      const rollback = await server.api<{ update_id: string }>(
        'POST',
        `/api/v1/devices/${device.deviceId}/ota/rollback`,
        org.adminKey,
      );
      assert.equal(rollback.status, 202, JSON.stringify(rollback.body));
      const back = await settledOta(server, org.adminKey, device.deviceId);
      assert.equal(back.ota_status, 'completed', JSON.stringify(back));
      assert.equal(back.current_version, '1.0.0');
      assert.equal(agent.currentVersion, '1.0.0');
      const past = await history(device.deviceId);
      assert.deepEqual(
        past.map((u) => [u.kind, u.status, u.target_version]),
        [
          ['rollback', 'completed', '1.0.0'],
          ['update', 'completed', '1.1.0'],
        ],
      );
    });

    it('skips a device already on the version, and re-applies it with force', async () => {
      const device = await registerDevice(server, org.adminKey, { current_version: '1.0.0' });
      const agent = await startAgent(server, org, device);
      agents.push(agent);
      const before = await commandsDispatched(server);
      const skipped = await update(device.deviceId, { version: '1.0.0' });
      assert.equal(skipped.status, 200);
      assert.equal(skipped.body.status, 'skipped');
      await sleep(300);
      assert.equal(await commandsDispatched(server), before, 'nothing was sent');
      assert.deepEqual(await history(device.deviceId), []);

      const forced = await update(device.deviceId, { version: '1.0.0', force: true });
      assert.equal(forced.status, 202);
      const record = await settledOta(server, org.adminKey, device.deviceId);
      assert.equal(record.ota_status, 'completed', JSON.stringify(record));
      assert.equal(record.current_version, '1.0.0');
      assert.equal(await commandsDispatched(server), before + 1);
    });

    it('refuses an offline device (409 device_offline), an unknown version (404), an incompatible model (422), a downgrade (409)', async () => {
      const offline = await registerDevice(server, org.adminKey);
      const refused = await update(offline.deviceId, { version: '1.1.0' });
      assert.equal(refused.status, 409);
      assert.equal(refused.body.error.code, 'device_offline');

      const device = await registerDevice(server, org.adminKey, { model: 'rpi4', current_version: '1.1.0' });
      agents.push(await startAgent(server, org, device, { initialVersion: '1.1.0' }));
      const unknown = await update(device.deviceId, { version: '9.9.9' });
      assert.equal(unknown.status, 404);
      assert.equal(unknown.body.error.code, 'firmware_not_found');
      const downgrade = await update(device.deviceId, { version: '1.0.0' });
      assert.equal(downgrade.status, 409);
      assert.equal(downgrade.body.error.code, 'downgrade_refused');

      const special = await makeFirmwareFile(1024);
      const upload = await postFirmware(
        server.url,
        org.adminKey,
        { version: '1.2.0', sha256: special.sha256, compatible_models: 'rpi5' },
        special,
      );
      assert.equal(upload.status, 201);
      const incompatible = await update(device.deviceId, { version: '1.2.0' });
      assert.equal(incompatible.status, 422);
      assert.equal(incompatible.body.error.code, 'incompatible_firmware');
      assert.deepEqual(await history(device.deviceId), []);
    });

    it('fails on corrupted firmware in the store and keeps the device on its previous version', async () => {
      const corrupt = await makeFirmwareFile(512 * 1024);
      const upload = await postFirmware(
        server.url,
        org.adminKey,
        { version: '1.3.0', sha256: corrupt.sha256 },
        corrupt,
      );
      assert.equal(upload.status, 201);
      // Bit rot in the bucket: same size, other bytes, behind the same key.
      const staged = await server.store.stage(Readable.from([Buffer.alloc(corrupt.size, 0xab)]), {
        maxBytes: corrupt.size,
      });
      await server.store.promote(staged.tempKey, upload.body.storage_key as string);

      const device = await registerDevice(server, org.adminKey);
      const agent = await startAgent(server, org, device);
      agents.push(agent);
      assert.equal((await update(device.deviceId, { version: '1.3.0' })).status, 202);
      const record = await settledOta(server, org.adminKey, device.deviceId);
      assert.equal(record.ota_status, 'failed');
      assert.equal(record.error?.code, 'checksum_mismatch');
      assert.equal(record.current_version, '1.0.0');
      assert.equal(agent.currentVersion, '1.0.0');
    });

    it('reverts a new version that boots unhealthy, and reports failed on the previous version', async () => {
      const device = await registerDevice(server, org.adminKey);
      const agent = await startAgent(server, org, device, { healthCommand: 'test "$EDGEFLOW_VERSION" != 1.1.0' });
      agents.push(agent);
      assert.equal((await update(device.deviceId, { version: '1.1.0' })).status, 202);
      const record = await settledOta(server, org.adminKey, device.deviceId);
      assert.equal(record.ota_status, 'failed', JSON.stringify(record));
      assert.equal(record.error?.code, 'health_check_failed');
      assert.equal(record.current_version, '1.0.0');
      assert.equal(agent.currentVersion, '1.0.0', 'the device booted back into its previous slot');
    });

    it('refuses firmware whose signature does not verify against the pinned key', async () => {
      const other = await server.createOrg('other');
      const device = await registerDevice(server, org.adminKey);
      // Provisioned with another organization's key: every manifest of this one is mis-signed to it.
      const agent = await startAgent(server, org, device, { publicKeyPem: await signingKey(server, other.adminKey) });
      agents.push(agent);
      assert.equal((await update(device.deviceId, { version: '1.1.0' })).status, 202);
      const record = await settledOta(server, org.adminKey, device.deviceId);
      assert.equal(record.ota_status, 'failed');
      assert.equal(record.error?.code, 'signature_invalid');
      assert.equal(agent.currentVersion, '1.0.0');
    });

    it("never lets one organization update another's device or use its firmware", async () => {
      const orgB = await server.createOrg('b');
      const deviceB = await registerDevice(server, orgB.adminKey);
      agents.push(await startAgent(server, orgB, deviceB));
      const withKeysOfA = await update(deviceB.deviceId, { version: '1.1.0' }, org.adminKey);
      assert.equal(withKeysOfA.status, 404);
      assert.equal(withKeysOfA.body.error.code, 'device_not_found');
      const firmwareOfA = await update(deviceB.deviceId, { version: '1.1.0' }, orgB.adminKey);
      assert.equal(firmwareOfA.status, 404);
      assert.equal(firmwareOfA.body.error.code, 'firmware_not_found');
      const rollback = await server.api<ErrorBody>(
        'POST',
        `/api/v1/devices/${deviceB.deviceId}/ota/rollback`,
        org.adminKey,
      );
      assert.equal(rollback.status, 404);
    });

    it('asks for a fresh link when its link expires mid-download, and completes', async () => {
      const {
        server: shortLinks,
        org: shortOrg,
        device,
      } = await isolatedServer({
        EDGEFLOW_LINK_TTL_SECONDS: '2',
        EDGEFLOW_DISPATCH_INTERVAL_MS: '200',
      });
      try {
        const messages: string[] = [];
        let chunks = 0;
        const agent = await startAgent(shortLinks, shortOrg, device, {
          logger: {
            debug() {},
            info: (m: string) => messages.push(m),
            warn: (m: string) => messages.push(m),
            error() {},
          },
          // After the first chunk the connection drops and the device stays away past the link's expiry.
          stepHook: async (step) => {
            if (step === 'download:chunk' && ++chunks === 1) {
              await sleep(2500);
              throw new Error('connection dropped (test)');
            }
          },
        });
        agents.push(agent);
        const accepted = await shortLinks.api(
          'POST',
          `/api/v1/devices/${device.deviceId}/ota/update`,
          shortOrg.adminKey,
          {
            version: '1.1.0',
          },
        );
        assert.equal(accepted.status, 202);
        const record = await settledOta(shortLinks, shortOrg.adminKey, device.deviceId);
        assert.equal(record.ota_status, 'completed', JSON.stringify(record));
        assert.ok(
          messages.some((m) => /link expired/.test(m)),
          `the agent asked for a fresh link: ${messages.join(' | ')}`,
        );
      } finally {
        await Promise.all(agents.splice(0).map((agent) => agent.stop()));
        await shortLinks.close();
      }
    });

    it('fails an update whose device stops reporting (timed_out), and ignores late and duplicate reports', async () => {
      const {
        server: strict,
        org: strictOrg,
        device,
      } = await isolatedServer({
        EDGEFLOW_UPDATE_TIMEOUT_SECONDS: '1',
        EDGEFLOW_DISPATCH_INTERVAL_MS: '100',
      });
      try {
        // An EdgeFlow device speaking only the wire format: it answers health_check, acks the command, then goes quiet.
        const raw = await connectRaw(strict.url, device);
        const answering = (async () => {
          for (;;) {
            const command = await raw.next('command', 10_000).catch(() => undefined);
            if (!command) return undefined;
            const data =
              command.action === 'health_check'
                ? { status: 'healthy', version: '1.0.0', uptime: 1 }
                : { accepted: true };
            raw.send({ type: 'response', id: command.id, status: 'success', data });
            if (command.action === 'ota_update') return command;
          }
        })();
        const accepted = await strict.api<{ update_id: string }>(
          'POST',
          `/api/v1/devices/${device.deviceId}/ota/update`,
          strictOrg.adminKey,
          { version: '1.1.0' },
        );
        assert.equal(accepted.status, 202);
        const command = await answering;
        assert.ok(command, 'the device received ota_update');
        assert.equal((command.payload as { update_id: string }).update_id, accepted.body.update_id);
        const record = await settledOta(strict, strictOrg.adminKey, device.deviceId, 10_000);
        assert.equal(record.ota_status, 'failed');
        assert.equal(record.error?.code, 'timed_out');

        // A late success report, twice: acknowledged, but the finished update stays finished.
        for (let i = 0; i < 2; i++) {
          raw.send({
            type: 'command',
            id: `late-${i}`,
            action: 'ota_result',
            payload: { update_id: accepted.body.update_id, status: 'completed', current_version: '1.1.0' },
          });
          const ack = await raw.next('response');
          assert.equal(ack.status, 'success');
        }
        const after = (await strict.api<OtaRecord>('GET', `/api/v1/devices/${device.deviceId}/ota`, strictOrg.adminKey))
          .body;
        assert.equal(after.update_status, 'timed_out');
        assert.equal(after.current_version, '1.1.0', 'what the device says it runs is recorded');
        await raw.close();
      } finally {
        await strict.close();
      }
    });
  });

  describe(`OTA durability across a server restart on ${backend.name}`, () => {
    it('completes an update whose server restarted mid-download, with one command only', async () => {
      const state = persistentState();
      const env = { EDGEFLOW_DISPATCH_INTERVAL_MS: '200' };
      let server = await startTestServer(backend, { state, env });
      let agent: Agent | undefined;
      try {
        const org = await server.createOrg('durable');
        const big = await makeFirmwareFile(8 * 1024 * 1024);
        const upload = await postFirmware(server.url, org.adminKey, { version: '2.0.0', sha256: big.sha256 }, big);
        assert.equal(upload.status, 201);
        const device = await registerDevice(server, org.adminKey);
        agent = await startAgent(server, org, device, {
          downloadRetries: 100,
          // A slow link: the download takes seconds, so the restart lands in its middle.
          stepHook: async (step) => {
            if (step === 'download:chunk') await sleep(15);
          },
        });
        let downloading!: () => void;
        const midDownload = new Promise<void>((resolve) => {
          downloading = resolve;
        });
        agent.on('ota', (snapshot: { phase: string; progress: number }) => {
          if (snapshot.phase === 'downloading' && snapshot.progress > 5) downloading();
        });
        const accepted = await server.api('POST', `/api/v1/devices/${device.deviceId}/ota/update`, org.adminKey, {
          version: '2.0.0',
        });
        assert.equal(accepted.status, 202);
        await midDownload;
        const sentBefore = await commandsDispatched(server);
        await server.close();
        server = await startTestServer(backend, { state, env });
        const record = await settledOta(server, org.adminKey, device.deviceId, 60_000);
        assert.equal(record.ota_status, 'completed', JSON.stringify(record));
        assert.equal(record.current_version, '2.0.0');
        assert.equal(agent.currentVersion, '2.0.0');
        assert.equal(sentBefore + (await commandsDispatched(server)), 1, 'one ota_update command in all');
        const past = await server.api<History>('GET', `/api/v1/devices/${device.deviceId}/ota/history`, org.adminKey);
        assert.equal(past.body.updates.length, 1);
      } finally {
        await agent?.stop();
        await server.close();
        await state.dispose();
      }
    });
  });
}

interface SeenEvent {
  update_id: string;
  status: string;
  phase: string | null;
}

/** Reads the Server-Sent Events stream in the background until stopped. */
function collectEvents(baseUrl: string, key: string): { stop(): Promise<SeenEvent[]> } {
  const seen: SeenEvent[] = [];
  const controller = new AbortController();
  const reading = (async () => {
    const response = await fetch(`${baseUrl}/api/v1/events`, {
      headers: { authorization: `Bearer ${key}` },
      signal: controller.signal,
    });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /text\/event-stream/);
    let buffer = '';
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += Buffer.from(chunk).toString();
      let end = buffer.indexOf('\n\n');
      while (end >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = /^event: (.+)$/m.exec(block)?.[1];
        const data = /^data: (.+)$/m.exec(block)?.[1];
        if (event === 'ota' && data) seen.push(JSON.parse(data) as SeenEvent);
        end = buffer.indexOf('\n\n');
      }
    }
  })().catch((error: Error) => {
    if (error.name !== 'AbortError') throw error;
  });
  return {
    async stop() {
      await eventually(async () => seen.some((e) => e.status === 'completed'), 5000, 'completed event').catch(() => {});
      controller.abort();
      await reading;
      return seen;
    },
  };
}
