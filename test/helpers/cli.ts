/**
 * The CLI the tests start as a child process, as a user runs it: `bin/edgeflow-ota.js`, which runs
 * the compiled build (dist/), rebuilt first if src/ changed since (scripts/run-tests.mjs does that
 * once before the suites start).
 */
import path from 'node:path';

export const CLI = path.resolve('bin/edgeflow-ota.js');
