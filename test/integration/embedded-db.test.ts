/**
 * The embedded database (PGlite in a data directory) as `serve` opens it: created on the first
 * start without keeping initdb's memory, small-instance settings, data kept across reopening.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { openDb } from '../../src/server/infra/db.ts';

const MiB = 1024 * 1024;

describe('embedded database', () => {
  const dirs: string[] = [];
  const tempDir = async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'edgeflow-embedded-db-'));
    dirs.push(dir);
    return dir;
  };
  after(async () => {
    await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
  });

  it('creates a new data directory without the process ever holding initdb (peak RSS stays low)', async () => {
    const dataDir = path.join(await tempDir(), 'db');
    // A process of its own, so its peak RSS (VmHWM) is this database's alone. Creating the
    // database inside the process peaked at ~800 MiB; opening an existing one stays near 250 MiB.
    const script = `
      import { readFileSync } from 'node:fs';
      const { openDb } = await import(${JSON.stringify(new URL('../../src/server/infra/db.ts', import.meta.url).href)});
      const db = await openDb({ dataDir: process.argv[1] });
      await db.query('CREATE TABLE probe (id int)');
      await db.close();
      const kib = (field) => Number(new RegExp('^' + field + ':\\\\s+(\\\\d+)', 'm').exec(readFileSync('/proc/self/status', 'utf8'))[1]);
      console.log(JSON.stringify({ peak: kib('VmHWM') * 1024 }));
    `;
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '--eval', script, dataDir],
      { timeout: 240_000 },
    );
    const { peak } = JSON.parse(stdout.trim().split('\n').at(-1)!) as { peak: number };
    assert.ok(existsSync(path.join(dataDir, 'PG_VERSION')), 'the database was created in place');
    assert.ok(peak < 450 * MiB, `peak RSS ${(peak / MiB).toFixed(0)} MiB, expected < 450 MiB`);
  });

  it('runs with small-instance settings and keeps its rows when reopened; a half-created directory is cleared', async () => {
    const dataDir = path.join(await tempDir(), 'db');
    // What a start killed while creating the database leaves behind.
    await mkdir(`${dataDir}.creating/base`, { recursive: true });
    await writeFile(`${dataDir}.creating/base/junk`, 'x');

    const first = await openDb({ dataDir });
    try {
      assert.equal(existsSync(`${dataDir}.creating`), false);
      const [setting] = await first.query<{ shared_buffers: string }>('SHOW shared_buffers');
      assert.equal(setting?.shared_buffers, '8MB');
      await first.exec("CREATE TABLE kept (name text); INSERT INTO kept VALUES ('survives')");
    } finally {
      await first.close();
    }
    const again = await openDb({ dataDir });
    try {
      assert.deepEqual(await again.query('SELECT name FROM kept'), [{ name: 'survives' }]);
    } finally {
      await again.close();
    }
  });

  it('creates the database in an empty directory that already exists (a test or an operator made it)', async () => {
    const dataDir = await tempDir();
    const db = await openDb({ dataDir });
    try {
      assert.deepEqual(await db.query<{ one: number }>('SELECT 1 AS one'), [{ one: 1 }]);
      assert.ok(existsSync(path.join(dataDir, 'PG_VERSION')));
    } finally {
      await db.close();
    }
  });
});
