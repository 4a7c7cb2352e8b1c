/**
 * The first hour of a new user, through the real CLI (`node bin/edgeflow-ota.js …` as a child
 * process): help and version, and every usual mistake — a busy port, a server that is not
 * running, a URL without a scheme, HTTPS against a plain server, a self-signed server, a missing
 * file, an http:// agent URL — answered by one line and a non-zero exit, never a stack trace.
 * And an EDGEFLOW_ADMIN_KEY set after the first start: a loud warning, and `admin reset-key`.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { CLI } from '../helpers/cli.ts';
import { PATIENCE } from '../helpers/raw-device.ts';
import { startTestServer, stopSharedServices } from '../helpers/server.ts';

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI (`bin`: the test bundle unless told) to its end; never throws on a non-zero exit. */
function cli(args: string[], env: Record<string, string> = {}, cwd?: string, bin = CLI): Promise<Outcome> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [bin, ...args],
      { env: { ...process.env, LOG_LEVEL: 'warn', ...env }, timeout: 280_000, ...(cwd ? { cwd } : {}) },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** Exactly one line on stderr, starting with `error: ` and matching `pattern`, and no stack. */
function assertOneLine(outcome: Outcome, pattern: RegExp, exitCode?: number): void {
  const lines = outcome.stderr.split('\n').filter((line) => line.trim() !== '');
  assert.equal(lines.length, 1, `one line on stderr, got:\n${outcome.stderr}`);
  assert.match(lines[0]!, /^error: /);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(outcome.stderr, /\n\s+at /, 'no stack trace');
  if (exitCode === undefined) assert.notEqual(outcome.code, 0);
  else assert.equal(outcome.code, exitCode);
}

async function listen(server: net.Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as net.AddressInfo).port;
}

async function closedPort(): Promise<number> {
  const probe = net.createServer();
  const port = await listen(probe);
  probe.close();
  await once(probe, 'close');
  return port;
}

let tmp: string;
before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'edgeflow-first-hour-'));
});
after(() => rm(tmp, { recursive: true, force: true }));

describe('help and version (bin/edgeflow-ota.js itself)', () => {
  it('bare edgeflow-ota prints help, and --version the package version', async () => {
    const bare = await cli([]);
    assert.equal(bare.code, 0);
    assert.match(bare.stdout, /^Usage: edgeflow-ota /);
    assert.match(bare.stdout, /serve \[options\]/);
    const { version } = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
    const printed = await cli(['--version']);
    assert.equal(printed.stdout.trim(), version);
  });

  it('serve --help lists its environment; agent --help marks its required options and their variables', async () => {
    const serve = await cli(['serve', '--help']);
    for (const variable of ['PORT', 'EDGEFLOW_DATA_DIR', 'EDGEFLOW_ADMIN_KEY', 'DATABASE_URL', 'S3_BUCKET']) {
      assert.match(serve.stdout, new RegExp(`\\b${variable}\\b`));
    }
    const agent = await cli(['agent', '--help']);
    for (const [flag, variable] of [
      ['--server', 'EDGEFLOW_URL'],
      ['--device-id', 'EDGEFLOW_DEVICE_ID'],
      ['--key', 'EDGEFLOW_DEVICE_KEY'],
      ['--data-dir', 'EDGEFLOW_AGENT_DATA_DIR'],
    ]) {
      assert.match(agent.stdout, new RegExp(`${flag} <\\w+>\\s+\\(required\\)[\\s\\S]*?\\(env:\\s+${variable}\\)`));
    }
  });
});

describe('usage errors exit 2, as the README says', () => {
  it('an unknown option, an unknown command or a missing argument is exit code 2; --help is 0', async () => {
    for (const args of [
      ['firmware', 'list', '--key', 'k', '--bogus'],
      ['deploy', '2.0.0', '--all', '--key', 'k', '--canary-procent', '5'],
      ['no-such-command'],
      ['update', '--key', 'k'],
      ['serve', '--bogus'],
    ]) {
      const outcome = await cli(args);
      assert.equal(outcome.code, 2, `${args.join(' ')}: ${outcome.stderr}`);
      assert.match(outcome.stderr, /^error: /, args.join(' '));
    }
    assert.equal((await cli(['firmware', '--help'])).code, 0);
  });
});

