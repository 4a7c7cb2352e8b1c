/**
 * A power cut at every step of a real update: the agent runs the whole flow (download, verify,
 * A/B install, soft reboot, health check, commit, report) against a stand-in tunnel server and
 * firmware store, and freezes for good at step k — nothing after that step happens, as when the
 * power goes. A fresh agent then starts on the same data directory. Whatever k was, the device
 * must end either completed on the new version or failed on the previous one, with its slots
 * consistent, and the server must have been told exactly that.
 */
import assert from 'node:assert/strict';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { BootEnvironment } from '../../src/agent/ab-installer.ts';
import type { Agent, AgentOptions } from '../../src/agent/agent.ts';
import type { Logger } from '../../src/agent/logger.ts';
import { canTransition } from '../../src/agent/ota-state-machine.ts';
import type { OtaStateFile } from '../../src/agent/ota-state-store.ts';
import type { OtaPhase } from '../../src/protocol/tunnel.ts';
import { fastAgent, resultsFor, updatePayload, withTempDir } from '../helpers/agent-fixtures.ts';
import { makeFirmware, StandInServer } from '../helpers/agent-stand-in-server.ts';

const firmware = makeFirmware(200_000, 3);
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

async function waitUntil(description: string, condition: () => boolean, timeoutMs = 8_000): Promise<void> {
  await server.waitFor(description, condition, timeoutMs);
}

/** Runs one update to the end with a hook that records the steps it passes. */
async function recordSteps(options: Partial<AgentOptions>): Promise<string[]> {
  const steps: string[] = [];
  await withTempDir(async (dataDir) => {
    const deviceId = `dev-cut-record-${++deviceCounter}`;
    const agent = fastAgent(server, { deviceId, dataDir, ...options, stepHook: (step) => void steps.push(step) });
    await agent.start();
    try {
      await sendUpdate(agent, deviceId);
      await waitUntil('acknowledged', () => agent.unacknowledgedResults === 0 && steps.includes('result:acknowledged'));
    } finally {
      await agent.stop();
    }
  });
  return steps;
}

/** Sends the update without waiting for the ack: a cut may come before the ack goes out. */
async function sendUpdate(agent: Agent, deviceId: string): Promise<void> {
  assert.equal(await agent.waitUntilConnected(2_000), true);
  const payload = updatePayload(server, 'cut.bin', firmware, { update_id: 'u-cut', version: '2.0.0' });
  server.sendCommand(deviceId, 'ota_update', payload);
}

/** Every distinct step once, and a second download chunk so a cut lands mid-body too. */
function cutsFor(steps: string[]): Cut[] {
  const distinct = [...new Set(steps)].map((step) => ({ step, occurrence: 1 }));
  if (steps.filter((s) => s === 'download:chunk').length >= 2) distinct.push({ step: 'download:chunk', occurrence: 2 });
  return distinct;
}

