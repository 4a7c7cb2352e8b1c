/**
 * The compiled build as a user meets it, on a copy of the package (its own src/, bin/, scripts/ and
 * package.json; node_modules linked): the first command on a copy without dist/ builds it, saying so
 * in one line; a change under src/ makes the next command rebuild; an up-to-date build is run as it
 * is; a source that no longer compiles ends in one line naming the file, never a stack trace; and the
 * compiled CLI starts the simulator's worker processes from dist/, not from the TypeScript sources.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cp, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { CLI } from '../helpers/cli.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { tempDir } from '../helpers/temp.ts';

const REPO = path.resolve('.');
const { version } = JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string };
const REBUILT = /^edgeflow-ota: rebuilt dist\/ \(src\/ changed since the last build\)$/m;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(bin: string, args: string[]): Promise<Run> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [bin, ...args], { timeout: 120_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: number; stdout?: string; stderr?: string };
    return { code: failed.code ?? -1, stdout: failed.stdout ?? '', stderr: failed.stderr ?? '' };
  }
}

describe('the compiled build (dist/), on a copy of the package', () => {
  let copy: string;
  let bin: string;

  before(async () => {
    copy = await tempDir('edgeflow-build-');
    for (const name of ['bin', 'scripts', 'src', 'package.json']) {
      await cp(path.join(REPO, name), path.join(copy, name), { recursive: true });
    }
    await symlink(path.join(REPO, 'node_modules'), path.join(copy, 'node_modules'));
    bin = path.join(copy, 'bin', 'edgeflow-ota.js');
  });

  it('is built by the first command when missing, then run as it is', async () => {
    const first = await run(bin, ['--version']);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stdout.trim(), version);
    assert.match(first.stderr, REBUILT);
    await stat(path.join(copy, 'dist', 'cli-main.mjs'));
    await stat(path.join(copy, 'dist', 'simulator-worker.mjs'));

    const second = await run(bin, ['--version']);
    assert.equal(second.code, 0, second.stderr);
    assert.equal(second.stdout.trim(), version);
    assert.equal(second.stderr, '', 'an up-to-date build is not rebuilt');
  });

  it('is rebuilt when a source changed, and the change is what runs', async () => {
    const main = path.join(copy, 'src', 'cli', 'main.ts');
    const source = await readFile(main, 'utf8');
    const changed = source.replace(
      "'EdgeFlow OTA: over-the-air firmware updates for fleets of edge devices'",
      "'EdgeFlow OTA (a changed source)'",
    );
    assert.notEqual(changed, source, 'the test edits the description commander prints');
    await writeFile(main, changed);

    const help = await run(bin, ['--help']);
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stderr, REBUILT);
    assert.match(help.stdout, /EdgeFlow OTA \(a changed source\)/);
    await writeFile(main, source);
  });

  it('a source that does not compile ends in one line naming it, exit 1, no stack trace', async () => {
    const broken = path.join(copy, 'src', 'protocol', 'text.ts');
    const source = await readFile(broken, 'utf8');
    await writeFile(broken, `${source}\nexport const = ;\n`);

    const result = await run(bin, ['--version']);
    assert.equal(result.code, 1);
    assert.equal(result.stdout, '');
    const lines = result.stderr.trim().split('\n');
    assert.equal(lines.length, 2, result.stderr);
    assert.match(
      lines[0]!,
      /^error: the compiled build \(dist\/\) is missing or older than src\/, and rebuilding it failed: /,
    );
    assert.match(lines[0]!, /src\/protocol\/text\.ts:\d+: /);
    assert.match(lines[1]!, /^hint: run `npm install` \(or `npm run build`\)/);
    assert.doesNotMatch(result.stderr, /\n\s+at /);

    await writeFile(broken, source);
    const fixed = await run(bin, ['--version']);
    assert.equal(fixed.code, 0, fixed.stderr);
    assert.match(fixed.stderr, REBUILT);
  });
});

describe('the compiled CLI spreads a simulated fleet over worker processes built into dist/', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ db: 'pglite', store: 'local', name: 'pglite+local' });
  });
  after(() => server?.close());

  it('simulate --per-process 2 --devices 4 brings all four online from two workers', async () => {
    const org = await server.createOrg('build-simulate');
    const work = await tempDir('edgeflow-build-simulate-');
    const result = await run(CLI, [
      'simulate',
      ...['--server', server.url, '--key', org.adminKey, '--devices', '4', '--per-process', '2'],
      ...['--duration', '4', '--allow-insecure', '--credentials', path.join(work, 'fleet.json')],
    ]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout + result.stderr, /online 4\/4/);
    const listed = await server.api<{ devices: unknown[] }>('GET', '/api/v1/devices?limit=10', org.adminKey);
    assert.equal(listed.body.devices.length, 4);
  });
});
