// The CLI as one ES module for the tests' child processes: `node <bundle> …` starts in about a third
// of the time `bin/edgeflow-ota.js` takes, whose tsx loader compiles and resolves hundreds of modules
// on every start (the e2e suites start the CLI and servers ~100 times). Same sources, transpiled by the
// same esbuild tsx uses; the packages stay external (resolved from node_modules as usual), and each
// file's `import.meta.url` stays its source file's, so files found relative to it (migrations,
// package.json, the dashboard's sources, the simulator's worker) are the same ones.
// `bin/edgeflow-ota.js` itself is still what the help-and-version test runs.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Builds the bundle; returns its path. */
export async function buildTestCli() {
  const outfile = path.join(root, 'node_modules', '.cache', 'edgeflow-ota', 'cli.mjs');
  await build({
    entryPoints: [path.join(root, 'src/cli/main.ts')],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    outfile,
    logLevel: 'warning',
    plugins: [
      {
        name: 'source-import-meta-url',
        setup(builder) {
          builder.onLoad({ filter: /\.ts$/ }, async (args) => ({
            contents: (await readFile(args.path, 'utf8')).replaceAll(
              'import.meta.url',
              JSON.stringify(pathToFileURL(args.path).href),
            ),
            loader: 'ts',
          }));
        },
      },
    ],
  });
  return outfile;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) console.log(await buildTestCli());
