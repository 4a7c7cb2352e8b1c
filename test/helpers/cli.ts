/**
 * The CLI the tests start as a child process: the bundle `npm test` builds once
 * (scripts/build-test-cli.mjs, same sources, faster to start), or `bin/edgeflow-ota.js` when a test
 * file runs on its own.
 */
import path from 'node:path';

export const BIN = path.resolve('bin/edgeflow-ota.js');
export const CLI = process.env.EDGEFLOW_TEST_CLI ?? BIN;
