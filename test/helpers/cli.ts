/**
 * The CLI the tests start as a child process, as a user runs it: `bin/edgeflow-ota.js`, which runs
 * the compiled build (dist/), rebuilt first if src/ changed since (scripts/run-tests.mjs does that
 * once before the suites start).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';

export const CLI = path.resolve('bin/edgeflow-ota.js');

const run = promisify(execFile);

/** What a refused command printed, and its exit code. */
export interface CliFailure {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * `cli(args)` runs the CLI against a server, with its URL and key in the environment as a user
 * sets them; `refused(args)`, a command expected to fail, answers its exit code and output.
 * `connection` is read at each call (the server starts in a `before`); `key` overrides its key.
 */
export function cliAgainst(connection: () => { url: string; key: string }) {
  const cli = (args: string[], key?: string) =>
    run(process.execPath, [CLI, ...args], {
      env: { ...process.env, EDGEFLOW_URL: connection().url, EDGEFLOW_KEY: key ?? connection().key },
      timeout: 60_000,
    });
  const refused = async (args: string[], key?: string) =>
    (await cli(args, key).then(
      () => assert.fail(`${args.join(' ')} succeeded`),
      (error: unknown) => error,
    )) as CliFailure;
  return { cli, refused };
}