async function survivePowerCut(
  options: Partial<AgentOptions>,
  cut: Cut,
  expected: 'completed' | 'failed',
): Promise<void> {
  await withTempDir(async (dataDir) => {
    const deviceId = `dev-cut-${++deviceCounter}`;
    let seen = 0;
    let cutHappened = false;
    const first = fastAgent(server, {
      deviceId,
      dataDir,
      ...options,
      stepHook: (step) => {
        if (step !== cut.step || ++seen !== cut.occurrence) return;
        cutHappened = true;
        // The power is gone: this step, and everything after it, never completes.
        return new Promise<void>(() => {});
      },
    });
    await first.start();
    await sendUpdate(first, deviceId);
    await waitUntil(`the cut at ${cut.step}#${cut.occurrence}`, () => cutHappened);
    await first.powerCut();
    await settle();

    const persisted = JSON.parse(
      await readFile(join(dataDir, 'ota-state.json'), 'utf8').catch(() => '{"job":null}'),
    ) as OtaStateFile;
    const phases: OtaPhase[] = persisted.job ? [persisted.job.phase] : [];
    const second = fastAgent(server, {
      deviceId,
      dataDir,
      ...options,
      stepHook: (step) => {
        if (step.startsWith('phase:')) phases.push(step.slice('phase:'.length) as OtaPhase);
      },
    });
    await second.start();
    try {
      await waitUntil(
        `a reported final state after a cut at ${cut.step}#${cut.occurrence}`,
        () =>
          second.otaState === null &&
          second.unacknowledgedResults === 0 &&
          resultsFor(server, deviceId, 'u-cut').length > 0,
      );
      const results = resultsFor(server, deviceId, 'u-cut');
      const final = results.at(-1)!;
      const environment = JSON.parse(await readFile(join(dataDir, 'boot.json'), 'utf8')) as BootEnvironment;
      const activeMeta = JSON.parse(
        await readFile(join(dataDir, 'slots', environment.active, 'meta.json'), 'utf8').catch(
          () => '{"version":"1.0.0"}',
        ),
      ) as { version: string };

      assert.equal(environment.pending, null, 'no slot is left pending');
      assert.equal(second.currentVersion, activeMeta.version, 'the agent runs what the active slot holds');
      assert.equal(final.current_version, second.currentVersion, 'the report says what the device runs');
      assert.equal(final.status, expected, `cut at ${cut.step}#${cut.occurrence}: ${final.error?.message ?? ''}`);
      if (final.status === 'completed') assert.equal(final.current_version, '2.0.0');
      else assert.equal(final.current_version, '1.0.0', `failed (${final.error?.code}) leaves the previous version`);
      for (const result of results) {
        assert.deepEqual(result, final, 'every copy of the result says the same');
      }
      // The recovery takes only changes the phase table allows, from the phase the cut left on disk.
      if (persisted.job) phases.push(final.status);
      for (const [index, to] of phases.entries()) {
        const from = phases[index - 1];
        if (from !== undefined) assert.ok(canTransition(from, to), `recovery went ${phases.join(' → ')}`);
      }
    } finally {
      await second.stop();
    }
  });
}

describe('power cut at every step of an update', () => {
  it('a healthy update always ends completed on the new version, whichever step lost power', async (t) => {
    const steps = await recordSteps({});
    assert.ok(steps.includes('install:pending-marked') && steps.includes('boot:tries-persisted'), steps.join(' '));
    assert.ok(steps.includes('phase:committing'), 'a cut while committing is among them');
    for (const cut of cutsFor(steps)) {
      await t.test(`power lost at ${cut.step} #${cut.occurrence}`, () => survivePowerCut({}, cut, 'completed'));
    }
  });

  it('an unhealthy update always ends failed on the previous version, whichever step lost power', async (t) => {
    const options = { healthCommand: 'test "$EDGEFLOW_VERSION" != "2.0.0"' };
    const steps = await recordSteps(options);
    assert.ok(steps.includes('phase:reverting') && steps.includes('reverted'), steps.join(' '));
    for (const cut of cutsFor(steps)) {
      await t.test(`power lost at ${cut.step} #${cut.occurrence}`, () => survivePowerCut(options, cut, 'failed'));
    }
  });
});

