/**
 * The script installer's contract (docs/devices.md, section 6) against a real shell script, and
 * the health check as the agent runs it: exit status, the environment it gets, its timeout.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Agent } from '../../src/agent/agent.ts';
import { kernelBootIdentity } from '../../src/agent/boot-identity.ts';
import { silentLogger } from '../../src/agent/logger.ts';
import { ScriptInstaller } from '../../src/agent/script-installer.ts';
import { withTempDir } from '../helpers/agent-fixtures.ts';

/** A two-"slot" layout in files, following the contract; `revert` on trial asks for a reboot. */
const script = (dir: string) => `#!/bin/sh
set -eu
D='${dir}'
echo "$*" >> "$D/calls"
case "$1" in
  current-version) cat "$D/running" ;;
  install) cp "$2" "$D/next.img"; echo "$3" > "$D/next" ;;
  commit) [ -f "$D/next" ] && mv "$D/next" "$D/committed"; true ;;
  revert) rm -f "$D/next"; if [ -f "$D/on-trial" ]; then echo "switching back"; echo reboot; fi ;;
  *) echo "unknown $1" >&2; exit 64 ;;
esac
`;

/**
 * The script in `dir`, running 1.0.0, an image to install, and the "kernel" of the test
 * machine: its boot id, renewed by `reboot`.
 */
async function scriptDevice(dir: string) {
  const path = join(dir, 'install.sh');
  await writeFile(path, script(dir));
  await chmod(path, 0o755);
  await writeFile(join(dir, 'running'), '1.0.0\n');
  await writeFile(join(dir, 'image.bin'), 'new image');
  const bootIdFile = join(dir, 'boot_id');
  const reboot = () => writeFile(bootIdFile, `${randomUUID()}\n`);
  await reboot();
  const bootIdentity = kernelBootIdentity({ bootIdFile, cmdlineFile: join(dir, 'cmdline') });
  return { path, image: join(dir, 'image.bin'), bootIdentity, reboot };
}

describe('script installer contract', () => {
  it('calls install <file> <version>, reads current-version, and takes "reboot" on revert as a reboot request', async () => {
    await withTempDir(async (dir) => {
      const { path, bootIdentity, reboot } = await scriptDevice(dir);
      const installer = new ScriptInstaller({ installScript: path, dataDir: dir, bootIdentity });
      assert.deepEqual(await installer.boot(), { kind: 'normal', version: '1.0.0' });
      await installer.install({ version: '2.0.0', sha256: 'x', filePath: join(dir, 'image.bin') });
      assert.equal(await readFile(join(dir, 'next.img'), 'utf8'), 'new image');

      // "Reboot": the device now runs 2.0.0 on trial.
      await reboot();
      await writeFile(join(dir, 'running'), '2.0.0\n');
      await writeFile(join(dir, 'on-trial'), '');
      assert.deepEqual(await installer.boot(), { kind: 'trial', version: '2.0.0', previousVersion: '1.0.0' });
      assert.equal(await installer.revert(), 'reboot', 'the last line "reboot" asks for a reboot');
      await writeFile(join(dir, 'on-trial'), '');
      const calls = (await readFile(join(dir, 'calls'), 'utf8')).trim().split('\n');
      assert.deepEqual(calls, [
        'current-version',
        `install ${join(dir, 'image.bin')} 2.0.0`,
        'current-version',
        'revert',
        'current-version',
      ]);
    });
  });

  it('calls revert when the agent restarts after install and the machine did not reboot', async () => {
    await withTempDir(async (dir) => {
      const { path, bootIdentity, reboot } = await scriptDevice(dir);
      const installer = new ScriptInstaller({ installScript: path, dataDir: dir, bootIdentity });
      await installer.boot();
      await installer.install({ version: '2.0.0', sha256: 'x', filePath: join(dir, 'image.bin') });
      assert.equal(await readFile(join(dir, 'next'), 'utf8'), '2.0.0\n', 'armed for the next boot');

      // The agent process restarts (crash, systemctl restart); same boot id: no reboot happened.
      const restarted = new ScriptInstaller({ installScript: path, dataDir: dir, bootIdentity });
      assert.deepEqual(await restarted.boot(), { kind: 'reverted', version: '1.0.0', abandonedVersion: '2.0.0' });
      await assert.rejects(readFile(join(dir, 'next'), 'utf8'), /ENOENT/, 'revert disarmed the image');
      assert.match(await readFile(join(dir, 'calls'), 'utf8'), /^revert$/m);

      // The next unrelated reboot finds nothing armed and nothing pending.
      await reboot();
      const later = new ScriptInstaller({ installScript: path, dataDir: dir, bootIdentity });
      assert.deepEqual(await later.boot(), { kind: 'normal', version: '1.0.0' });
    });
  });

  it('counts a trial once per boot, not once per agent start', async () => {
    await withTempDir(async (dir) => {
      const { path, bootIdentity, reboot } = await scriptDevice(dir);
      const options = { installScript: path, dataDir: dir, bootIdentity, maxTries: 1 };
      await new ScriptInstaller(options).boot();
      await new ScriptInstaller(options).install({ version: '2.0.0', sha256: 'x', filePath: join(dir, 'image.bin') });
      await reboot();
      await writeFile(join(dir, 'running'), '2.0.0\n');
      assert.equal((await new ScriptInstaller(options).boot()).kind, 'trial');
      // The agent restarts during the health check of the same boot: still the first try.
      assert.equal((await new ScriptInstaller(options).boot()).kind, 'trial');
      await reboot();
      assert.equal((await new ScriptInstaller(options).boot()).kind, 'reverted', 'a second boot is past maxTries 1');
    });
  });

  it('a revert that prints nothing needs no reboot; a failing step throws with its stderr', async () => {
    await withTempDir(async (dir) => {
      const { path } = await scriptDevice(dir);
      const installer = new ScriptInstaller({ installScript: path, dataDir: dir });
      await installer.boot();
      assert.equal(await installer.revert(), 'done');
      await assert.rejects(
        installer.install({ version: '2.0.0', sha256: 'x', filePath: join(dir, 'missing.bin') }),
        /install exited with 1/,
      );
    });
  });
});

describe('health check', () => {
  const agent = (healthCommand: string | undefined, healthTimeoutMs?: number) =>
    new Agent({
      server: 'ws://127.0.0.1:9',
      deviceId: 'dev-health',
      apiKey: 'k',
      storage: 'memory',
      allowInsecure: true,
      initialVersion: '1.2.3',
      healthCommand,
      healthTimeoutMs,
      logger: silentLogger,
    });

  it('passes on exit 0 with EDGEFLOW_VERSION set to the running version, fails with the exit status and stderr', async () => {
    assert.equal((await agent('test "$EDGEFLOW_VERSION" = 1.2.3').runHealthCheck()).healthy, true);
    const failed = await agent('echo "disk full" >&2; exit 3').runHealthCheck();
    assert.equal(failed.healthy, false);
    assert.match(failed.message, /exited with 3 disk full/);
    assert.equal((await agent(undefined).runHealthCheck()).healthy, true, 'no command configured');
  });

  it('kills a health check that outlives its timeout and counts it as failed', async () => {
    const started = Date.now();
    const verdict = await agent('sleep 30', 300).runHealthCheck('9.9.9');
    assert.equal(verdict.healthy, false);
    assert.match(verdict.message, /timed out/);
    assert.ok(Date.now() - started < 20_000, 'did not wait for the command to finish');
  });
});
