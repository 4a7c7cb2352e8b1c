#!/usr/bin/env node
// Runs every test file with Node's test runner (Node 20 takes no globs): unit tests first,
// then the integration and end-to-end suites, two files at a time (this machine has two cores).
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { buildTestCli } from './build-test-cli.mjs';

function testFiles(dir) {
  let found = [];
  for (const entry of readdirSync(dir)) {
    const full = path.join(dir, entry);
    if (statSync(full).isDirectory()) found = found.concat(testFiles(full));
    else if (entry.endsWith('.test.ts')) found.push(full);
  }
  return found.sort();
}

const only = process.argv.slice(2);
// Unit tests first (quick, and a broken core fails fast); then e2e and integration in one run,
// so that the two slots never wait for the slowest file of a group before the next starts. Two
// files at a time: the suite is CPU-bound on two cores (three at a time measured no faster).
const groups = only.length
  ? [only]
  : [testFiles('test/unit'), [...testFiles('test/e2e'), ...testFiles('test/integration')]];
// The e2e suites start the CLI as a child process; they run this bundle of it (build-test-cli.mjs).
process.env.EDGEFLOW_TEST_CLI ??= await buildTestCli();
let failed = false;
for (const files of groups.filter((group) => group.length)) {
  const result = spawnSync(
    process.execPath,
    ['--import', 'tsx', '--test', '--test-concurrency=2', '--test-timeout=300000', ...files],
    { stdio: 'inherit' },
  );
  if (result.status !== 0) failed = true;
}
process.exit(failed ? 1 : 0);
