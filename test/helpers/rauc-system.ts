/**
 * A real RAUC system in a temporary directory: Debian's `rauc` service on a private D-Bus
 * (a `dbus-daemon` of its own, policy open, standing in for the system bus), a system.conf
 * with two raw slots on files, an X.509 keyring made with openssl, and bundles built with
 * `rauc bundle` in the `plain` format (the `verity` format needs device-mapper, which this
 * machine lacks; `plain` only needs a loop mount).
 *
 * The boot loader is RAUC's `custom` backend: a small script keeping `primary` and each slot's
 * good/bad state in a file. `powerOn()` stands in for the boot loader and the reboot: it boots
 * the primary slot unless that is marked bad (then the other one), and restarts the RAUC
 * service told which slot booted (`--override-boot-slot`, as /proc/cmdline would). It does
 * not count attempts: RAUC's real U-Boot/GRUB backends do that, and are not exercised here.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface RaucSystem {
  dir: string;
  slots: { a: string; b: string };
  /** The environment the rauc client needs to reach this service. */
  env: Record<string, string>;
  booted: 'a' | 'b';
  powerOn(): Promise<'a' | 'b'>;
  bootState(): Promise<Map<string, string>>;
  bundle(version: string, image: Buffer): Promise<string>;
  remove(): Promise<void>;
}

const commands = ['rauc', 'mksquashfs', 'dbus-daemon', 'openssl'];

/** Why RAUC cannot run here, or undefined when it can. */
export async function raucUnavailable(): Promise<string | undefined> {
  for (const command of commands) {
    try {
      await run('sh', ['-c', `command -v ${command}`]);
    } catch {
      return `${command} is not installed`;
    }
  }
  return undefined;
}

export async function createRaucSystem(factoryImage: Buffer, partitionBytes = 1024 * 1024): Promise<RaucSystem> {
  const dir = await mkdtemp(join(tmpdir(), 'edgeflow-rauc-'));
  const slots = { a: join(dir, 'rootfs-a.img'), b: join(dir, 'rootfs-b.img') };
  const image = Buffer.alloc(partitionBytes);
  factoryImage.copy(image);
  await writeFile(slots.a, image);
  await writeFile(slots.b, Buffer.alloc(partitionBytes));
  await run('openssl', [
    ...['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2'],
    ...['-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-subj', '/CN=edgeflow-test'],
  ]);
  const bootEnv = join(dir, 'bootenv');
  await writeFile(bootEnv, 'primary=a\n');
  const backend = join(dir, 'bootloader-backend.sh');
  await writeFile(
    backend,
    `#!/bin/sh
# RAUC custom boot-loader backend of the test: primary slot and good/bad states in ${bootEnv}.
set -e
ENV='${bootEnv}'
get() { sed -n "s/^$1=//p" "$ENV"; }
put() { grep -v "^$1=" "$ENV" > "$ENV.new" || true; echo "$1=$2" >> "$ENV.new"; mv "$ENV.new" "$ENV"; }
case "$1" in
  get-primary) v=$(get primary); echo "\${v:-a}" ;;
  set-primary) put primary "$2"; put "state_$2" good ;;
  get-state) v=$(get "state_$2"); echo "\${v:-good}" ;;
  set-state) put "state_$2" "$3" ;;
  get-current) get booted ;;
  *) exit 1 ;;
esac
`,
  );
  await chmod(backend, 0o755);
  const conf = join(dir, 'system.conf');
  await mkdir(join(dir, 'data'));
  await writeFile(
    conf,
    `[system]
compatible=edgeflow-test
bootloader=custom
data-directory=${join(dir, 'data')}

[handlers]
bootloader-custom-backend=${backend}

[keyring]
path=${join(dir, 'cert.pem')}

[slot.rootfs.0]
device=${slots.a}
type=raw
bootname=a

[slot.rootfs.1]
device=${slots.b}
type=raw
bootname=b
`,
  );
  const busPath = join(dir, 'bus');
  await writeFile(
    join(dir, 'dbus.conf'),
    `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=${busPath}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/>
  </policy>
</busconfig>
`,
  );
  const env = { DBUS_SYSTEM_BUS_ADDRESS: `unix:path=${busPath}` };
  const dbus = spawn('dbus-daemon', ['--nofork', `--config-file=${join(dir, 'dbus.conf')}`], { stdio: 'ignore' });
  let service: ChildProcess | undefined;
  let serviceLog = '';

  const stopService = async () => {
    const current = service;
    service = undefined;
    if (!current || current.exitCode !== null) return;
    const exited = new Promise((resolve) => current.once('exit', resolve));
    current.kill('SIGKILL');
    await exited;
  };
  const startService = async (booted: 'a' | 'b') => {
    serviceLog = '';
    const child = spawn('rauc', ['service', `--conf=${conf}`, `--override-boot-slot=${booted}`], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.setEncoding('utf8').on('data', (text: string) => (serviceLog += text));
    child.stderr.setEncoding('utf8').on('data', (text: string) => (serviceLog += text));
    service = child;
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        await run('rauc', ['status', '--output-format=json'], { env: { ...process.env, ...env } });
        return;
      } catch (error) {
        if (Date.now() > deadline) throw new Error(`the rauc service did not answer: ${error}\n${serviceLog}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  };
  const bootState = async () => {
    const variables = new Map<string, string>();
    for (const line of (await readFile(bootEnv, 'utf8')).split('\n')) {
      const [name, value] = line.split('=');
      if (name && value !== undefined) variables.set(name, value);
    }
    return variables;
  };

  const system: RaucSystem = {
    dir,
    slots,
    env,
    booted: 'a',
    bootState,
    async powerOn() {
      await stopService();
      const variables = await bootState();
      const primary = (variables.get('primary') ?? 'a') as 'a' | 'b';
      const other = primary === 'a' ? 'b' : 'a';
      const booted = variables.get(`state_${primary}`) === 'bad' ? other : primary;
      await writeFile(bootEnv, `${(await readFile(bootEnv, 'utf8')).replace(/^booted=.*\n/m, '')}booted=${booted}\n`);
      system.booted = booted;
      await startService(booted);
      return booted;
    },
    async bundle(version, payload) {
      const input = join(dir, `bundle-${version}`);
      await mkdir(input, { recursive: true });
      await writeFile(join(input, 'rootfs.img'), payload);
      await writeFile(
        join(input, 'manifest.raucm'),
        `[update]\ncompatible=edgeflow-test\nversion=${version}\n\n[bundle]\nformat=plain\n\n[image.rootfs]\nfilename=rootfs.img\n`,
      );
      const output = join(dir, `update-${version}.raucb`);
      await rm(output, { force: true });
      await run('rauc', ['bundle', `--cert=${join(dir, 'cert.pem')}`, `--key=${join(dir, 'key.pem')}`, input, output]);
      return output;
    },
    async remove() {
      await stopService();
      dbus.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    },
  };
  // Wait for the bus socket before the first service start.
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    try {
      await readFile(busPath);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return system;
}
