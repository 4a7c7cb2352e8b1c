/**
 * The README, run: every ```sh block, in order, in one bash session (its variables and
 * background jobs carry from block to block, as in a reader's terminal), in a fresh directory
 * with a fresh data directory, against the server started as the walk-through says
 * (`EDGEFLOW_ADMIN_KEY=change-me npm start`: package.json's start script, run by this Node.js). So the
 * README cannot drift from the product again.
 *
 * A block fails when any command in it fails (bash's ERR trap; a failure the README expects is
 * written as `|| echo …`), and when any curl call is answered 5xx, 401, 403, 404 or not at all
 * (every curl call of the session reports its status). A marker comment right before a block
 * changes how it runs: `<!-- readme-test: skip (why) -->` (the demo, `npm test`, hosts of your
 * own), `<!-- readme-test: interrupt -->` (a command that runs until Ctrl-C: it gets SIGINT after
 * a few seconds, and must end by it). Two things differ from a reader's run, both said here: the
 * port (a free one, not 8080, so that two copies of the suite can run at once) and the size of the
 * simulated fleets (README_DEVICES, default 200, instead of 1,000, for a 2-core CI machine).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { PATIENCE } from '../helpers/raw-device.ts';
import { tempDir } from '../helpers/temp.ts';

interface NpmScripts {
  scripts: { start: string };
}
const REPO = path.resolve('.');
const DEVICES = Number(process.env.README_DEVICES ?? 200);
/** How long a block that runs until Ctrl-C runs before it gets SIGINT (again every 2 s until it ends). */
const INTERRUPT_AFTER_MS = 6_000;
/** What the README leaves in its directory after its own clean-up: the server's data. */
const LEFT_BEHIND = ['bin', 'data', 'node_modules', 'package.json', 'src'];

interface Block {
  /** 1-based line of the opening fence. */
  line: number;
  mode: 'run' | 'interrupt' | 'skip';
  code: string;
}

/** The ```sh blocks of the README, each with the marker comment standing right before it. */
function readmeBlocks(text: string): Block[] {
  const lines = text.split('\n');
  const blocks: Block[] = [];
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index]!;
    const marker = /^<!-- readme-test: (skip|interrupt)\b.*-->$/.exec(line);
    if (marker)
      assert.equal(lines[index + 1], '```sh', `the marker on README line ${index + 1} stands before a sh block`);
    if (!line.startsWith('```')) continue;
    const fence = line;
    let end = index + 1;
    while (end < lines.length && lines[end] !== '```') end++;
    if (fence === '```sh') {
      const before = /^<!-- readme-test: (skip|interrupt)\b/.exec(lines[index - 1] ?? '');
      blocks.push({
        line: index + 1,
        mode: (before?.[1] as Block['mode'] | undefined) ?? 'run',
        code: lines.slice(index + 1, end).join('\n'),
      });
    }
    index = end;
  }
  return blocks;
}

async function freePort(): Promise<number> {
  const probe = net.createServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const { port } = probe.address() as net.AddressInfo;
  probe.close();
  await once(probe, 'close');
  return port;
}

/** The environment of a reader's fresh terminal: nothing of ours that the README does not set. */
function readerEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  for (const name of Object.keys(env)) {
    if (/^(EDGEFLOW_|S3_|DATABASE_URL$|PORT$|HOST$)/.test(name) && !(name in extra)) delete env[name];
  }
  return env;
}

/** One bash session that runs blocks one after another and says how each ended. */
class Session {
  readonly #bash: ChildProcess;
  #stdout = '';
  #stderr = '';

