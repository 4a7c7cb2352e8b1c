#!/usr/bin/env node
// Runs every test file with Node's test runner (Node 20 takes no globs): unit tests first,
// then the integration and end-to-end suites, three files at a time (see below).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { build, isBuildCurrent } from './build.mjs';

function testFiles(dir) {
  let found = [];
  for (const entry of readdirSync(dir)) {
    const full = path.join(dir, entry);
    if (statSync(full).isDirectory()) found = found.concat(testFiles(full));
    else if (entry.endsWith('.test.ts')) found.push(full);
  }
  return found.sort();
}

/**
 * A guard against a hang, not a measure of speed: it bounds each test and each file as a whole.
 * A file of e2e runs (first-hour: ~40 CLI processes and four server starts) takes 90 s alone and
 * 3–4× that on a machine running a second copy of the suite, so the bound is generous.
 */
const TIMEOUT_MS = 900_000;

/**
 * The files that take longest (about 30–80 s each, measured), started first: two slots that
 * finish together finish sooner than two that wait on one long file at the end.
 */
const LONGEST_FIRST = [
  'test/e2e/readme.test.ts',
  'test/e2e/demo.test.ts',
  'test/integration/deployments.test.ts',
  'test/e2e/first-hour.test.ts',
  'test/e2e/scale-out.test.ts',
  'test/e2e/dashboard-deployments.test.ts',
  'test/e2e/cli-deployments.test.ts',
  'test/e2e/dashboard-fleet.test.ts',
  'test/e2e/agent-tunnel.test.ts',
  'test/e2e/ota.test.ts',
  'test/e2e/agent-package.test.ts',
];

const only = process.argv.slice(2);
// One run, three files at a time on this two-core machine: two at a time left the cores ~16 % idle
// (the e2e files wait on bakes, reboots and timeouts) and took 793–806 s; three keep them busy
// (~2 % idle) and took 717 s (2026-12-05, the same suite). The longest files first, the other e2e and
// integration files, then the unit files, which are quick and fill the slots at the end.
const rest = [...testFiles('test/e2e'), ...testFiles('test/integration')].filter(
  (file) => !LONGEST_FIRST.includes(file),
);
const groups = only.length
  ? [only]
  : [[...LONGEST_FIRST.filter((file) => existsSync(file)), ...rest, ...testFiles('test/unit')]];
// The e2e suites start the CLI as a user does (bin/edgeflow-ota.js, the compiled build in dist/): built
// once here if src/ changed since, rather than by the first of many child processes at once.
if (!isBuildCurrent()) await build();
let failed = false;
for (const files of groups.filter((group) => group.length)) {
  const result = spawnSync(
    process.execPath,
    ['--import', 'tsx', '--test', '--test-concurrency=3', `--test-timeout=${TIMEOUT_MS}`, ...files],
    { stdio: 'inherit' },
  );
  if (result.status !== 0) failed = true;
}
process.exit(failed ? 1 : 0);
