/**
 * Signed SWUpdate images for the tests: a .swu (sw-description signed with `openssl cms`, a cpio
 * archive) with one selection per slot (`stable,copy-a` / `stable,copy-b`) writing the image raw
 * to that slot's partition of test boot media.
 */
import { execFile } from 'node:child_process';
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { BootMedia } from './boot-media.ts';
import { sha256Of as sha256 } from './firmware.ts';

const run = promisify(execFile);

/** Why SWUpdate cannot run here, or undefined when it can. */
export async function swupdateUnavailable(): Promise<string | undefined> {
  for (const command of ['swupdate', 'openssl', 'cpio', 'fw_setenv']) {
    try {
      await run('sh', ['-c', `command -v ${command}`]);
    } catch {
      return `${command} is not installed`;
    }
  }
  return undefined;
}

/** A signed .swu writing `image` raw to slot A's or slot B's partition, by selection. */
export async function buildSwu(media: BootMedia, version: string, image: Buffer): Promise<Buffer> {
  const dir = media.dir;
  await run('openssl', [
    ...['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=edgeflow-test'],
    ...['-keyout', join(dir, 'swu-key.pem'), '-out', join(dir, 'swu-cert.pem')],
    ...['-addext', 'extendedKeyUsage=emailProtection'],
  ]);
  await writeFile(join(dir, 'rootfs.ext4'), image);
  // The example the package ships, with this version, this image's hash and these partitions.
  const template = await readFile(
    fileURLToPath(new URL('../../packaging/sw-description.example', import.meta.url)),
    'utf8',
  );
  await writeFile(
    join(dir, 'sw-description'),
    template
      .replace(/version = "[^"]*"/, `version = "${version}"`)
      .replaceAll('@SHA256@', sha256(image))
      .replaceAll('/dev/mmcblk0p2', media.slots.a)
      .replaceAll('/dev/mmcblk0p3', media.slots.b),
  );
  await run('openssl', [
    ...['cms', '-sign', '-in', join(dir, 'sw-description'), '-out', join(dir, 'sw-description.sig')],
    ...['-signer', join(dir, 'swu-cert.pem'), '-inkey', join(dir, 'swu-key.pem')],
    ...['-outform', 'DER', '-nosmimecap', '-binary'],
  ]);
  // sw-description first, its signature second: SWUpdate reads the archive as a stream.
  await run('sh', [
    '-c',
    `cd '${dir}' && printf 'sw-description\\nsw-description.sig\\nrootfs.ext4\\n' | cpio -o -H crc --quiet > update.swu`,
  ]);
  return readFile(join(dir, 'update.swu'));
}

const lockFile = join(tmpdir(), 'edgeflow-test-swupdate.lock');

/**
 * SWUpdate's control sockets have fixed paths (/tmp/sockinstctrl, /tmp/swupdateprog): two runs at
 * once, from test files the runner runs in parallel, talk to each other. A test that makes the
 * agent run swupdate holds this lock (a file created exclusively; a holder that died leaves a
 * stale one, taken over after two minutes).
 */
export async function withSwupdateLock<T>(run: () => Promise<T>): Promise<T> {
  const release = await acquireSwupdateLock();
  try {
    return await run();
  } finally {
    await release();
  }
}

/** The same lock, for a whole suite (taken in `before`, released in `after`). */
export async function acquireSwupdateLock(): Promise<() => Promise<void>> {
  for (;;) {
    try {
      await writeFile(lockFile, String(process.pid), { flag: 'wx' });
      break;
    } catch {
      const age = Date.now() - ((await stat(lockFile).catch(() => undefined))?.mtimeMs ?? Date.now());
      if (age > 120_000) await rm(lockFile, { force: true });
      else await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  return () => rm(lockFile, { force: true });
}
