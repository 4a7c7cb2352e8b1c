#!/usr/bin/env node
// The compiled server, CLI, agent and simulator: src/ bundled by esbuild into dist/, what `npm start`,
// the CLI (bin/edgeflow-ota.js) and `npm run demo` run. `npm install` builds it (the `prepare` script);
// bin/edgeflow-ota.js rebuilds it first when src/ changed since (isBuildCurrent), so a stale build is
// never what runs. Most packages stay in node_modules (see BUNDLED_PACKAGES); the dashboard's browser code is bundled by
// the server itself on its first request (src/server/dashboard/bundle.ts).
// `npm run dev` is the server restarted on every change under src/ (node --watch), so rebuilt by the bin.
//
// Entry points are named after their source (src/simulator/worker.ts → dist/simulator-worker.mjs),
// the rule src/installation.ts's entryPoint() follows; the modules they share are chunks named by
// their content (dist/chunks/), so a rebuild never rewrites a chunk a running process may still load.
import { mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist');
const stamp = path.join(dist, 'build.json');

/** Sources (relative to src/) started as processes of their own (src/installation.ts's entryPoint() names them alike). */
export const ENTRY_SOURCES = ['cli/main.ts', 'simulator/worker.ts'];

/** The compiled CLI, what bin/edgeflow-ota.js imports. */
export const CLI_ENTRY = path.join(dist, 'cli-main.mjs');

/** What the build depends on besides src/: a change to any of them makes it stale. */
const INPUTS = [path.join(root, 'package.json'), fileURLToPath(import.meta.url)];

/** Chunks no build has produced for this long are removed (a process started before may still load one). */
const STALE_CHUNK_MS = 60 * 60 * 1000;

function newestInput(dir = path.join(root, 'src'), newest = 0) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    newest = entry.isDirectory() ? newestInput(full, newest) : Math.max(newest, statSync(full).mtimeMs);
  }
  return newest;
}

/**
 * Whether dist/ holds a build of the sources as they are: built, and nothing under src/ (nor
 * package.json, nor this script) changed since. A copy without src/ (dist/ shipped alone) is current.
 */
export function isBuildCurrent() {
  let built;
  try {
    built = statSync(stamp).mtimeMs;
  } catch {
    return false;
  }
  try {
    return Math.max(newestInput(), ...INPUTS.map((file) => statSync(file).mtimeMs)) <= built;
  } catch (error) {
    if (error.code === 'ENOENT') return true;
    throw error;
  }
}

/**
 * Packages bundled into dist/ rather than loaded from node_modules: pure JavaScript spread over many
 * small modules, which Node.js loads one file at a time (typebox alone is ~19 MiB of RSS loaded
 * that way, a few MiB bundled). The rest stay in node_modules: they find files of their own at run
 * time (PGlite's WebAssembly, swagger-ui's assets, esbuild's binary) or are only loaded by the server.
 */
const BUNDLED_PACKAGES = ['typebox', '@fastify/type-provider-typebox', 'semver', 'commander', 'ws', '@noble/hashes'];

function externalPackages() {
  const bundled = (specifier) =>
    BUNDLED_PACKAGES.some((name) => specifier === name || specifier.startsWith(`${name}/`));
  return {
    name: 'external-packages',
    setup(builder) {
      builder.onResolve({ filter: /^[^./]/ }, (args) =>
        args.path.startsWith('node:') || bundled(args.path) ? undefined : { path: args.path, external: true },
      );
    },
  };
}

const options = {
  entryPoints: Object.fromEntries(
    ENTRY_SOURCES.map((source) => [source.replace(/\.ts$/, '').replaceAll('/', '-'), path.join(root, 'src', source)]),
  ),
  bundle: true,
  splitting: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  plugins: [externalPackages()],
  // A bundled CommonJS package (ws, commander, semver) still calls require() for Node.js built-ins.
  banner: {
    js: "import { createRequire as __edgeflowCreateRequire } from 'node:module'; const require = __edgeflowCreateRequire(import.meta.url);",
  },
  outdir: dist,
  outExtension: { '.js': '.mjs' },
  chunkNames: 'chunks/[name]-[hash]',
  sourcemap: 'linked',
  logLevel: 'silent',
  write: false,
};

/**
 * Writes a build's files into dist/, each through a temporary name and a rename: a process starting
 * meanwhile loads either the old file or the new one, never half of one. The stamp is written last.
 */
function install(result) {
  const written = new Set();
  for (const file of result.outputFiles) {
    mkdirSync(path.dirname(file.path), { recursive: true });
    const partial = `${file.path}.${process.pid}.partial`;
    writeFileSync(partial, file.contents);
    renameSync(partial, file.path);
    written.add(file.path);
  }
  const chunks = path.join(dist, 'chunks');
  for (const name of readdirSync(chunks)) {
    const full = path.join(chunks, name);
    if (!written.has(full) && Date.now() - statSync(full).mtimeMs > STALE_CHUNK_MS) rmSync(full, { force: true });
  }
  writeFileSync(stamp, `${JSON.stringify({ built_at: new Date().toISOString(), outputs: written.size }, null, 2)}\n`);
}

/** Builds dist/ once; throws with esbuild's first error as its message. */
export async function build() {
  const esbuild = await import('esbuild');
  let result;
  try {
    result = await esbuild.build(options);
  } catch (error) {
    const first = error.errors?.[0];
    throw new Error(
      first ? `${first.location ? `${first.location.file}:${first.location.line}: ` : ''}${first.text}` : error.message,
    );
  }
  install(result);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  try {
    const started = Date.now();
    await build();
    console.error(`edgeflow-ota: built dist/ in ${Date.now() - started} ms`);
  } catch (error) {
    console.error(`edgeflow-ota: the build failed: ${error.message}`);
    process.exit(1);
  }
}
