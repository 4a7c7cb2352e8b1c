#!/usr/bin/env node
// Runs the compiled CLI (dist/, built by `npm install`). When src/ changed since the last build, it
// is rebuilt first (half a second), so what runs is always the sources as they are.
import { pathToFileURL } from 'node:url';
import { build, CLI_ENTRY, isBuildCurrent } from '../scripts/build.mjs';

if (!isBuildCurrent()) {
  try {
    await build();
    process.stderr.write('edgeflow-ota: rebuilt dist/ (src/ changed since the last build)\n');
  } catch (error) {
    process.stderr.write(
      `error: the compiled build (dist/) is missing or older than src/, and rebuilding it failed: ${error.message}\n` +
        'hint: run `npm install` (or `npm run build`) in the edgeflow-ota directory\n',
    );
    process.exit(1);
  }
}
await import(pathToFileURL(CLI_ENTRY).href);
