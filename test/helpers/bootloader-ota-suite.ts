/**
 * The single-device OTA flow once more, with the boot-loader A/B installer: the real server, the
 * real agent over a real WebSocket, file-backed partitions and a real U-Boot environment
 * (libubootenv's fw_setenv, redundant copies) or GRUB environment block (grub-editenv). No boot
 * loader runs here: at every (re)start of the agent, its soft restart included, the harness of
 * test/helpers/boot-media.ts reads the same environment and does what the documented U-Boot
 * and GRUB scripts do (count the trial boot, fall back past bootlimit), then the agent boots.
 * On every backend under test; test/e2e/ota-uboot.test.ts and ota-grub.test.ts run it.
 */
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import type { Agent, AgentOptions } from '../../src/agent/agent.ts';
import { BootVariables } from '../../src/agent/bootloader-installer.ts';
import type { StepHook } from '../../src/agent/installer.ts';
import { createAgent, registerDevice, removeAgentDirs, settledOta, type TestDevice } from './agents.ts';
import {
  type BootLoaderKind,
  type BootMedia,
  bootedByLoader,
  bootloaderInstaller,
  createBootMedia,
} from './boot-media.ts';
import { type FirmwareFile, makeFirmwareFile, postFirmware } from './firmware.ts';
import { eventually } from './raw-device.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from './server.ts';

const partitionBytes = 4 * 1024 * 1024;

