/**
 * Where this installation's files are, the same whether the code runs compiled (dist/, what
 * `npm install` builds and `npm start` runs) or as TypeScript through tsx (the tests, `npm run
 * bench`): the package root is found by walking up from the running module to edgeflow-ota's own
 * package.json, so no path depends on how deep a module sits in src/ or in a bundle's chunks.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const PACKAGE_NAME = 'edgeflow-ota';

/** True when this module was loaded from the compiled build, false when from src/ through tsx. */
const compiled = !import.meta.url.endsWith('.ts');

/** The package's root directory (where package.json, src/ and dist/ are) and its version, read once. */
function findPackage(): { root: string; version: string } {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = path.join(dir, 'package.json');
    if (existsSync(manifest)) {
      const { name, version } = JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string; version: string };
      if (name === PACKAGE_NAME) return { root: dir, version };
    }
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`no package.json of ${PACKAGE_NAME} above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

const found = findPackage();

/** The package's version, as package.json gives it. */
export const packageVersion = found.version;

/** A path inside the package, from its root: `fromRoot('src', 'dashboard', 'main.tsx')`. */
export function fromRoot(...segments: string[]): string {
  return path.join(found.root, ...segments);
}

/**
 * A Node.js entry point of ours started as its own process (the simulator's worker, say): its
 * compiled file in dist/ when this code runs compiled, else its TypeScript source with tsx's
 * loader. `source` is relative to src/ (`simulator/worker.ts`); the build names each entry point
 * after its source's file (`dist/simulator-worker.mjs`), see scripts/build.mjs's ENTRY_SOURCES.
 */
export function entryPoint(source: string): { file: string; execArgv: string[] } {
  if (compiled) {
    return { file: fromRoot('dist', `${source.replace(/\.ts$/, '').replaceAll('/', '-')}.mjs`), execArgv: [] };
  }
  return { file: fromRoot('src', source), execArgv: ['--import', import.meta.resolve('tsx')] };
}
