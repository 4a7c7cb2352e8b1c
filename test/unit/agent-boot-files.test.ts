/**
 * The boot-loader files the package ships besides the scripts (those run in
 * test/unit/agent-grub-script.test.ts and, interpreted, in every U-Boot test through
 * test/helpers/boot-media.ts): the example fw_env.config must put both environment copies in the
 * gap before the first partition (4 MiB on Raspberry Pi OS and wic images), and libubootenv must
 * read and write a redundant environment there — on a file standing in for /dev/mmcblk0 — without
 * touching a byte of partition 1. And the U-Boot boot script, through the hush interpreter of
 * test/helpers/uboot-script.ts (no U-Boot runs here), at every documented boot limit.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { UBootEnvironment } from '../../src/agent/boot-environment.ts';
import { bootCmdPath, initialEnvironmentPath } from '../helpers/boot-media.ts';
import { runUBootScript } from '../helpers/uboot-script.ts';

const exec = promisify(execFile);
const shipped = fileURLToPath(new URL('../../packaging/boot/fw_env.config', import.meta.url));
const partitionOneOffset = 0x400000;

describe('the shipped fw_env.config', () => {
  it('puts both copies before partition 1, and libubootenv uses them without touching it', async () => {
    const lines = (await readFile(shipped, 'utf8')).split('\n').filter((line) => line.trim() && !line.startsWith('#'));
    const copies = lines.map((line) => {
      const [device, offset, size] = line.trim().split(/\s+/);
      return { device: device!, offset: Number(offset), size: Number(size) };
    });
    assert.equal(copies.length, 2, 'a redundant environment');
    for (const copy of copies) {
      assert.equal(copy.device, '/dev/mmcblk0');
      assert.ok(copy.offset + copy.size <= partitionOneOffset, `0x${copy.offset.toString(16)} ends before 4 MiB`);
    }
    assert.ok(copies[0]!.offset + copies[0]!.size <= copies[1]!.offset, 'the copies do not overlap');

    const dir = await mkdtemp(join(tmpdir(), 'edgeflow-fwenv-'));
    try {
      // The card: the gap, then 1 MiB of partition 1 whose bytes must survive.
      const card = join(dir, 'mmcblk0');
      const partitionOne = randomBytes(1024 * 1024);
      await writeFile(card, Buffer.concat([Buffer.alloc(partitionOneOffset), partitionOne]));
      const handle = await open(card, 'r+');
      try {
        for (const copy of copies) {
          const image = join(dir, `env-${copy.offset}.bin`);
          await exec('mkenvimage', ['-r', '-s', String(copy.size), '-o', image, initialEnvironmentPath]);
          await handle.write(await readFile(image), 0, copy.size, copy.offset);
        }
      } finally {
        await handle.close();
      }
      const config = join(dir, 'fw_env.config');
      await writeFile(config, (await readFile(shipped, 'utf8')).replaceAll('/dev/mmcblk0', card));
      const environment = new UBootEnvironment(config);
      assert.equal((await environment.read()).get('edgeflow_slot'), 'a');
      for (let i = 0; i < 3; i++) await environment.update({ edgeflow_slot: i % 2 ? 'a' : 'b', bootcount: String(i) });
      assert.equal((await environment.read()).get('edgeflow_slot'), 'b');
      const after = (await readFile(card)).subarray(partitionOneOffset);
      const hash = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
      assert.equal(hash(after), hash(partitionOne), 'partition 1 untouched');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('the shipped boot.cmd, interpreted against a real U-Boot environment', () => {
  const board = {
    partUuids: { 'mmc 0:2': '0ac0ffee-02', 'mmc 0:3': '0ac0ffee-03' },
    builtins: { kernel_addr_r: '0x80000', fdt_addr: '0x2eff2e00' },
  };

  async function withEnvironment(run: (environment: UBootEnvironment) => Promise<void>) {
    const dir = await mkdtemp(join(tmpdir(), 'edgeflow-bootcmd-'));
    try {
      const copies = [join(dir, 'env-0.bin'), join(dir, 'env-1.bin')];
      for (const copy of copies) await exec('mkenvimage', ['-r', '-s', '0x4000', '-o', copy, initialEnvironmentPath]);
      await writeFile(join(dir, 'fw_env.config'), copies.map((copy) => `${copy} 0x0 0x4000\n`).join(''));
      await run(new UBootEnvironment(join(dir, 'fw_env.config')));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  it('boots slot A of a fresh image by PARTUUID, passing the slot, and writes nothing', async () => {
    await withEnvironment(async (environment) => {
      const run = await runUBootScript(await readFile(bootCmdPath, 'utf8'), environment, board);
      assert.match(run.bootargs ?? '', /root=PARTUUID=0ac0ffee-02 rootwait ro edgeflow\.slot=a$/);
      assert.deepEqual(run.loads, ['mmc 0:2 /boot/Image']);
      assert.equal(run.saves, 0, 'a normal boot does not wear the flash');
      const noUuids = await runUBootScript(await readFile(bootCmdPath, 'utf8'), environment, {
        ...board,
        partUuids: {},
      });
      assert.match(noUuids.bootargs ?? '', /root=\/dev\/mmcblk0p2 /, 'without a PARTUUID, the kernel name');
    });
  });

  for (let bootLimit = 1; bootLimit <= 9; bootLimit++) {
    it(`bootlimit ${bootLimit}: ${bootLimit} trial boots of slot B, then back to slot A`, async () => {
      await withEnvironment(async (environment) => {
        await environment.update({
          edgeflow_slot: 'b',
          upgrade_available: '1',
          bootcount: '0',
          bootlimit: String(bootLimit),
        });
        const script = await readFile(bootCmdPath, 'utf8');
        for (let boot = 1; boot <= bootLimit; boot++) {
          const run = await runUBootScript(script, environment, board);
          assert.match(run.bootargs ?? '', /edgeflow\.slot=b$/, `trial boot ${boot}`);
          assert.equal((await environment.read()).get('bootcount'), String(boot));
        }
        const fallback = await runUBootScript(script, environment, board);
        assert.match(fallback.bootargs ?? '', /root=PARTUUID=0ac0ffee-02 .*edgeflow\.slot=a$/);
        const variables = await environment.read();
        assert.equal(variables.get('edgeflow_slot'), 'a');
        assert.equal(variables.get('upgrade_available'), '0');
        assert.equal(variables.get('bootcount'), '0');
      });
    });
  }
});
