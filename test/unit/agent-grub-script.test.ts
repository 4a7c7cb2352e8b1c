/**
 * The GRUB script the package ships (packaging/boot/05_edgeflow, an /etc/grub.d script) run by
 * GRUB itself: grub-mkconfig's part is the script printing its fragment (from a real
 * agent.json), and GRUB's part is grub-emu (GRUB's own interpreter, built for the host) running
 * that fragment at every "power-on" against a real environment block that the agent's
 * GrubEnvironment (grub-editenv) armed. The block lives on a small ext2 image (mke2fs -d, read
 * back with debugfs), because GRUB's save_env writes through the file system's block list, which
 * grub-emu's (host) file access has none of. For every documented boot limit (1 to 9), the
 * trial slot boots exactly `bootlimit` times, and the next power-on boots the other slot with
 * the trial cleared.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { GrubEnvironment } from '../../src/agent/boot-environment.ts';
import { BootVariables } from '../../src/agent/bootloader-installer.ts';

const run = promisify(execFile);
const script = fileURLToPath(new URL('../../packaging/boot/05_edgeflow', import.meta.url));

describe('the shipped GRUB script in grub-emu', () => {
  let dir: string;
  let fragment: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgeflow-grub-emu-'));
    const config = join(dir, 'agent.json');
    await writeFile(config, JSON.stringify({ installer: 'grub', slot_a: '/dev/sda2', slot_b: '/dev/sda3' }));
    // What update-grub runs; the partitions are named for it, since there are none to probe here.
    const generated = await run('sh', [script], {
      env: {
        ...process.env,
        EDGEFLOW_AGENT_CONFIG: config,
        EDGEFLOW_GRUB_DRIVE_A: '(hd0,gpt2)',
        EDGEFLOW_GRUB_DRIVE_B: '(hd0,gpt3)',
        EDGEFLOW_ROOT_A: 'PARTUUID=0ac0ffee-02',
        EDGEFLOW_ROOT_B: 'PARTUUID=0ac0ffee-03',
      },
    });
    fragment = generated.stdout;
    await writeFile(join(dir, 'fragment.cfg'), fragment);
    await run('grub-script-check', [join(dir, 'fragment.cfg')]);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('prints entries naming each slot by its partition, with edgeflow.slot on the command line', () => {
    assert.match(fragment, /linux \(hd0,gpt2\)\/vmlinuz root=PARTUUID=0ac0ffee-02 ro edgeflow\.slot=a/);
    assert.match(fragment, /linux \(hd0,gpt3\)\/vmlinuz root=PARTUUID=0ac0ffee-03 ro edgeflow\.slot=b/);
    assert.doesNotMatch(fragment, /search/, 'no marker-file search: both slots hold the same image');
  });

  it('prints nothing, and says why, without slots in agent.json', async () => {
    const empty = join(dir, 'empty.json');
    await writeFile(empty, '{"installer": "rauc"}');
    const result = await run('sh', [script], { env: { ...process.env, EDGEFLOW_AGENT_CONFIG: empty } });
    assert.equal(result.stdout, '');
    assert.match(result.stderr, /no slot_a and slot_b/);
  });

  /** One power-on: GRUB runs the fragment; answers the entry it would boot and the block after it. */
  async function powerOn(work: string): Promise<{ entry: string; variables: Map<string, string> }> {
    const cfg = `set prefix=(hd0)\n${fragment}\necho "EDGEFLOW-DEFAULT \${default}"\nhalt\n`;
    await writeFile(join(work, 'grub.cfg'), cfg);
    const emu = await run('grub-emu', ['-d', work, '-m', join(work, 'device.map')], { timeout: 30_000 });
    const entry = /EDGEFLOW-DEFAULT (\S+)/.exec(emu.stdout)?.[1];
    assert.ok(entry, `grub-emu printed no default entry: ${emu.stdout}${emu.stderr}`);
    assert.doesNotMatch(emu.stdout, /error:/, emu.stdout);
    const copy = join(work, 'grubenv.read');
    await rm(copy, { force: true });
    await run('debugfs', ['-R', `dump /grubenv ${copy}`, join(work, 'env.img')]);
    return { entry, variables: await new GrubEnvironment(copy).read() };
  }

  for (let bootLimit = 1; bootLimit <= 9; bootLimit++) {
    it(`bootlimit ${bootLimit}: ${bootLimit} trial boots of slot B, then back to slot A`, async () => {
      const work = join(dir, `limit-${bootLimit}`);
      await mkdir(join(work, 'env'), { recursive: true });
      // The block as the agent leaves it after installing to slot B (BootloaderInstaller.install).
      const block = join(work, 'env', 'grubenv');
      await run('grub-editenv', [block, 'create']);
      await new GrubEnvironment(block).update({
        [BootVariables.slot]: 'b',
        [BootVariables.trialSlot]: 'b',
        [BootVariables.upgradeAvailable]: '1',
        [BootVariables.bootCount]: '0',
        [BootVariables.bootLimit]: String(bootLimit),
      });
      await run('mke2fs', ['-q', '-t', 'ext2', '-d', join(work, 'env'), join(work, 'env.img'), '1M']);
      await writeFile(join(work, 'device.map'), `(hd0) ${join(work, 'env.img')}\n`);

      for (let boot = 1; boot <= bootLimit; boot++) {
        const { entry, variables } = await powerOn(work);
        assert.equal(entry, 'edgeflow-b', `trial boot ${boot}`);
        assert.equal(variables.get('bootcount'), String(boot));
        assert.equal(variables.get('upgrade_available'), '1');
      }
      const fallback = await powerOn(work);
      assert.equal(fallback.entry, 'edgeflow-a', `boot ${bootLimit + 1} falls back`);
      assert.equal(fallback.variables.get('edgeflow_slot'), 'a');
      assert.equal(fallback.variables.get('upgrade_available'), '0');
      assert.equal(fallback.variables.get('bootcount'), '0');
      const after = await powerOn(work);
      assert.equal(after.entry, 'edgeflow-a', 'and stays there');
      assert.equal(after.variables.get('bootcount'), '0');
    });
  }
});
