/**
 * The script installer's contract (docs/devices.md, section 6) against a real shell script, and
 * the health check as the agent runs it: exit status, the environment it gets, its timeout.
 */
import assert from 'node:assert/strict';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Agent } from '../../src/agent/agent.ts';
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

describe('script installer contract', () => {
  it('calls install <file> <version>, reads current-version, and takes "reboot" on revert as a reboot request', async () => {
    await withTempDir(async (dir) => {
      const path = join(dir, 'install.sh');
      await writeFile(path, script(dir));
      await chmod(path, 0o755);
      await writeFile(join(dir, 'running'), '1.0.0\n');
      await writeFile(join(dir, 'image.bin'), 'new image');
      const installer = new ScriptInstaller({ installScript: path, dataDir: dir });
      assert.deepEqual(await installer.boot(), { kind: 'normal', version: '1.0.0' });
      await installer.install({ version: '2.0.0', sha256: 'x', filePath: join(dir, 'image.bin') });
      assert.equal(await readFile(join(dir, 'next.img'), 'utf8'), 'new image');

      // "Reboot": the device now runs 2.0.0 on trial.
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

  it('a revert that prints nothing needs no reboot; a failing step throws with its stderr', async () => {
    await withTempDir(async (dir) => {
      const path = join(dir, 'install.sh');
      await writeFile(path, script(dir));
      await chmod(path, 0o755);
      await writeFile(join(dir, 'running'), '1.0.0\n');
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
