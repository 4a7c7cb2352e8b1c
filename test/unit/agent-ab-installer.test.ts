import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { AbInstaller, type BootEnvironment } from '../../src/agent/ab-installer.ts';
import { withTempDir } from '../helpers/agent-fixtures.ts';

async function imageFile(dir: string, content: string): Promise<string> {
  const path = join(dir, `${content}.bin`);
  await writeFile(path, content);
  return path;
}

async function bootEnvironment(dataDir: string): Promise<BootEnvironment> {
  return JSON.parse(await readFile(join(dataDir, 'boot.json'), 'utf8')) as BootEnvironment;
}

describe('A/B installer', () => {
  it('runs the factory version from slot A before any install', async () => {
    await withTempDir(async (dir) => {
      const installer = new AbInstaller({ dataDir: dir, initialVersion: '1.0.0' });
      assert.deepEqual(await installer.boot(), { kind: 'normal', version: '1.0.0' });
      assert.equal(installer.currentVersion(), '1.0.0');
    });
  });

  it('writes the inactive slot, boots it on trial, and commit makes it the active one', async () => {
    await withTempDir(async (dir) => {
      const installer = new AbInstaller({ dataDir: dir, initialVersion: '1.0.0' });
      await installer.boot();
      await installer.install({ version: '2.0.0', sha256: 'x', filePath: await imageFile(dir, 'v2') });
      assert.equal(await readFile(join(dir, 'slots/b/firmware.bin'), 'utf8'), 'v2');
      assert.deepEqual(JSON.parse(await readFile(join(dir, 'slots/b/meta.json'), 'utf8')), {
        version: '2.0.0',
        sha256: 'x',
      });
      assert.equal(installer.currentVersion(), '1.0.0', 'an installed image does not run before the reboot');

      const rebooted = new AbInstaller({ dataDir: dir, initialVersion: '1.0.0' });
      assert.deepEqual(await rebooted.boot(), { kind: 'trial', version: '2.0.0', previousVersion: '1.0.0' });
      assert.equal((await bootEnvironment(dir)).tries, 1, 'the attempt is counted before the image is tried');
      await rebooted.commit();
      assert.deepEqual(await bootEnvironment(dir), { active: 'b', pending: null, tries: 0, maxTries: 3 });

      const later = new AbInstaller({ dataDir: dir, initialVersion: '1.0.0' });
      assert.deepEqual(await later.boot(), { kind: 'normal', version: '2.0.0' });
    });
  });

  it('revert of a trial boot brings back the previous slot and version', async () => {
    await withTempDir(async (dir) => {
      const installer = new AbInstaller({ dataDir: dir, initialVersion: '1.0.0' });
      await installer.boot();
      await installer.install({ version: '2.0.0', sha256: 'x', filePath: await imageFile(dir, 'v2') });
      const trial = new AbInstaller({ dataDir: dir, initialVersion: '1.0.0' });
      await trial.boot();
      assert.equal(trial.currentVersion(), '2.0.0');
      await trial.revert();
      assert.equal(trial.currentVersion(), '1.0.0');
      assert.deepEqual(await new AbInstaller({ dataDir: dir, initialVersion: '1.0.0' }).boot(), {
        kind: 'normal',
        version: '1.0.0',
      });
    });
  });

  it('falls back to the active slot once the pending one used up maxTries boots', async () => {
    await withTempDir(async (dir) => {
      const first = new AbInstaller({ dataDir: dir, initialVersion: '1.0.0', maxTries: 2 });
      await first.boot();
      await first.install({ version: '2.0.0', sha256: 'x', filePath: await imageFile(dir, 'v2') });
      // Each boot hangs before confirming: only the persisted counter moves.
      const kinds: string[] = [];
      for (let boot = 0; boot < 3; boot++) {
        kinds.push((await new AbInstaller({ dataDir: dir, initialVersion: '1.0.0', maxTries: 2 }).boot()).kind);
      }
      assert.deepEqual(kinds, ['trial', 'trial', 'reverted']);
      assert.deepEqual(await bootEnvironment(dir), { active: 'a', pending: null, tries: 0, maxTries: 2 });
    });
  });

  it('installs into the other slot each time, never over the running one', async () => {
    await withTempDir(async (dir) => {
      let installer = new AbInstaller({ dataDir: dir, initialVersion: '1.0.0' });
      await installer.boot();
      for (const [version, slot] of [
        ['2.0.0', 'b'],
        ['3.0.0', 'a'],
        ['4.0.0', 'b'],
      ] as const) {
        await installer.install({ version, sha256: 'x', filePath: await imageFile(dir, version) });
        assert.equal((await bootEnvironment(dir)).pending, slot);
        installer = new AbInstaller({ dataDir: dir, initialVersion: '1.0.0' });
        await installer.boot();
        await installer.commit();
        assert.equal(installer.currentVersion(), version);
      }
    });
  });
});
