/**
 * Storage faults on a real small filesystem: the local store on a 2 MiB tmpfs the test mounts
 * (skipped, saying so, where mounting is not permitted). A full disk answers 507 storage_full,
 * a read-only store 503 storage_unavailable, never 500, and leaves nothing; /readyz fails on
 * both and under the free-space floor; a delete the store refuses keeps the firmware whole.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { downloadSha256, makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
import {
  backendsUnderTest,
  type PersistentState,
  persistentState,
  startTestServer,
  stopSharedServices,
  type TestServer,
} from '../helpers/server.ts';

const run = promisify(execFile);
const TMPFS_BYTES = 2 * 1024 * 1024;

/** Mounts a tmpfs of `bytes` on a fresh directory; undefined (with the reason) where that is not permitted. */
async function mountTmpfs(
  bytes: number,
): Promise<{ dir: string; remount(mode: 'ro' | 'rw'): Promise<void>; unmount(): Promise<void> } | string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'edgeflow-tmpfs-'));
  try {
    await run('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', dir]);
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    return `cannot mount a tmpfs here (${(error as Error).message.split('\n')[0]}); run as root to test storage faults`;
  }
  return {
    dir,
    remount: async (mode) => {
      await run('mount', ['-o', `remount,${mode}`, dir]);
    },
    async unmount() {
      await run('umount', [dir]).catch(() => run('umount', ['-l', dir]));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

// The store under test is the local one; the database is whichever the backends name.
const backends = (await backendsUnderTest()).filter((backend) => backend.store === 'local');
after(stopSharedServices);

for (const backend of backends) {
  describe(`storage faults of the local store on ${backend.name}`, () => {
    let mount: Exclude<Awaited<ReturnType<typeof mountTmpfs>>, string> | undefined;
    let skipReason: string | undefined;
    let state: PersistentState;
    let server: TestServer;
    let org: { id: string; adminKey: string };

    before(async () => {
      const mounted = await mountTmpfs(TMPFS_BYTES);
      if (typeof mounted === 'string') {
        skipReason = mounted;
        console.warn(`\n*** ${mounted} ***\n`);
        return;
      }
      mount = mounted;
      state = persistentState();
      state.storeDir = path.join(mount.dir, 'store');
      await mkdir(state.storeDir);
      server = await startTestServer(backend, {
        state,
        env: {
          EDGEFLOW_FIRMWARE_MAX_BYTES: String(16 * 1024 * 1024),
          EDGEFLOW_STORE_MIN_FREE_BYTES: String(1024 * 1024),
        },
      });
      org = await server.createOrg('faults');
    });
    after(async () => {
      if (!mount) return;
      await mount.remount('rw').catch(() => {});
      await server?.close();
      state.storeDir = undefined; // on the mount, removed with it
      await state.dispose();
      await mount.unmount();
    });

    async function rows(): Promise<string[]> {
      const found = await server.db.query<{ version: string }>(
        'SELECT version FROM firmware WHERE organization_id = $1 ORDER BY version',
        [org.id],
      );
      return found.map((row) => row.version);
    }
    async function staged(): Promise<string[]> {
      return (await server.store.listKeys('')).filter((key) => key.includes('staging'));
    }
    async function readyz() {
      return server.api<{ status: string; store: string }>('GET', '/readyz', undefined);
    }

    it('is ready with room above the floor, and not ready once free space falls below it', async (t) => {
      if (skipReason) return t.skip(skipReason);
      const ready = await readyz();
      assert.equal(ready.status, 200, JSON.stringify(ready.body));
      const file = await makeFirmwareFile(1536 * 1024);
      const upload = await postFirmware(server.url, org.adminKey, { version: '1.0.0', sha256: file.sha256 }, file);
      assert.equal(upload.status, 201, JSON.stringify(upload.body));
      const low = await readyz();
      assert.equal(low.status, 503);
      assert.match(low.body.store, /^full: \d+ bytes free, below the floor of 1048576/);
    });

    it('answers an upload that does not fit 507 storage_full and keeps nothing of it', async (t) => {
      if (skipReason) return t.skip(skipReason);
      const file = await makeFirmwareFile(1024 * 1024);
      const upload = await postFirmware(server.url, org.adminKey, { version: '1.1.0', sha256: file.sha256 }, file);
      assert.equal(upload.status, 507, JSON.stringify(upload.body));
      assert.equal(upload.body.error?.code, 'storage_full');
      assert.deepEqual(await rows(), ['1.0.0']);
      assert.deepEqual(await staged(), []);
      assert.equal((await server.api('GET', '/healthz', undefined)).status, 200);
    });

    it('answers 503 storage_unavailable on a read-only store, keeps the firmware a refused delete names, and deletes it once writable', async (t) => {
      if (skipReason) return t.skip(skipReason);
      const stored = await server.api<{ storage_key: string }>('GET', '/api/v1/firmware/1.0.0', org.adminKey);
      assert.equal(stored.status, 200);
      await mount!.remount('ro');
      try {
        const small = await makeFirmwareFile(64 * 1024);
        const upload = await postFirmware(server.url, org.adminKey, { version: '1.2.0', sha256: small.sha256 }, small);
        assert.equal(upload.status, 503, JSON.stringify(upload.body));
        assert.equal(upload.body.error?.code, 'storage_unavailable');

        const notReady = await readyz();
        assert.equal(notReady.status, 503);
        assert.match(notReady.body.store, /^unavailable: .*(EROFS|read-only)/i);

        const refused = await server.api<{ error: { code: string } }>('DELETE', '/api/v1/firmware/1.0.0', org.adminKey);
        assert.equal(refused.status, 503, JSON.stringify(refused.body));
        assert.equal(refused.body.error.code, 'storage_unavailable');
        assert.deepEqual(await rows(), ['1.0.0'], 'the row stays when the blob cannot go');
        assert.equal(await server.store.exists(stored.body.storage_key), true);
        const link = await server.api<{ url: string }>('POST', '/api/v1/firmware/1.0.0/download-url', org.adminKey);
        assert.equal((await downloadSha256(link.body.url)).status, 200, 'the firmware is still whole');
      } finally {
        await mount!.remount('rw');
      }
      const deleted = await server.api('DELETE', '/api/v1/firmware/1.0.0', org.adminKey);
      assert.equal(deleted.status, 204);
      assert.deepEqual(await rows(), []);
      assert.equal(await server.store.exists(stored.body.storage_key), false);
      assert.equal((await readyz()).status, 200, 'ready again with room and a writable store');
    });

    it('answers 503 storage_unavailable when the store directory denies writes', async (t) => {
      if (skipReason) return t.skip(skipReason);
      if (process.getuid?.() === 0)
        return t.skip('running as root: permissions do not deny root (the read-only case covers it)');
      await chmod(state.storeDir!, 0o500);
      try {
        const small = await makeFirmwareFile(64 * 1024);
        const upload = await postFirmware(server.url, org.adminKey, { version: '1.3.0', sha256: small.sha256 }, small);
        assert.equal(upload.status, 503, JSON.stringify(upload.body));
        assert.equal(upload.body.error?.code, 'storage_unavailable');
        assert.equal((await readyz()).status, 503);
      } finally {
        await chmod(state.storeDir!, 0o700);
      }
    });
  });
}
