#!/usr/bin/env node
// `npm run build:agent`: the device agent as one file an operator copies to a device.
//   dist/agent/edgeflow-agent.mjs   bundled JavaScript, run by `node` (>= 20)
//   dist/agent/edgeflow-agent.cjs   the same as CommonJS, the input of a Node single executable
//   dist/agent/edgeflow-agent       Node single executable (with --sea; fetches postject through npx)
//   dist/agent/edgeflow-agent_<version>_all.deb   (with --deb: the .mjs, a systemd unit, /etc/edgeflow/agent.json)
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const wanted = new Set(args);
// --out=<dir>: elsewhere than dist/agent (the packaging test builds into a temporary directory).
const out = path.resolve(
  args.find((a) => a.startsWith('--out='))?.slice('--out='.length) ?? path.join(root, 'dist', 'agent'),
);
const { version } = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
const common = {
  entryPoints: [path.join(root, 'src/agent/main.ts')],
  bundle: true,
  platform: 'node',
  target: 'node20',
  minify: true,
  legalComments: 'linked',
  // ws loads these native speed-ups only if present; the agent does without, and says so to ws
  // (a single executable warns on any require() of a module that is not built in).
  external: ['bufferutil', 'utf-8-validate'],
  define: { 'process.env.WS_NO_BUFFER_UTIL': '"1"', 'process.env.WS_NO_UTF_8_VALIDATE': '"1"' },
  logLevel: 'warning',
};
const mjs = path.join(out, 'edgeflow-agent.mjs');
await build({
  ...common,
  format: 'esm',
  outfile: mjs,
  // Bundled CommonJS dependencies (ws, commander) still call require() for Node built-ins.
  banner: {
    js: "#!/usr/bin/env node\nimport { createRequire as __edgeflowRequire } from 'node:module'; const require = __edgeflowRequire(import.meta.url);",
  },
});
chmodSync(mjs, 0o755);
const cjs = path.join(out, 'edgeflow-agent.cjs');
await build({ ...common, format: 'cjs', outfile: cjs });
console.log(`built ${path.relative(root, mjs)} and ${path.relative(root, cjs)}`);

if (wanted.has('--sea')) buildSingleExecutable();
if (wanted.has('--deb')) buildDeb();

function buildSingleExecutable() {
  const blob = path.join(out, 'sea-prep.blob');
  const config = path.join(out, 'sea-config.json');
  writeFileSync(config, JSON.stringify({ main: cjs, output: blob, disableExperimentalSEAWarning: true }));
  execFileSync(process.execPath, ['--experimental-sea-config', config], { stdio: 'inherit' });
  const executable = path.join(out, 'edgeflow-agent');
  copyFileSync(process.execPath, executable);
  chmodSync(executable, 0o755);
  execFileSync(
    'npx',
    [
      '--yes',
      'postject@1.0.0-alpha.6',
      executable,
      'NODE_SEA_BLOB',
      blob,
      '--sentinel-fuse',
      'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2',
    ],
    { stdio: 'inherit' },
  );
  rmSync(blob);
  rmSync(config);
  console.log(`built ${path.relative(root, executable)}`);
}

function buildDeb() {
  const staging = path.join(out, 'deb-root');
  const place = (from, to, mode) => {
    const target = path.join(staging, to);
    mkdirSync(path.dirname(target), { recursive: true });
    copyFileSync(from, target);
    chmodSync(target, mode);
  };
  place(mjs, 'usr/lib/edgeflow-agent/edgeflow-agent.mjs', 0o755);
  place(path.join(root, 'packaging/edgeflow-agent'), 'usr/bin/edgeflow-agent', 0o755);
  place(path.join(root, 'packaging/edgeflow-agent.service'), 'lib/systemd/system/edgeflow-agent.service', 0o644);
  place(path.join(root, 'packaging/agent.json'), 'etc/edgeflow/agent.json', 0o644);
  place(
    path.join(root, 'packaging/install-script.example.sh'),
    'usr/share/doc/edgeflow-agent/install-script.example.sh',
    0o755,
  );
  for (const script of ['postinst', 'prerm', 'postrm'])
    place(path.join(root, 'packaging/deb', script), `DEBIAN/${script}`, 0o755);
  place(path.join(root, 'packaging/deb/conffiles'), 'DEBIAN/conffiles', 0o644);
  const control = readFileSync(path.join(root, 'packaging/deb/control'), 'utf8').replace('@VERSION@', version);
  writeFileSync(path.join(staging, 'DEBIAN/control'), control);
  const deb = path.join(out, `edgeflow-agent_${version}_all.deb`);
  execFileSync('dpkg-deb', ['--root-owner-group', '-Zxz', '--build', staging, deb], { stdio: 'inherit' });
  rmSync(staging, { recursive: true, force: true });
  console.log(`built ${path.relative(root, deb)}`);
}
