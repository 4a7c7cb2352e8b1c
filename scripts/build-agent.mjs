#!/usr/bin/env node
// `npm run build:agent`: the device agent as one file an operator copies to a device.
//   dist/agent/edgeflow-agent.mjs   bundled JavaScript, run by `node` (>= 20)
//   dist/agent/edgeflow-agent.cjs   the same as CommonJS, the input of a Node single executable
//   dist/agent/edgeflow-agent       Node single executable (with --sea; fetches postject through npx)
//   dist/agent/edgeflow-agent_<version>_all.deb   (with --deb: the .mjs, a systemd unit, /etc/edgeflow/agent.json,
//                                                 the boot-loader files, copyright, changelog, man page)
// Each run replaces only what it builds: `--sea` after `--deb` keeps the .deb.
// --deb-version=<v>: the package's version instead of package.json's (the upgrade test builds a second one).
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const wanted = new Set(args);
// --out=<dir>: elsewhere than dist/agent (the packaging test builds into a temporary directory).
const out = path.resolve(
  args.find((a) => a.startsWith('--out='))?.slice('--out='.length) ?? path.join(root, 'dist', 'agent'),
);
const packageVersion = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).version;
const version = args.find((a) => a.startsWith('--deb-version='))?.slice('--deb-version='.length) ?? packageVersion;

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
const bundled = await build({
  ...common,
  format: 'esm',
  outfile: mjs,
  metafile: true,
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
if (!existsSync(mjs)) throw new Error('the bundle was not written');
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
  rmSync(staging, { recursive: true, force: true });
  const packaging = (name) => path.join(root, 'packaging', name);
  const write = (to, content, mode) => {
    const target = path.join(staging, to);
    mkdirSync(path.dirname(target), { recursive: true });
    writeFileSync(target, content);
    chmodSync(target, mode);
  };
  const place = (from, to, mode) => write(to, readFileSync(from), mode);
  // Reproducible: gzip without a name or time, mkimage and dpkg-deb dated by the last commit.
  const gzip = (content) => gzipSync(content, { level: 9 });
  const epoch = process.env.SOURCE_DATE_EPOCH ?? lastCommitEpoch();
  const doc = 'usr/share/doc/edgeflow-agent';

  // Run by the wrapper's node, not executed itself: no #! line, not executable.
  write('usr/lib/edgeflow-agent/edgeflow-agent.mjs', readFileSync(mjs, 'utf8').replace(/^#!.*\n/, ''), 0o644);
  place(packaging('edgeflow-agent'), 'usr/bin/edgeflow-agent', 0o755);
  place(packaging('edgeflow-agent.service'), 'lib/systemd/system/edgeflow-agent.service', 0o644);
  place(packaging('sysusers.conf'), 'usr/lib/sysusers.d/edgeflow-agent.conf', 0o644);
  place(packaging('agent.json'), 'etc/edgeflow/agent.json', 0o644);
  write('usr/share/man/man1/edgeflow-agent.1.gz', gzip(readFileSync(packaging('edgeflow-agent.1'))), 0o644);
  place(packaging('install-script.example.sh'), `${doc}/install-script.example.sh`, 0o644);
  place(packaging('sw-description.example'), `${doc}/sw-description.example`, 0o644);
  write(`${doc}/changelog.gz`, gzip(changelogFor(version)), 0o644);
  write(`${doc}/copyright`, copyrightOf(bundled.metafile), 0o644);

  // The boot-loader files, as the tests run them (docs/devices.md, sections 4 and 5).
  const boot = 'usr/share/edgeflow-agent/boot';
  for (const name of ['boot.cmd', 'fw_env.config', 'uboot-env.txt'])
    place(packaging(`boot/${name}`), `${boot}/${name}`, 0o644);
  place(packaging('boot/05_edgeflow'), `${boot}/05_edgeflow`, 0o755);
  const script = path.join(staging, boot, 'boot.scr');
  execFileSync(
    'mkimage',
    ['-A', 'arm64', '-T', 'script', '-C', 'none', '-n', 'EdgeFlow A/B', '-d', packaging('boot/boot.cmd'), script],
    {
      stdio: 'ignore',
      env: { ...process.env, SOURCE_DATE_EPOCH: epoch },
    },
  );
  chmodSync(script, 0o644);

  for (const name of ['postinst', 'prerm', 'postrm']) place(packaging(`deb/${name}`), `DEBIAN/${name}`, 0o755);
  place(packaging('deb/conffiles'), 'DEBIAN/conffiles', 0o644);
  const control = readFileSync(packaging('deb/control'), 'utf8')
    .replace('@VERSION@', version)
    .replace('@INSTALLED_SIZE@', String(installedSizeKiB(staging)));
  write('DEBIAN/control', control, 0o644);
  const deb = path.join(out, `edgeflow-agent_${version}_all.deb`);
  execFileSync('dpkg-deb', ['--root-owner-group', '-Zxz', '--build', staging, deb], {
    stdio: 'inherit',
    env: { ...process.env, SOURCE_DATE_EPOCH: epoch },
  });
  rmSync(staging, { recursive: true, force: true });
  console.log(`built ${path.relative(root, deb)}`);
}

function lastCommitEpoch() {
  try {
    return execFileSync('git', ['log', '-1', '--format=%ct'], { cwd: root, encoding: 'utf8' }).trim();
  } catch {
    return String(Math.floor(Date.now() / 1000));
  }
}

/** The changelog, with an entry on top for a version it does not have (a test build). */
function changelogFor(debVersion) {
  const text = readFileSync(path.join(root, 'packaging/deb/changelog'), 'utf8');
  const top = /^edgeflow-agent \(([^)]+)\)/.exec(text)?.[1];
  if (top === debVersion) return text;
  const date = new Date().toUTCString().replace('GMT', '+0000');
  return `edgeflow-agent (${debVersion}) unstable; urgency=medium\n\n  * Build of ${debVersion} from the source of ${top}.\n\n -- EdgeFlow <ota@edgeflow.invalid>  ${date}\n\n${text}`;
}

/** What dpkg would report: the files' sizes in KiB, rounded up one by one, and one per directory. */
function installedSizeKiB(dir) {
  let total = 0;
  for (const entry of readdirSync(dir)) {
    if (dir === path.join(out, 'deb-root') && entry === 'DEBIAN') continue;
    const full = path.join(dir, entry);
    const stat = statSync(full);
    total += stat.isDirectory() ? 1 + installedSizeKiB(full) : Math.ceil(stat.size / 1024);
  }
  return total;
}

/**
 * debian/copyright (machine-readable format) generated from what esbuild put in the bundle: every
 * npm package one of its inputs came from, with its version, licence and the copyright lines and
 * text of its own licence file. A dependency added to the agent shows up here by itself.
 */
function copyrightOf(metafile) {
  const packages = new Map();
  for (const input of Object.keys(metafile.inputs)) {
    const match = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
    if (!match || packages.has(match[1])) continue;
    const dir = path.join(root, 'node_modules', match[1]);
    const manifest = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8'));
    const licenseFile = readdirSync(dir).find((name) => /^licen[cs]e(\.(md|txt))?$/i.test(name));
    if (!manifest.license || !licenseFile) throw new Error(`${match[1]}: no licence to put in the copyright file`);
    const text = readFileSync(path.join(dir, licenseFile), 'utf8').trim();
    const notices = text.split('\n').filter((line) => /copyright\s*(\(c\)|©|\d)/i.test(line));
    packages.set(match[1], { version: manifest.version, license: manifest.license, text, notices });
  }
  const sorted = [...packages.entries()].sort(([a], [b]) => a.localeCompare(b));
  const field = (text) =>
    text
      .split('\n')
      .map((line) => (line.trim() === '' ? ' .' : ` ${line.trimEnd()}`))
      .join('\n');
  const paragraphs = [
    [
      'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/',
      'Upstream-Name: edgeflow-agent',
      'Comment: usr/lib/edgeflow-agent/edgeflow-agent.mjs is one bundled file: the agent and the npm packages',
      ` ${sorted.map(([name, p]) => `${name} ${p.version} (${p.license})`).join(', ')},`,
      ' listed here with their licences when the package was built.',
    ].join('\n'),
    ['Files: *', 'Copyright: EdgeFlow', 'License: EdgeFlow'].join('\n'),
    ...sorted.map(([name, p]) =>
      [
        'Files: usr/lib/edgeflow-agent/edgeflow-agent.mjs',
        `Copyright:${field(p.notices.length ? p.notices.join('\n') : `the authors of ${name}`)}`,
        `Comment: the bundled npm package ${name} ${p.version}, under its own licence:`,
        `License: ${p.license}\n${field(p.text)}`,
      ].join('\n'),
    ),
    [
      'License: EdgeFlow',
      ' The EdgeFlow OTA agent and its packaging are distributed by EdgeFlow under the terms',
      ' of the agreement under which you received them; no public licence is granted.',
    ].join('\n'),
  ];
  return `${paragraphs.join('\n\n')}\n`;
}
