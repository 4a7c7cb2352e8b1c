/**
 * Offline installs the server learns of (issue 22, item 7), end to end: the CLI (a child process)
 * exports a signed bundle, the server goes down, the real agent installs the bundle handed over
 * by `edgeflow-ota agent install` (the same command as `edgeflow-agent install`) through its A/B
 * slots, trial boot, health check and commit, without the cloud; the server comes back on the same
 * database, the device reconnects and reports the install, and the OTA record and history show it
 * as an offline update (once, however often the report is resent). Every refusal is one line and
 * leaves the device as it was. On every backend under test; the device page's history of an
 * offline install is shown in test/e2e/dashboard-operations.test.ts.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { Agent } from '../../src/agent/agent.ts';
import { signManifest } from '../../src/protocol/manifest.ts';
import type { OfflineManifest } from '../../src/protocol/offline-bundle.ts';
import { encodeBundleHeader, parseBundleHeader } from '../../src/protocol/offline-bundle-file.ts';
import { findSigningKeys } from '../../src/server/orgs/repo.ts';
import { createAgent, type OtaRecord, registerDevice, removeAgentDirs } from '../helpers/agents.ts';
import { CLI } from '../helpers/cli.ts';
import { makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
import { eventually } from '../helpers/raw-device.ts';
import {
  backendsUnderTest,
  persistentState,
  startTestServer,
  stopSharedServices,
  type TestServer,
} from '../helpers/server.ts';
import { tempDir } from '../helpers/temp.ts';

const run = promisify(execFile);
const backends = await backendsUnderTest();
after(async () => {
  await removeAgentDirs();
  await stopSharedServices();
});

type Org = { id: string; adminKey: string };
type Outcome = { code: number; stdout: string; stderr: string };

/** The CLI as a user runs it; never throws, answers its exit code and output. */
async function cli(args: string[], env: Record<string, string> = {}): Promise<Outcome> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

async function upload(server: TestServer, org: Org, version: string, models?: string) {
  const file = await makeFirmwareFile(48 * 1024);
  const fields = { version, sha256: file.sha256, ...(models ? { compatible_models: models } : {}) };
  const response = await postFirmware(server.url, org.adminKey, fields, file);
  assert.equal(response.status, 201, JSON.stringify(response.body));
}

async function exportBundle(server: TestServer, org: Org, version: string, out: string): Promise<string> {
  const exported = await cli(['firmware', 'export', version, '--out', out, '--expires-in', '1d'], {
    EDGEFLOW_URL: server.url,
    EDGEFLOW_KEY: org.adminKey,
  });
  assert.equal(exported.code, 0, exported.stderr);
  const match = /^wrote .+: firmware (\S+) \(\d+ bytes\), bundle (bnd_\w+), expires /.exec(exported.stdout);
  assert.ok(match, exported.stdout);
  assert.equal(match[1], version);
  return match[2]!;
}

/** The header and image of a bundle file, to make altered copies of it. */
async function readBundle(file: string) {
  const bytes = await readFile(file);
  const parsed = parseBundleHeader(bytes);
  assert.ok(parsed.ok);
  return { manifest: parsed.header.manifest as OfflineManifest, image: bytes.subarray(parsed.imageOffset) };
}