describe('mistakes answered by one line', () => {
  let plain: http.Server;
  let plainPort: number;
  let selfSigned: https.Server;
  let selfSignedPort: number;

  before(async () => {
    plain = http.createServer((_request, response) => response.end('{}'));
    plainPort = await listen(plain);
    const [cert, key] = [path.join(tmp, 'cert.pem'), path.join(tmp, 'key.pem')];
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'].concat([
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
      ]),
      { stdio: 'ignore' },
    );
    selfSigned = https.createServer({ cert: readFileSync(cert), key: readFileSync(key) }, (_q, r) => r.end('{}'));
    selfSignedPort = await listen(selfSigned);
  });
  after(() => {
    plain.close();
    selfSigned.close();
  });

  it('a port in use (issue 11: "port N is in use")', async () => {
    const busy = net.createServer();
    const port = await listen(busy);
    try {
      const outcome = await cli([
        'serve',
        '--host',
        '127.0.0.1',
        '--port',
        String(port),
        '--data-dir',
        path.join(tmp, 'busy'),
      ]);
      assertOneLine(outcome, new RegExp(`port ${port} is in use`), 1);
    } finally {
      busy.close();
    }
  });

  it('a server that is not running', async () => {
    const port = await closedPort();
    const outcome = await cli(['devices', 'list', '--server', `http://127.0.0.1:${port}`, '--key', 'k']);
    assertOneLine(outcome, new RegExp(`cannot connect to http://127\\.0\\.0\\.1:${port}: connection refused`), 1);
  });

  it('a server on a port fetch() refuses (the Fetch standard blocks 1, 22, 25, 6000, …)', async () => {
    const outcome = await cli(['devices', 'list', '--server', 'http://127.0.0.1:1', '--key', 'k']);
    assertOneLine(outcome, /cannot connect to http:\/\/127\.0\.0\.1:1: fetch refuses that port .*another port/, 1);
  });

  it('a mistyped command is named, with the command meant', async () => {
    const outcome = await cli(['firmwre', 'list']);
    assert.equal(outcome.code, 2);
    assert.match(outcome.stderr, /^error: unknown command 'firmwre'\n\(Did you mean firmware\?\)/);
  });

  it('a server URL without a scheme', async () => {
    const outcome = await cli(['devices', 'list', '--server', 'localhost:8080', '--key', 'k']);
    assertOneLine(outcome, /--server must be a URL with a scheme, e\.g\. .*http:\/\/localhost:8080/, 2);
  });

  it('https:// against a plain HTTP server', async () => {
    const outcome = await cli(['devices', 'list', '--server', `https://127.0.0.1:${plainPort}`, '--key', 'k']);
    assertOneLine(outcome, /TLS.*does not speak HTTPS.*use http:\/\//);
  });

  it('a self-signed server nobody trusts', async () => {
    const outcome = await cli(['devices', 'list', '--server', `https://127.0.0.1:${selfSignedPort}`, '--key', 'k']);
    assertOneLine(outcome, /TLS error with https:\/\/127\.0\.0\.1:\d+: .*NODE_EXTRA_CA_CERTS/);
  });

  it('a firmware file that does not exist', async () => {
    const missing = path.join(tmp, 'no-such-firmware.bin');
    const outcome = await cli([
      'firmware',
      'upload',
      missing,
      '--version',
      '1.0.0',
      '--server',
      `http://127.0.0.1:${plainPort}`,
      '--key',
      'k',
    ]);
    assertOneLine(outcome, new RegExp(`no such file or directory: ${missing.replace(/[.]/g, '\\.')}`), 1);
  });

  it('an agent given an http:// URL without --allow-insecure, or a URL without scheme', async () => {
    const base = ['agent', '--device-id', 'd', '--key', 'k', '--data-dir', path.join(tmp, 'agent')];
    const insecure = await cli([...base, '--server', `http://127.0.0.1:${plainPort}`]);
    // The warning about the missing public key comes first, as a JSON log line; then the error.
    const errorLines = { ...insecure, stderr: insecure.stderr.replace(/^\{.*\}\n/gm, '') };
    assertOneLine(errorLines, /unencrypted server URL .*--allow-insecure/, 2);
    assert.match(insecure.stderr, /no public key pinned \(--public-key\): every update will be refused/);
    const schemeless = await cli([...base, '--server', 'localhost:8080']);
    assertOneLine({ ...schemeless, stderr: schemeless.stderr.replace(/^\{.*\}\n/gm, '') }, /no https:\/\//, 2);
  });
});

describe('simulate, twice', () => {
  it('reuses its fleet on a second run with the same command, and says what to do next', async () => {
    const server = await startTestServer({ db: 'pglite', store: 'local', name: 'pglite+local' });
    const cwd = path.join(tmp, 'simulate');
    await mkdir(cwd);
    try {
      const org = await server.createOrg();
      const args = ['simulate', '--server', server.url, '--key', org.adminKey, '--devices', '5'];
      const run = () => cli([...args, '--allow-insecure', '--allow-unsigned', '--duration', '2'], {}, cwd);
      const first = await run();
      assert.equal(first.code, 0, first.stderr);
      const second = await run();
      assert.equal(second.code, 0, `the second run failed: ${second.stderr}`);
      assert.match(second.stdout, /5 devices ready/);
      assert.match(second.stdout, /run the same command again to reuse these devices/);
      assert.match(second.stdout, /edgeflow-ota update sim-1 1\.1\.0 --wait/);
      const { body } = await server.api<{ devices: unknown[] }>('GET', '/api/v1/devices', org.adminKey);
      assert.equal(body.devices.length, 5);
    } finally {
      await server.close();
      await stopSharedServices();
    }
  });
});