  constructor(cwd: string, env: NodeJS.ProcessEnv) {
    this.#bash = spawn('bash', ['--noprofile', '--norc'], {
      cwd,
      env,
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
    this.#bash.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      this.#stdout += chunk;
    });
    this.#bash.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.#stderr += chunk;
    });
    this.#bash.stdin!.write(
      [
        'set -E -o pipefail',
        `trap 'echo "readme-test-failed: exit $? at: $BASH_COMMAND" >&2' ERR`,
        // Every curl call says how it was answered, on stderr, whatever the block does with its output.
        `curl() { command curl -w '%{stderr}readme-test-http %{http_code} %{url_effective}\\n' "$@"; }`,
        '',
      ].join('\n'),
    );
  }

  /** Runs `file` (sourced: variables and jobs stay); resolves with its exit status and what it wrote. */
  async run(file: string, id: number, interrupt: boolean): Promise<{ status: number; stdout: string; stderr: string }> {
    const [outFrom, errFrom] = [this.#stdout.length, this.#stderr.length];
    let jobs: number[] = [];
    if (interrupt) {
      this.#bash.stdin!.write(`echo "readme-test-jobs-${id} $(jobs -p | tr '\\n' ' ')"\n`);
      const line = await this.#waitFor(new RegExp(`^readme-test-jobs-${id} (.*)$`, 'm'), outFrom);
      jobs = line[1]!.trim().split(/\s+/).filter(Boolean).map(Number);
    }
    this.#bash.stdin!.write(`source ${file} < /dev/null; echo "readme-test-done-${id} $?"\n`);
    const done = this.#waitFor(new RegExp(`^readme-test-done-${id} (\\d+)$`, 'm'), outFrom);
    if (interrupt) {
      // Ctrl-C reaches the foreground command: the shell's children that are not its background jobs.
      let finished = false;
      void done.then(() => {
        finished = true;
      });
      await sleep(INTERRUPT_AFTER_MS);
      while (!finished) {
        for (const pid of this.#children()) if (!jobs.includes(pid)) process.kill(pid, 'SIGINT');
        await Promise.race([done, sleep(2_000)]);
      }
    }
    const match = await done;
    return {
      status: Number(match[1]),
      stdout: this.#stdout.slice(outFrom),
      stderr: this.#stderr.slice(errFrom),
    };
  }

  #children(): number[] {
    try {
      return execFileSync('ps', ['-o', 'pid=', '--ppid', String(this.#bash.pid)], { encoding: 'utf8' })
        .split('\n')
        .map((pid) => Number(pid.trim()))
        .filter((pid) => pid > 0);
    } catch {
      return [];
    }
  }

  async #waitFor(pattern: RegExp, from: number): Promise<RegExpExecArray> {
    for (;;) {
      const match = pattern.exec(this.#stdout.slice(from));
      if (match) return match;
      if (this.#bash.exitCode !== null) throw new Error(`the shell exited:\n${this.#stderr.slice(-2000)}`);
      await sleep(100);
    }
  }

  /** Ends the shell and whatever it left running. */
  async close(): Promise<void> {
    if (this.#bash.exitCode === null) {
      try {
        process.kill(-this.#bash.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
      await once(this.#bash, 'exit');
    }
  }
}

/** Why a block's run counts as failed, or undefined. */
function problems(block: Block, outcome: { status: number; stderr: string }): string[] {
  const found: string[] = [];
  const interrupted = (status: number) => block.mode === 'interrupt' && status === 130;
  if (outcome.status !== 0 && !interrupted(outcome.status)) found.push(`it ended with exit status ${outcome.status}`);
  for (const match of outcome.stderr.matchAll(/^readme-test-failed: exit (\d+) at: (.*)$/gm)) {
    if (!interrupted(Number(match[1]))) found.push(`a command failed (exit ${match[1]}): ${match[2]}`);
  }
  for (const match of outcome.stderr.matchAll(/^readme-test-http (\d+) (\S+)$/gm)) {
    const status = Number(match[1]);
    if (status === 0 || status >= 500 || [401, 403, 404].includes(status)) {
      found.push(`curl ${match[2]} was answered ${status || 'not at all'}`);
    }
  }
  return found;
}

describe('the README, run block by block', async () => {
  const readme = await readFile(path.join(REPO, 'README.md'), 'utf8');
  const blocks = readmeBlocks(readme);
  let dir: string;
  let scripts: string;
  let port: number;
  let server: ChildProcess | undefined;
  let serverLog = '';
  let session: Session | undefined;

  before(async () => {
    dir = await tempDir('edgeflow-readme-');
    scripts = await tempDir('edgeflow-readme-blocks-');
    // A fresh directory that runs the repository's code: the reader's clone, without its ./data.
    for (const name of ['bin', 'src', 'node_modules', 'package.json']) {
      await symlink(path.join(REPO, name), path.join(dir, name));
    }
    port = await freePort();
    // `npm start`'s own command line (its Node.js flags included), run by this Node.js.
    const [, ...startArgs] = (
      JSON.parse(await readFile(path.join(REPO, 'package.json'), 'utf8')) as NpmScripts
    ).scripts.start.split(' ');
    server = spawn(process.execPath, startArgs, {
      cwd: dir,
      env: readerEnv({ EDGEFLOW_ADMIN_KEY: 'change-me', PORT: String(port), LOG_LEVEL: 'warn' }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    server.stdout!.on('data', (chunk: Buffer) => {
      serverLog += chunk.toString();
    });
    server.stderr!.on('data', (chunk: Buffer) => {
      serverLog += chunk.toString();
    });
    const deadline = Date.now() + 30_000 * PATIENCE;
    while (
      !(await fetch(`http://127.0.0.1:${port}/healthz`).then(
        (r) => r.ok,
        () => false,
      ))
    ) {
      if (Date.now() > deadline || server.exitCode !== null) throw new Error(`the server did not start:\n${serverLog}`);
      await sleep(200);
    }
    session = new Session(dir, readerEnv({}));
  });

  after(async () => {
    await session?.close();
    if (server && server.exitCode === null) {
      server.kill('SIGTERM');
      await once(server, 'exit');
    }
    await rm(dir, { recursive: true, force: true });
    await rm(scripts, { recursive: true, force: true });
  });

  it('has the blocks of the walk-through to run, each marker before a block', () => {
    assert.ok(blocks.filter((block) => block.mode !== 'skip').length >= 12, `${blocks.length} blocks found`);
  });

  for (const [index, block] of blocks.entries()) {
    const title = `README line ${block.line}: ${block.code.split('\n')[0]}`;
    it(title, { skip: block.mode === 'skip' && 'marked skip in the README' }, async () => {
      const code = block.code.replaceAll('localhost:8080', `localhost:${port}`).replace(/\b1000\b/g, String(DEVICES));
      const file = path.join(scripts, `block-${index}.sh`);
      await writeFile(file, `${code}\n`);
      const outcome = await session!.run(file, index, block.mode === 'interrupt');
      const found = problems(block, outcome);
      assert.deepEqual(
        found,
        [],
        `${title}\n--- stdout\n${outcome.stdout.slice(-3000)}\n--- stderr\n${outcome.stderr.slice(-3000)}\n--- server\n${serverLog.slice(-2000)}`,
      );
    });
  }

  it("leaves, after the README's own clean-up, only the server's data", async () => {
    const left = (await readdir(dir)).sort();
    assert.deepEqual(left, LEFT_BEHIND);
  });
});
