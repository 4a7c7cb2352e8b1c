/**
 * One server per embedded data directory, with real processes (bin/edgeflow-ota.js serve): a
 * second server on the same directory refuses to start with one line; after a kill -9 of the
 * first, a new one takes the stale lock over and finds no staged file of the upload the kill
 * interrupted.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLI } from '../helpers/cli.ts';

interface Serve {
  child: ChildProcess;
  stdout: string[];
  stderr: string[];
  exited: Promise<number | null>;
}

function serve(dataDir: string, adminKey: string): Serve {
  const child = spawn(process.execPath, [CLI, 'serve'], {
    env: {
      ...process.env,
      PORT: '0',
      HOST: '127.0.0.1',
      EDGEFLOW_DATA_DIR: dataDir,
      EDGEFLOW_ADMIN_KEY: adminKey,
      LOG_LEVEL: 'warn',
      DATABASE_URL: '',
      S3_BUCKET: '',
      EDGEFLOW_STORE: '',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stdout: string[] = [];
  const stderr: string[] = [];
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => stdout.push(chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => stderr.push(chunk));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, stdout, stderr, exited };
}

async function listening(server: Serve): Promise<string> {
  for (let waited = 0; waited < 180_000; waited += 100) {
    const match = /listening on (\S+)/.exec(server.stdout.join(''));
    if (match) return match[1]!;
    if (server.child.exitCode !== null) {
      throw new Error(`the server exited (${server.child.exitCode}): ${server.stderr.join('')}`);
    }
    await sleep(100);
  }
  throw new Error(`the server did not start: ${server.stderr.join('')}`);
}

describe('one server per data directory', () => {
  let dataDir: string;
  const adminKey = `efo_test_${randomBytes(12).toString('hex')}`;
  const started: Serve[] = [];

  before(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'edgeflow-datadir-'));
  });
  after(async () => {
    for (const server of started) {
      if (server.child.exitCode === null && server.child.signalCode === null) {
        server.child.kill('SIGKILL');
        await server.exited;
      }
    }
    await rm(dataDir, { recursive: true, force: true });
  });

  it('refuses a second server with one line, and takes the lock over after a kill -9', async () => {
    const first = serve(dataDir, adminKey);
    started.push(first);
    const url = await listening(first);

    // An upload in flight when the server is killed: its staged file is left behind.
    const org = (await (
      await fetch(`${url}/api/v1/orgs`, {
        method: 'POST',
        headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'lock' }),
      })
    ).json()) as { admin_key: string };
    const boundary = 'edgeflowboundary';
    const upload = http.request(`${url}/api/v1/firmware`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${org.admin_key}`,
        'content-type': `multipart/form-data; boundary=${boundary}`,
        'content-length': String(8 * 1024 * 1024),
      },
    });
    upload.on('error', () => {});
    upload.write(
      `--${boundary}\r\nContent-Disposition: form-data; name="version"\r\n\r\n1.0.0\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="sha256"\r\n\r\n${'a'.repeat(64)}\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="f.bin"\r\n\r\n`,
    );
    upload.write(Buffer.alloc(1024 * 1024, 1));
    const stagingDir = path.join(dataDir, 'firmware', '.staging');
    const staged = async () => (existsSync(stagingDir) ? await readdir(stagingDir) : []);
    for (let waited = 0; (await staged()).length === 0; waited += 100) {
      assert.ok(waited < 60_000, 'the upload was never staged');
      await sleep(100);
    }

    const second = serve(dataDir, adminKey);
    started.push(second);
    const outcome = await Promise.race([
      second.exited.then((code) => ({ code })),
      listening(second).then((secondUrl) => ({ started: secondUrl })),
    ]);
    assert.ok('code' in outcome, `a second server started on the same data directory: ${JSON.stringify(outcome)}`);
    assert.notEqual(outcome.code, 0);
    const refusal = second.stderr.join('').trim();
    assert.equal(refusal.split('\n').length, 1, refusal);
    assert.match(
      refusal,
      new RegExp(`data directory .* is in use by another EdgeFlow OTA server \\(pid ${first.child.pid} `),
    );
    assert.doesNotMatch(second.stdout.join(''), /listening/);
    assert.equal((await fetch(`${url}/healthz`)).status, 200, 'the first server goes on serving');

    first.child.kill('SIGKILL');
    await first.exited;
    upload.destroy();
    assert.ok((await staged()).length > 0, 'the kill left a staged file');

    const third = serve(dataDir, adminKey);
    started.push(third);
    const thirdUrl = await listening(third);
    assert.deepEqual(await staged(), [], 'a start sweeps every staged file of its own data directory');
    const lock = JSON.parse(await readFile(path.join(dataDir, 'edgeflow.lock'), 'utf8')) as { pid: number };
    assert.equal(lock.pid, third.child.pid);
    const orgs = await fetch(`${thirdUrl}/api/v1/orgs`, { headers: { authorization: `Bearer ${adminKey}` } });
    assert.equal(orgs.status, 200, 'the data of the first server is there');

    third.child.kill('SIGTERM');
    assert.equal(await third.exited, 0);
    assert.equal(existsSync(path.join(dataDir, 'edgeflow.lock')), false, 'a clean stop releases the lock');
  });
});