for (const [index, backend] of backends.entries()) {
  describe(`offline installs on ${backend.name}`, () => {
    // PostgreSQL: the server goes down and comes back on the same database. The embedded
    // database would spend some 15 s making an on-disk data directory to restart on: there the
    // device is kept away from the server instead (its agent pointed at a closed port), which
    // the agent cannot tell apart.
    const restart = backend.db === 'postgres';
    const state = restart ? persistentState() : undefined;
    const env = { EDGEFLOW_DISPATCH_INTERVAL_MS: '200' };
    let server: TestServer;
    let org: Org;
    let bundles: string;
    let dataDir: string;
    let agent: Agent | undefined;
    let device: { deviceId: string; apiKey: string };
    let publicKeyPem: string;
    let bundleId: string;

    before(async () => {
      server = await startTestServer(backend, { ...(state ? { state } : {}), env });
      org = await server.createOrg('offline');
      await upload(server, org, '1.1.0');
      device = await registerDevice(server, org.adminKey, { model: 'gateway-a' });
      bundles = await tempDir('edgeflow-bundles-');
      dataDir = await tempDir('edgeflow-agent-');
      publicKeyPem = (await findSigningKeys(server.db, org.id))!.publicKeyPem;
    });
    after(async () => {
      await agent?.stop();
      await server.close();
      await state?.dispose();
    });

    /** The device: the real agent, its A/B slots in `dataDir`, the organization's key pinned. */
    async function bootAgent(reachable = true): Promise<Agent> {
      const booted = await createAgent(server, org, device, {
        ...(reachable ? {} : { server: 'http://127.0.0.1:1' }),
        dataDir,
        publicKeyPem,
        model: 'gateway-a',
        controlPollMs: 50,
      });
      await booted.start();
      return booted;
    }
    const install = (bundle: string) => cli(['agent', 'install', bundle, '--data-dir', dataDir]);
    const otaRecord = async () =>
      (
        await server.api<OtaRecord & Record<string, unknown>>(
          'GET',
          `/api/v1/devices/${device.deviceId}/ota`,
          org.adminKey,
        )
      ).body;

    it('installs a bundle while the server is down, and the server records it as an offline update (only one it signed)', async () => {
      const bundle = path.join(bundles, 'edgeflow-1.1.0.bundle');
      bundleId = await exportBundle(server, org, '1.1.0', bundle);
      const sign = (body: unknown, key = org.adminKey, version = '1.1.0') =>
        server.api<{ error: { code: string } }>('POST', `/api/v1/firmware/${version}/offline-bundle`, key, body);
      assert.equal((await sign({ expires_at: '2001-01-01T00:00:00Z' })).body.error.code, 'invalid_expiry');
      assert.equal((await sign({}, org.adminKey, '9.9.9')).status, 404);
      const viewer = await server.api<{ key: string }>('POST', '/api/v1/api-keys', org.adminKey, { role: 'viewer' });
      assert.equal((await sign({}, viewer.body.key)).status, 403, 'a viewer signs no bundle');
      if (restart) {
        agent = await bootAgent();
        assert.ok(await agent.waitUntilConnected(10_000));
        await server.close();
      } else {
        agent = await bootAgent(false);
      }
      assert.equal(agent.connected, false);
      const installed = await install(bundle);
      assert.equal(installed.code, 0, installed.stderr);
      assert.match(
        installed.stdout,
        new RegExp(`^installing 1\\.1\\.0 from bundle ${bundleId} \\(running 1\\.0\\.0\\)`),
      );
      // Installed into the other slot, rebooted into it on trial, healthy, committed: no cloud needed.
      await eventually(async () => agent!.currentVersion === '1.1.0' && agent!.otaState === null, 10_000, 'committed');
      assert.equal(agent.unacknowledgedResults, 1, 'the install waits to be reported');
      const again = await install(bundle);
      assert.equal(again.code, 0);
      assert.match(again.stdout, /^1\.1\.0 already runs on this device: nothing to do/);

      // The server comes back on the same database (or the device within its reach); the device
      // reboots and reconnects.
      await agent.stop();
      if (state) server = await startTestServer(backend, { state, env });
      agent = await bootAgent();
      await eventually(
        async () => (await otaRecord()).offline_bundle_id === bundleId,
        10_000,
        'offline install recorded',
      );
      const record = await otaRecord();
      assert.equal(record.current_version, '1.1.0');
      assert.equal(record.previous_version, '1.0.0');
      assert.equal(record.ota_status, 'completed');
      assert.equal(record.source, 'offline');
      assert.equal(record.update_kind, 'observed');
      assert.deepEqual(record.rollback_versions, ['1.0.0']);
      const listed = await server.api<{ devices: { device_id: string; ota: Record<string, unknown> | null }[] }>(
        'GET',
        '/api/v1/devices',
        org.adminKey,
      );
      const row = listed.body.devices.find((d) => d.device_id === device.deviceId);
      assert.equal(row?.ota?.offline_bundle_id, bundleId, 'the device list shows it too');
      await eventually(async () => agent!.unacknowledgedResults === 0, 5000, 'report acknowledged');

      // A report resent (its acknowledgement lost) adds nothing.
      await agent.stop();
      const stateFile = path.join(dataDir, 'ota-state.json');
      const saved = JSON.parse(await readFile(stateFile, 'utf8'));
      for (const result of saved.results) result.acknowledged = false;
      await writeFile(stateFile, JSON.stringify(saved));
      agent = await bootAgent();
      await eventually(async () => agent!.unacknowledgedResults === 0, 5000, 'resent report acknowledged');
      const history = await server.api<{ updates: Record<string, unknown>[] }>(
        'GET',
        `/api/v1/devices/${device.deviceId}/ota/history`,
        org.adminKey,
      );
      assert.deepEqual(
        history.body.updates.map((u) => [u.kind, u.status, u.from_version, u.target_version, u.offline_bundle_id]),
        [['observed', 'completed', '1.0.0', '1.1.0', bundleId]],
        'one offline row; no re-flash, no fall-back',
      );

      // A report of a bundle this server did not sign (another id under the real manifest, or no
      // signature at all) is acknowledged and not recorded as an offline install.
      await agent.stop();
      const forged = JSON.parse(await readFile(stateFile, 'utf8'));
      const [real] = forged.results;
      const { manifest: _manifest, signature: _signature, ...unsigned } = real.offline;
      forged.results = [
        { ...real, acknowledged: false, offline: { ...real.offline, bundle_id: 'bnd_forged' } },
        { ...real, acknowledged: false, offline: { ...unsigned, bundle_id: 'bnd_unsigned' } },
      ];
      await writeFile(stateFile, JSON.stringify(forged));
      agent = await bootAgent();
      await eventually(async () => agent!.unacknowledgedResults === 0, 5000, 'forged reports acknowledged');
      const after = await server.api<{ updates: Record<string, unknown>[] }>(
        'GET',
        `/api/v1/devices/${device.deviceId}/ota/history`,
        org.adminKey,
      );
      assert.deepEqual(
        after.body.updates.map((u) => u.offline_bundle_id),
        [bundleId],
        'no offline install of a bundle the server did not sign',
      );

      const shown = await cli(['ota', device.deviceId], { EDGEFLOW_URL: server.url, EDGEFLOW_KEY: org.adminKey });
      assert.equal(shown.code, 0, shown.stderr);
      assert.match(shown.stdout, new RegExp(`^summary +installed offline to 1\\.1\\.0 \\(bundle ${bundleId}\\)`, 'm'));
    });

    // The refusals are the agent's, the same on every backend: checked once.
    it('refuses bad bundles in one line each, leaving the device as it was', { skip: index > 0 }, async () => {
      agent ??= await bootAgent();
      const good = path.join(bundles, 'edgeflow-1.1.0.bundle');
      const { manifest, image } = await readBundle(good);
      const keys = (await findSigningKeys(server.db, org.id))!;
      const write = async (name: string, header: Buffer, body: Buffer) => {
        const file = path.join(bundles, name);
        await writeFile(file, Buffer.concat([header, body]));
        return file;
      };
      const later: OfflineManifest = { ...manifest, version: '1.3.0', bundle_id: 'bnd_later' };
      const signed = (m: OfflineManifest) => encodeBundleHeader(m, signManifest(m, keys.privateKeyPem));
      const tamperedImage = Buffer.from(image);
      tamperedImage[100] = tamperedImage[100]! ^ 0xff;
      const otherOrg = await server.createOrg('elsewhere');
      const foreignKey = (await findSigningKeys(server.db, otherOrg.id))!.privateKeyPem;
      const foreign = { ...later, organization_id: otherOrg.id };
      const expired = { ...later, expires_at: new Date(Date.now() - 1000).toISOString() };
      const cases: [string, string, RegExp][] = [
        ['tampered image', await write('image.bundle', signed(later), tamperedImage), /refused \(checksum_mismatch\)/],
        [
          'tampered manifest',
          await write(
            'manifest.bundle',
            encodeBundleHeader({ ...later, size: image.length + 1 }, signManifest(later, keys.privateKeyPem)),
            image,
          ),
          /refused \(signature_invalid\): the bundle's signature does not match/,
        ],
        [
          'expired',
          await write('expired.bundle', signed(expired), image),
          /refused \(expired\): the bundle expired at /,
        ],
        [
          "another organization's key",
          await write('foreign.bundle', encodeBundleHeader(foreign, signManifest(foreign, foreignKey)), image),
          /refused \(signature_invalid\)/,
        ],
        [
          'a downgrade',
          await write('downgrade.bundle', signed({ ...later, version: '0.9.0' }), image),
          /refused \(downgrade_refused\): refusing to go from 1\.1\.0 down to 0\.9\.0/,
        ],
        [
          'another model',
          await write('model.bundle', signed({ ...later, compatible_models: ['gateway-x'] }), image),
          /refused \(wrong_model\): the bundle is for gateway-x; not gateway-a/,
        ],
        [
          'no bundle',
          await write('junk.bundle', Buffer.from('hello\n'), Buffer.alloc(0)),
          /refused \(invalid_bundle\)/,
        ],
      ];
      const before = await readFile(path.join(dataDir, 'boot.json'), 'utf8');
      // Through the command (a child process each, so a few), and the same check in the agent for the others.
      const throughCli = new Set(['tampered image', 'expired', 'a downgrade']);
      for (const [what, file, expected] of cases) {
        if (throughCli.has(what)) continue;
        const refusal = await agent.installOffline(file).then(
          () => assert.fail(`${what} was accepted`),
          (error: Error & { code: string }) => `error: refused (${error.code}): ${error.message}\n`,
        );
        assert.match(refusal, expected, what);
      }
      const outcomes = await Promise.all(
        cases.filter(([what]) => throughCli.has(what)).map(([, file]) => install(file)),
      );
      for (const [i, [what, , expected]] of cases.filter(([w]) => throughCli.has(w)).entries()) {
        const outcome = outcomes[i]!;
        assert.equal(outcome.code, 1, `${what}: exit code`);
        assert.equal(outcome.stdout, '', what);
        assert.match(outcome.stderr, /^error: .+\n$/, `${what}: one line`);
        assert.match(outcome.stderr, expected, what);
      }
      assert.equal(agent.currentVersion, '1.1.0');
      assert.equal(agent.otaState, null);
      assert.equal(await readFile(path.join(dataDir, 'boot.json'), 'utf8'), before, 'no slot touched');

      // The device is busy with one bundle: a second one is refused.
      const busyLater = await write('later.bundle', signed(later), image);
      const [first, second] = await Promise.allSettled([
        agent.installOffline(busyLater),
        agent.installOffline(busyLater),
      ]);
      assert.equal(first.status, 'fulfilled');
      assert.equal(second.status, 'rejected');
      assert.match(String((second as PromiseRejectedResult).reason), /another offline bundle is being installed/);
      await eventually(async () => agent!.currentVersion === '1.3.0' && agent!.otaState === null, 10_000, '1.3.0');
    });
  });
}