/** Every log line, to read what the agent said. */
function recordingLogger(): Logger & { lines: { level: string; message: string; fields?: Record<string, unknown> }[] } {
  const lines: { level: string; message: string; fields?: Record<string, unknown> }[] = [];
  const at = (level: string) => (message: string, fields?: Record<string, unknown>) =>
    void lines.push({ level, message, fields });
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

describe('the OTA state file read back after a power cut', () => {
  /** Runs an update until the new image boots on trial and its health check begins, then cuts the power. */
  async function cutDuringTrial(dataDir: string, deviceId: string): Promise<void> {
    let cut = false;
    const first = fastAgent(server, {
      deviceId,
      dataDir,
      stepHook: (step) => {
        if (step !== 'phase:health_checking') return;
        cut = true;
        return new Promise<void>(() => {});
      },
    });
    await first.start();
    await sendUpdate(first, deviceId);
    await waitUntil('the cut during the trial boot', () => cut);
    await first.powerCut();
    await settle();
  }

  const bootEnvironment = async (dataDir: string) =>
    JSON.parse(await readFile(join(dataDir, 'boot.json'), 'utf8')) as BootEnvironment;

  it('a corrupt file is logged and set aside, and the trial boot nobody can confirm is reverted', async () => {
    await withTempDir(async (dataDir) => {
      const deviceId = `dev-state-corrupt-${++deviceCounter}`;
      await cutDuringTrial(dataDir, deviceId);
      assert.notEqual((await bootEnvironment(dataDir)).pending, null, 'the new slot is on trial');
      const statePath = join(dataDir, 'ota-state.json');
      await writeFile(statePath, '{"format_version":1,"job":{"phase":"health_che');

      const logger = recordingLogger();
      const reportedVersions = () =>
        server
          .commandsFrom(deviceId, 'device_info')
          .map((m) => (m.payload as { current_version: string }).current_version);
      const reportedBefore = reportedVersions().length;
      const second = fastAgent(server, { deviceId, dataDir, logger });
      await second.start();
      try {
        await waitUntil('the trial reverted and reported', () => {
          const reported = reportedVersions().slice(reportedBefore);
          return reported.length > 0 && reported.at(-1) === '1.0.0';
        });
        const unusable = logger.lines.filter((line) => /OTA state file unusable/.test(line.message));
        assert.equal(unusable.length, 1, JSON.stringify(logger.lines));
        assert.equal(unusable[0]!.level, 'error');
        assert.match(String(unusable[0]!.fields?.reason), /^not JSON: /);
        assert.equal(
          await readFile(`${statePath}.discarded`, 'utf8'),
          '{"format_version":1,"job":{"phase":"health_che',
        );
        assert.equal((await bootEnvironment(dataDir)).pending, null, 'no slot left pending');
        assert.equal(second.currentVersion, '1.0.0');
        assert.equal(second.otaState, null);
      } finally {
        await second.stop();
      }

      // The next start finds nothing to complain about: no crash loop on the same file.
      const third = fastAgent(server, { deviceId, dataDir, logger });
      await third.start();
      try {
        assert.equal(await third.waitUntilConnected(5_000), true);
        assert.equal(logger.lines.filter((line) => line.level === 'error').length, 1);
        assert.equal(third.currentVersion, '1.0.0');
      } finally {
        await third.stop();
      }
    });
  });

  it('a file of the format before format_version is read, and the update it holds completes', async () => {
    await withTempDir(async (dataDir) => {
      const deviceId = `dev-state-format0-${++deviceCounter}`;
      await cutDuringTrial(dataDir, deviceId);
      const statePath = join(dataDir, 'ota-state.json');
      const { format_version, ...formatZero } = JSON.parse(await readFile(statePath, 'utf8')) as OtaStateFile;
      assert.equal(format_version, 1);
      assert.equal(formatZero.job?.phase, 'health_checking');
      await writeFile(statePath, JSON.stringify(formatZero));

      const logger = recordingLogger();
      const second = fastAgent(server, { deviceId, dataDir, logger });
      await second.start();
      try {
        await waitUntil(
          'the update completed',
          () => second.unacknowledgedResults === 0 && resultsFor(server, deviceId, 'u-cut').length > 0,
        );
        assert.equal(resultsFor(server, deviceId, 'u-cut').at(-1)?.status, 'completed');
        assert.equal(second.currentVersion, '2.0.0');
        assert.ok(logger.lines.some((line) => line.message === 'OTA state file migrated' && line.fields?.from === 0));
        assert.equal(logger.lines.filter((line) => line.level === 'error').length, 0, JSON.stringify(logger.lines));
        const rewritten = JSON.parse(await readFile(statePath, 'utf8')) as OtaStateFile;
        assert.equal(rewritten.format_version, 1);
        await assert.rejects(stat(`${statePath}.discarded`), { code: 'ENOENT' });
      } finally {
        await second.stop();
      }
    });
  });
});