describe('EDGEFLOW_ADMIN_KEY after the first start', () => {
  /** Starts `serve` and resolves once it answers; its stderr is collected. */
  async function serve(dataDir: string, port: number, adminKey: string) {
    const child: ChildProcess = spawn(process.execPath, [CLI, 'serve', '--host', '127.0.0.1', '--port', String(port)], {
      env: { ...process.env, EDGEFLOW_DATA_DIR: dataDir, EDGEFLOW_ADMIN_KEY: adminKey, LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.stdout!.resume();
    const deadline = Date.now() + 30_000 * PATIENCE;
    for (;;) {
      const up = await fetch(`http://127.0.0.1:${port}/healthz`).then(
        (r) => r.ok,
        () => false,
      );
      if (up) break;
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`serve did not start: ${stderr}`);
      await sleep(200);
    }
    return {
      stderr: () => stderr,
      status: (key: string) =>
        fetch(`http://127.0.0.1:${port}/api/v1/orgs`, { headers: { authorization: `Bearer ${key}` } }).then(
          (r) => r.status,
        ),
      async stop() {
        child.kill('SIGTERM');
        if (child.exitCode === null) await once(child, 'exit');
      },
    };
  }

  it('warns loudly when it differs from the stored key, and admin reset-key makes it (or a new one) the key', async () => {
    const dataDir = path.join(tmp, 'admin-key');
    const port = await closedPort();
    const first = await serve(dataDir, port, 'first-key');
    await first.stop();

    const second = await serve(dataDir, port, 'change-me');
    try {
      assert.match(second.stderr(), /WARNING: EDGEFLOW_ADMIN_KEY is set but differs from the system administrator key/);
      assert.match(second.stderr(), /edgeflow-ota admin reset-key/);
      assert.equal(await second.status('change-me'), 401);
      assert.equal(await second.status('first-key'), 200);
    } finally {
      await second.stop();
    }

    const reset = await cli(['admin', 'reset-key', '--data-dir', dataDir, '--from-env'], {
      EDGEFLOW_ADMIN_KEY: 'change-me',
    });
    assert.equal(reset.code, 0, reset.stderr);
    const third = await serve(dataDir, port, 'change-me');
    try {
      assert.doesNotMatch(third.stderr(), /WARNING/);
      assert.equal(await third.status('change-me'), 200);
      assert.equal(await third.status('first-key'), 401);
    } finally {
      await third.stop();
    }

    const generated = await cli(['admin', 'reset-key', '--data-dir', dataDir]);
    assert.equal(generated.code, 0, generated.stderr);
    const newKey = generated.stdout.trim();
    assert.match(newKey, /^efo_\S{20,}$/);
    const fourth = await serve(dataDir, port, newKey);
    try {
      assert.equal(await fourth.status(newKey), 200);
      assert.equal(await fourth.status('change-me'), 401);
    } finally {
      await fourth.stop();
    }
  });

  it('admin reset-key refuses the data directory of a running server in one line, and changes nothing', async () => {
    const dataDir = path.join(tmp, 'held');
    const port = await closedPort();
    const running = await serve(dataDir, port, 'held-key');
    try {
      const refused = await cli(['admin', 'reset-key', '--data-dir', dataDir]);
      assertOneLine(
        refused,
        /the data directory .*held is in use by an EdgeFlow OTA server \(pid \d+ .*\): stop it first, then run admin reset-key again/,
        1,
      );
      assert.equal(refused.stdout, '', 'no key printed');
      assert.equal(await running.status('held-key'), 200);
    } finally {
      await running.stop();
    }
    const again = await serve(dataDir, port, 'held-key');
    try {
      assert.equal(await again.status('held-key'), 200, 'the key is still the one it was');
      assert.doesNotMatch(again.stderr(), /WARNING/);
    } finally {
      await again.stop();
    }
  });

  it('admin reset-key on a directory without a database says so in one line', async () => {
    const outcome = await cli(['admin', 'reset-key', '--data-dir', path.join(tmp, 'empty')]);
    assertOneLine(outcome, /no database in .*--data-dir.*DATABASE_URL/, 2);
  });
});
