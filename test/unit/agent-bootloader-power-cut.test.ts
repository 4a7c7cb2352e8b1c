/**
 * A power cut at every step of an update with the boot-loader installer: the real agent, file
 * partitions and the real U-Boot (fw_setenv, redundant environment) or GRUB (grub-editenv)
 * environment, against a stand-in tunnel server and firmware store. At step k the agent freezes
 * for good (nothing after that step happens) and is dropped; then the machine "powers on": the
 * boot-loader harness of test/helpers/boot-media.ts takes its turn on the same environment and a
 * fresh agent starts. Whatever k was, the slot the boot loader boots must hold a whole image, no
 * trial may be left pending, and the device must end completed on the new version (healthy
 * image) or failed on the previous one (unhealthy image), and say so to the server.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Agent, AgentOptions } from '../../src/agent/agent.ts';
import { BootVariables } from '../../src/agent/bootloader-installer.ts';
import type { StepHook } from '../../src/agent/installer.ts';
import { fastAgent, resultsFor, updatePayload } from '../helpers/agent-fixtures.ts';
import { makeFirmware, StandInServer } from '../helpers/agent-stand-in-server.ts';
import {
  type BootLoaderKind,
  type BootMedia,
  bootedByLoader,
  bootloaderInstaller,
  createBootMedia,
} from '../helpers/boot-media.ts';

const factory = makeFirmware(150_000, 1);
const firmware = makeFirmware(200_000, 3);
const partitionBytes = 512 * 1024;
let server: StandInServer;
let deviceCounter = 0;

before(async () => {
  server = await StandInServer.start();
});
after(() => server.close());

interface Cut {
  step: string;
  occurrence: number;
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

async function withMedia<T>(kind: BootLoaderKind, run: (media: BootMedia) => Promise<T>): Promise<T> {
  const media = await createBootMedia(kind, partitionBytes, factory.bytes);
  try {
    return await run(media);
  } finally {
    await media.remove();
  }
}

/** An agent on these media; each of its (re)starts begins with the boot loader's turn. */
function deviceAgent(media: BootMedia, deviceId: string, options: Partial<AgentOptions>, hook?: StepHook): Agent {
  const installer = bootedByLoader(media, bootloaderInstaller(media, { stepHook: hook }));
  return fastAgent(server, { deviceId, dataDir: `${media.dir}/data`, ...options, installer, stepHook: hook });
}

async function sendUpdate(agent: Agent, deviceId: string): Promise<void> {
  assert.equal(await agent.waitUntilConnected(5_000), true);
  const payload = updatePayload(server, 'cut.bin', firmware, { update_id: 'u-cut', version: '2.0.0' });
  server.sendCommand(deviceId, 'ota_update', payload);
}

async function recordSteps(kind: BootLoaderKind, options: Partial<AgentOptions>): Promise<string[]> {
  const steps: string[] = [];
  await withMedia(kind, async (media) => {
    const deviceId = `dev-bl-record-${++deviceCounter}`;
    const agent = deviceAgent(media, deviceId, options, (step) => void steps.push(step));
    await agent.start();
    try {
      await sendUpdate(agent, deviceId);
      await server.waitFor(
        'acknowledged',
        () => agent.unacknowledgedResults === 0 && steps.includes('result:acknowledged'),
        15_000,
      );
    } finally {
      await agent.stop();
    }
  });
  return steps;
}

function cutsFor(steps: string[]): Cut[] {
  const distinct = [...new Set(steps)].map((step) => ({ step, occurrence: 1 }));
  if (steps.filter((s) => s === 'download:chunk').length >= 2) distinct.push({ step: 'download:chunk', occurrence: 2 });
  return distinct;
}

async function survivePowerCut(
  kind: BootLoaderKind,
  options: Partial<AgentOptions>,
  cut: Cut,
  expected: 'completed' | 'failed',
): Promise<void> {
  await withMedia(kind, async (media) => {
    const deviceId = `dev-bl-cut-${++deviceCounter}`;
    let seen = 0;
    let cutHappened = false;
    const first = deviceAgent(media, deviceId, options, (step) => {
      if (step !== cut.step || ++seen !== cut.occurrence) return;
      cutHappened = true;
      // The power is gone: this step, and everything after it, never completes.
      return new Promise<void>(() => {});
    });
    await first.start();
    await sendUpdate(first, deviceId);
    await server.waitFor(`the cut at ${cut.step}#${cut.occurrence}`, () => cutHappened, 15_000);
    await first.powerCut();
    await settle();

    const second = deviceAgent(media, deviceId, options);
    await second.start();
    try {
      const where = `cut at ${cut.step}#${cut.occurrence}`;
      await server.waitFor(
        `a reported final state after a ${where}`,
        () =>
          second.otaState === null &&
          second.unacknowledgedResults === 0 &&
          resultsFor(server, deviceId, 'u-cut').length > 0,
        15_000,
      );
      const final = resultsFor(server, deviceId, 'u-cut').at(-1)!;
      assert.equal(final.status, expected, `${where}: ${final.error?.message ?? ''}`);
      assert.equal(final.current_version, expected === 'completed' ? '2.0.0' : '1.0.0', where);
      assert.equal(second.currentVersion, final.current_version, 'the report says what the device runs');

      // Power on once more: what does the boot loader boot now, and is it whole?
      const variables = await media.variables();
      assert.notEqual(variables.get(BootVariables.upgradeAvailable), '1', `${where}: no trial left pending`);
      assert.equal(variables.get(BootVariables.trialSlot), undefined, where);
      const booted = await media.bootLoaderStart();
      const image = final.current_version === '2.0.0' ? firmware : factory;
      assert.equal(await media.slotHash(booted, image.bytes.length), image.sha256, `${where}: slot ${booted} is whole`);
    } finally {
      await second.stop();
    }
  });
}

for (const kind of ['uboot', 'grub'] as BootLoaderKind[]) {
  describe(`power cut at every step of an update through ${kind}`, () => {
    it('a healthy update always ends completed on the new version, whichever step lost power', async (t) => {
      const steps = await recordSteps(kind, {});
      for (const step of ['install:image-written', 'install:read-back', 'install:pending-marked', 'committed']) {
        assert.ok(steps.includes(step), `${step} in ${steps.join(' ')}`);
      }
      for (const cut of cutsFor(steps)) {
        await t.test(`power lost at ${cut.step} #${cut.occurrence}`, () => survivePowerCut(kind, {}, cut, 'completed'));
      }
    });

    it('an unhealthy update always ends failed on the previous version, whichever step lost power', async (t) => {
      const options = { healthCommand: 'test "$EDGEFLOW_VERSION" != "2.0.0"' };
      const steps = await recordSteps(kind, options);
      assert.ok(steps.includes('phase:reverting') && steps.includes('reverted'), steps.join(' '));
      for (const cut of cutsFor(steps)) {
        await t.test(`power lost at ${cut.step} #${cut.occurrence}`, () =>
          survivePowerCut(kind, options, cut, 'failed'),
        );
      }
    });
  });
}