/** The suite, on every backend under test, for one boot loader. */
export async function bootloaderOtaSuite(kind: BootLoaderKind): Promise<void> {
  const backends = await backendsUnderTest();
  after(async () => {
    await removeAgentDirs();
    await stopSharedServices();
  });
  for (const backend of backends) {
    describe(`single-device OTA through ${kind} on ${backend.name}`, () => {
      let server: TestServer;
      let org: { id: string; adminKey: string };
      let v100: FirmwareFile;
      let v110: FirmwareFile;
      let factory: Buffer;
      const agents: Agent[] = [];
      const media: BootMedia[] = [];

      before(async () => {
        server = await startTestServer(backend, { env: { EDGEFLOW_DISPATCH_INTERVAL_MS: '200' } });
        org = await server.createOrg('acme');
        v100 = await makeFirmwareFile(256 * 1024);
        v110 = await makeFirmwareFile(2 * 1024 * 1024);
        factory = await readFile(v100.path);
        for (const [version, file] of [
          ['1.0.0', v100],
          ['1.1.0', v110],
        ] as const) {
          const upload = await postFirmware(server.url, org.adminKey, { version, sha256: file.sha256 }, file);
          assert.equal(upload.status, 201);
        }
      });
      afterEach(async () => {
        await Promise.all(agents.splice(0).map((agent) => agent.powerCut()));
        await Promise.all(media.splice(0).map((m) => m.remove()));
      });
      after(async () => {
        await server.close();
        await Promise.all([v100, v110].map((file) => rm(dirname(file.path), { recursive: true, force: true })));
      });

      const update = (deviceId: string) =>
        server.api<{ status: string }>('POST', `/api/v1/devices/${deviceId}/ota/update`, org.adminKey, {
          version: '1.1.0',
        });

      async function newDevice(): Promise<{ device: TestDevice; media: BootMedia }> {
        const device = await registerDevice(server, org.adminKey);
        const own = await createBootMedia(kind, partitionBytes, factory);
        media.push(own);
        return { device, media: own };
      }

      /** Powers the device on: boot loader, then a fresh agent process on the same disk. */
      async function powerOn(
        device: TestDevice,
        disk: BootMedia,
        options: Partial<AgentOptions> = {},
        hook?: StepHook,
      ): Promise<Agent> {
        const installer = bootedByLoader(disk, bootloaderInstaller(disk, { stepHook: hook }));
        const agent = await createAgent(server, org, device, {
          dataDir: `${disk.dir}/data`,
          installer,
          stepHook: hook,
          ...options,
        });
        agents.push(agent);
        await agent.start();
        return agent;
      }

      async function assertBoots(disk: BootMedia, image: FirmwareFile): Promise<void> {
        const variables = await disk.variables();
        assert.notEqual(variables.get(BootVariables.upgradeAvailable), '1', 'no trial left pending');
        const slot = await disk.bootLoaderStart();
        assert.equal(await disk.slotHash(slot, image.size), image.sha256, `slot ${slot} holds the expected image`);
      }

      it('updates through the boot loader: writes slot B, trial boot, health check, commit, report', async () => {
        const { device, media: disk } = await newDevice();
        const agent = await powerOn(device, disk, { healthCommand: 'test "$EDGEFLOW_VERSION" = 1.1.0' });
        assert.equal(await agent.waitUntilConnected(10_000), true);
        assert.equal((await update(device.deviceId)).status, 202);
        const record = await settledOta(server, org.adminKey, device.deviceId, 60_000);
        assert.equal(record.ota_status, 'completed', JSON.stringify(record));
        assert.equal(record.current_version, '1.1.0');
        assert.equal(agent.currentVersion, '1.1.0');
        const variables = await disk.variables();
        assert.equal(variables.get('edgeflow_slot'), 'b');
        assert.equal(variables.get('upgrade_available'), '0');
        assert.equal(variables.get('edgeflow_version_b'), '1.1.0');
        assert.equal(disk.boots, 2, 'power-on, then one reboot into the new slot');
        await assertBoots(disk, v110);
      });

      it('falls back when the health check fails on the trial boot, and reports failed on 1.0.0', async () => {
        const { device, media: disk } = await newDevice();
        const agent = await powerOn(device, disk, { healthCommand: 'test "$EDGEFLOW_VERSION" != 1.1.0' });
        assert.equal(await agent.waitUntilConnected(10_000), true);
        assert.equal((await update(device.deviceId)).status, 202);
        const record = await settledOta(server, org.adminKey, device.deviceId, 60_000);
        assert.equal(record.ota_status, 'failed', JSON.stringify(record));
        assert.equal(record.error?.code, 'health_check_failed');
        assert.equal(record.current_version, '1.0.0');
        assert.equal(agent.currentVersion, '1.0.0');
        assert.equal(disk.boots, 3, 'power-on, the trial boot, and the reboot back into slot A');
        assert.equal((await disk.variables()).get('edgeflow_slot'), 'a');
        await assertBoots(disk, v100);
      });

      it('falls back by itself when the new image never gets as far as the agent, and reports failed', async () => {
        const { device, media: disk } = await newDevice();
        let agent = await powerOn(device, disk);
        assert.equal(await agent.waitUntilConnected(10_000), true);
        // Every boot of the new slot dies before its health check (a kernel panic, a hung service).
        let died = false;
        const dieOnTrial: StepHook = (step) => {
          if (step !== 'phase:health_checking') return;
          died = true;
          return new Promise<void>(() => {});
        };
        await agent.powerCut();
        agent = await powerOn(device, disk, {}, dieOnTrial);
        assert.equal(await agent.waitUntilConnected(10_000), true);
        assert.equal((await update(device.deviceId)).status, 202);
        for (let trial = 1; trial <= 3; trial++) {
          await eventually(async () => died, 30_000, `trial boot ${trial} reached its health check`);
          died = false;
          await agent.powerCut();
          agent = await powerOn(device, disk, {}, trial < 3 ? dieOnTrial : undefined);
        }
        const record = await settledOta(server, org.adminKey, device.deviceId, 60_000);
        assert.equal(record.ota_status, 'failed', JSON.stringify(record));
        assert.equal(record.error?.code, 'boot_failed');
        assert.equal(record.current_version, '1.0.0');
        assert.equal(agent.currentVersion, '1.0.0');
        await assertBoots(disk, v100);
      });

      // Every step is cut in test/unit/agent-bootloader-power-cut.test.ts; here the two around the reboot.
      for (const step of ['install:pending-marked', 'phase:health_checking']) {
        it(`recovers to a bootable slot after a power cut at ${step}, and reports completed`, async () => {
          const { device, media: disk } = await newDevice();
          let cut = false;
          const agent = await powerOn(device, disk, {}, (at) => {
            if (at !== step || cut) return;
            cut = true;
            return new Promise<void>(() => {});
          });
          assert.equal(await agent.waitUntilConnected(10_000), true);
          assert.equal((await update(device.deviceId)).status, 202);
          await eventually(async () => cut, 30_000, `the cut at ${step}`);
          await agent.powerCut();
          const after = await powerOn(device, disk);
          const record = await settledOta(server, org.adminKey, device.deviceId, 60_000);
          assert.equal(record.ota_status, 'completed', JSON.stringify(record));
          assert.equal(after.currentVersion, '1.1.0');
          await assertBoots(disk, v110);
        });
      }
    });
  }
}
