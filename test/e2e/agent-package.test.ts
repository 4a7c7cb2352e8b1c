/**
 * The installable agent: `scripts/build-agent.mjs --deb` builds the bundled agent and its .deb.
 *
 * As a Debian package: installed, configured, upgraded and purged with the real dpkg in a
 * throwaway root (`dpkg --root`, maintainer scripts run against it through DPKG_ROOT, as in an
 * image build), checked by lintian, its unit rated by `systemd-analyze security`.
 *
 * As a program: the .deb is unpacked with dpkg-deb into a temporary root and the agent runs from
 * there — its bundled file under plain `node`, configured only by agent.json — against the real
 * server: A/B through U-Boot (fw_setenv on file-backed partitions), and through SWUpdate, as
 * agent.json configures them. Its reboot command ends its own process (as `systemctl reboot`
 * would); the test then plays the machine: the boot loader of test/helpers/boot-media.ts (the
 * shipped boot.cmd, interpreted) takes its turn, renewing the boot id and the kernel command
 * line the agent reads (boot_id_file, cmdline_file), and the agent starts again, as systemd would.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { chmod, lstat, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { AGENT_VERSION } from '../../src/agent/agent.ts';
import { loadAgentConfigFile } from '../../src/agent/config-file.ts';
import { buildSwu, swupdateUnavailable, withSwupdateLock } from '../helpers/agent-swu.ts';
import { registerDevice, settledOta, signingKey, type TestDevice } from '../helpers/agents.ts';
import { type BootMedia, createBootMedia } from '../helpers/boot-media.ts';
import { makeFirmwareFile, postFirmware, sha256Of, uploadArtifact } from '../helpers/firmware.ts';
import { eventually } from '../helpers/raw-device.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const run = promisify(execFile);
const [backend] = await backendsUnderTest();
const packageVersion = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')).version;
const noSwupdate = await swupdateUnavailable();

describe('the packaged agent (.deb)', () => {
  let work: string;
  let root: string;
  let deb: string;
  let server: TestServer;
  const media: BootMedia[] = [];
  const children: ChildProcess[] = [];

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'edgeflow-package-'));
    // Readable on the way down for the unprivileged user test below.
    await chmod(work, 0o755);
    root = join(work, 'root');
    await run(process.execPath, ['scripts/build-agent.mjs', '--deb', `--out=${join(work, 'dist')}`]);
    deb = join(work, 'dist', `edgeflow-agent_${packageVersion}_all.deb`);
    await run('dpkg-deb', ['-x', deb, root]);
    server = await startTestServer(backend!, { env: { EDGEFLOW_DISPATCH_INTERVAL_MS: '200' } });
  });
  after(async () => {
    for (const child of children) child.kill('SIGKILL');
    await server?.close();
    await Promise.all(media.map((m) => m.remove()));
    await rm(work, { recursive: true, force: true });
    await stopSharedServices();
  });

  it('holds the bundled agent, a sandboxed unit that waits for its key, the boot files and a valid config', async () => {
    assert.ok((await stat(join(root, 'usr/lib/edgeflow-agent/edgeflow-agent.mjs'))).isFile());
    const wrapper = await readFile(join(root, 'usr/bin/edgeflow-agent'), 'utf8');
    assert.match(wrapper, /exec node \/usr\/lib\/edgeflow-agent\/edgeflow-agent\.mjs/);
    const unit = await readFile(join(root, 'lib/systemd/system/edgeflow-agent.service'), 'utf8');
    assert.match(unit, /^After=network-online\.target$/m);
    assert.match(unit, /^Restart=on-failure$/m);
    assert.match(unit, /^ConditionPathExists=\/etc\/edgeflow\/device\.key$/m);
    assert.match(unit, /^RestartPreventExitStatus=2$/m);
    assert.match(unit, /^ExecStart=\/usr\/bin\/edgeflow-agent --config \/etc\/edgeflow\/agent\.json$/m);
    const config = await loadAgentConfigFile(join(root, 'etc/edgeflow/agent.json'));
    assert.equal(config.installer, 'uboot');
    const boot = join(root, 'usr/share/edgeflow-agent/boot');
    assert.equal(
      await readFile(join(boot, 'boot.cmd'), 'utf8'),
      await readFile('packaging/boot/boot.cmd', 'utf8'),
      'the boot.cmd the tests interpret',
    );
    const { stdout: image } = await run('dumpimage', ['-l', join(boot, 'boot.scr')]);
    assert.match(image, /Script/, 'boot.scr is boot.cmd compiled by mkimage');
    assert.equal((await stat(join(boot, '05_edgeflow'))).mode & 0o111, 0o111, 'the grub.d script is executable');
    const copyright = await readFile(join(root, 'usr/share/doc/edgeflow-agent/copyright'), 'utf8');
    for (const bundled of ['ws', 'commander', 'semver', 'typebox']) {
      assert.match(copyright, new RegExp(`the bundled npm package ${bundled} `), `${bundled} in the copyright file`);
    }
    const fields = (await run('dpkg-deb', ['-f', deb, 'Depends', 'Installed-Size'])).stdout;
    assert.match(fields, /nodejs \(>= 20\)/);
    assert.match(fields, /Installed-Size: \d+/);
  });

  it('a later build of the bundle alone (as --sea does) keeps the .deb', async () => {
    await run(process.execPath, ['scripts/build-agent.mjs', `--out=${join(work, 'dist')}`]);
    assert.ok((await stat(deb)).isFile());
  });

  it('lintian has nothing to say about it', async () => {
    const result = await run('lintian', [
      '--no-cfg',
      '--pedantic',
      '-E',
      '--fail-on',
      'error,warning,info,pedantic',
      deb,
    ])
      .then(({ stdout }) => stdout)
      .catch((error: { stdout: string }) => assert.fail(`lintian:\n${error.stdout}`));
    assert.equal(
      result
        .split('\n')
        .filter((line) => /^[EWIPX]: /.test(line))
        .join('\n'),
      '',
    );
  });

  it('its unit is sandboxed as far as every installer allows (systemd-analyze security below 6)', async () => {
    const { stdout } = await run('systemd-analyze', [
      'security',
      '--offline=true',
      join(root, 'lib/systemd/system/edgeflow-agent.service'),
    ]);
    const exposure = Number(/Overall exposure level for \S+: ([\d.]+)/.exec(stdout)?.[1]);
    assert.ok(exposure < 6, `exposure ${exposure}`);
  });

  it('installs, is configured, upgrades and purges with dpkg in a throwaway root', async () => {
    const target = join(work, 'image-root');
    await mkdir(join(target, 'var/lib/dpkg/updates'), { recursive: true });
    await mkdir(join(target, 'var/lib/dpkg/info'), { recursive: true });
    await writeFile(join(target, 'var/lib/dpkg/status'), '');
    // As an image build does: no systemd running for that root, maintainer scripts told DPKG_ROOT.
    const dpkg = (...args: string[]) =>
      run('dpkg', [`--root=${target}`, '--force-script-chrootless', '--force-depends', '--log=/dev/null', ...args]);
    await dpkg('-i', deb);
    const wants = join(target, 'etc/systemd/system/multi-user.target.wants/edgeflow-agent.service');
    assert.ok(await lstat(wants).catch(() => undefined), 'enabled in the image, without a running systemd');
    assert.match(await readFile(join(target, 'etc/passwd'), 'utf8'), /^edgeflow:x:\d+:\d+:/m, 'its user exists');
    const status = (await run('dpkg-query', [`--root=${target}`, '-s', 'edgeflow-agent'])).stdout;
    assert.match(status, /^Conffiles:\n \/etc\/edgeflow\/agent\.json [0-9a-f]{32}$/m);

    // Configured, as provisioning would.
    const agentJson = join(target, 'etc/edgeflow/agent.json');
    const configured = (await readFile(agentJson, 'utf8')).replace('"CHANGE-ME"', '"gw-042"');
    await writeFile(agentJson, configured);
    await writeFile(join(target, 'etc/edgeflow/device.key'), 'efd_secret\n', { mode: 0o600 });
    await mkdir(join(target, 'var/lib/edgeflow'), { recursive: true });
    await writeFile(join(target, 'var/lib/edgeflow/ota-state.json'), '{}');

    // Upgraded: the operator's config, the key and the enablement stay.
    const next = join(work, 'next');
    await run(process.execPath, ['scripts/build-agent.mjs', '--deb', '--deb-version=0.1.1', `--out=${next}`]);
    await dpkg('-i', join(next, 'edgeflow-agent_0.1.1_all.deb'));
    assert.match((await run('dpkg-query', [`--root=${target}`, '-W', 'edgeflow-agent'])).stdout, /\t0\.1\.1$/m);
    assert.equal(await readFile(agentJson, 'utf8'), configured, 'agent.json is a conffile: the edit survives');
    assert.equal(await readFile(join(target, 'etc/edgeflow/device.key'), 'utf8'), 'efd_secret\n');
    assert.ok(await lstat(wants).catch(() => undefined), 'still enabled');

    // Purged: nothing of the device is left — config, secret key, state, enablement.
    await dpkg('--purge', 'edgeflow-agent');
    for (const gone of [
      'etc/edgeflow',
      'var/lib/edgeflow',
      'usr/lib/edgeflow-agent',
      'etc/systemd/system/multi-user.target.wants/edgeflow-agent.service',
    ]) {
      assert.equal(await lstat(join(target, gone)).catch(() => undefined), undefined, `${gone} removed by the purge`);
    }
  });

  it('says its version, and names a missing key file in one line', async () => {
    const agent = join(root, 'usr/lib/edgeflow-agent/edgeflow-agent.mjs');
    const version = await run(process.execPath, [agent, '--version']);
    assert.equal(version.stdout.trim(), AGENT_VERSION);
    assert.equal(AGENT_VERSION, packageVersion, 'the agent says the version it is packaged as');
    const config = join(work, 'no-key.json');
    await writeFile(
      config,
      JSON.stringify({ server: 'https://ota.example.com', device_id: 'gw-1', key_file: join(work, 'absent.key') }),
    );
    const failed = await run(process.execPath, [agent, '--config', config, '--data-dir', work]).catch(
      (error: { code: number; stderr: string }) => error,
    );
    assert.equal((failed as { code: number }).code, 2);
    assert.equal(
      (failed as { stderr: string }).stderr,
      `error: the device API key file ${join(work, 'absent.key')} (key_file) does not exist\n`,
    );
  });

  /** Writes agent.json for a device on these media, starts the packaged agent like systemd, restarting it after each reboot. */
  async function runPackaged(
    device: TestDevice,
    org: { id: string; adminKey: string },
    disk: BootMedia,
    extra: object,
  ) {
    const etc = join(disk.dir, 'etc');
    await mkdir(etc, { recursive: true });
    await writeFile(join(etc, 'device.key'), `${device.apiKey}\n`, { mode: 0o600 });
    await writeFile(join(etc, 'signing-key.pem'), await signingKey(server, org.adminKey));
    const config = {
      server: server.url,
      device_id: device.deviceId,
      key_file: join(etc, 'device.key'),
      public_key_file: join(etc, 'signing-key.pem'),
      organization_id: org.id,
      data_dir: join(disk.dir, 'var-lib-edgeflow'),
      allow_insecure: true,
      fw_env_config: disk.fwEnvConfig,
      boot_id_file: disk.proc.bootIdFile,
      cmdline_file: disk.proc.cmdlineFile,
      // The agent's process ends here as it would when the machine goes down.
      reboot_command: 'kill -TERM $PPID',
      health_command: 'test "$EDGEFLOW_VERSION" = 1.1.0',
      initial_version: '1.0.0',
      ...extra,
    };
    await writeFile(join(etc, 'agent.json'), JSON.stringify(config, null, 2));
    const state = { starts: 0, finished: false, stderr: '' };
    const powerOn = async (): Promise<void> => {
      await disk.bootLoaderStart();
      state.starts += 1;
      const agent = spawn(
        process.execPath,
        [join(root, 'usr/lib/edgeflow-agent/edgeflow-agent.mjs'), '--config', join(etc, 'agent.json')],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      children.push(agent);
      agent.stderr.setEncoding('utf8').on('data', (text: string) => {
        state.stderr = (state.stderr + text).slice(-4000);
      });
      // systemd would start it again after the reboot.
      agent.on('exit', () => void (state.finished || powerOn()));
    };
    await powerOn();
    await eventually(
      async () =>
        (await server.api<{ online: boolean }>('GET', `/api/v1/devices/${device.deviceId}`, org.adminKey)).body.online,
      20_000,
      'the packaged agent online',
    );
    return state;
  }

  /** Asks for 1.1.0 and waits until the packaged agent completed it. */
  async function updateToCompletion(
    device: TestDevice,
    org: { adminKey: string },
    state: { finished: boolean; stderr: string },
  ) {
    const accepted = await server.api('POST', `/api/v1/devices/${device.deviceId}/ota/update`, org.adminKey, {
      version: '1.1.0',
    });
    assert.equal(accepted.status, 202);
    const record = await settledOta(server, org.adminKey, device.deviceId, 60_000);
    state.finished = true;
    assert.equal(record.ota_status, 'completed', `${JSON.stringify(record)}\n${state.stderr}`);
    assert.equal(record.current_version, '1.1.0');
  }

  it('runs from the unpacked root against the real server and takes an A/B update through U-Boot', async () => {
    const org = await server.createOrg('packaged');
    const v100 = await makeFirmwareFile(128 * 1024);
    const v110 = await makeFirmwareFile(1024 * 1024);
    const upload = await postFirmware(
      server.url,
      org.adminKey,
      { version: '1.1.0', sha256: v110.sha256 },
      { path: v110.path, filename: 'rootfs.ext4' },
    );
    assert.equal(upload.status, 201);
    assert.equal(upload.body.artifact_type, 'ext4');
    const device = await registerDevice(server, org.adminKey);
    const disk = await createBootMedia('uboot', 2 * 1024 * 1024, await readFile(v100.path));
    media.push(disk);
    const state = await runPackaged(device, org, disk, {
      installer: 'uboot',
      slot_a: disk.slots.a,
      slot_b: disk.slots.b,
    });
    await updateToCompletion(device, org, state);
    assert.equal(state.starts, 2, 'started, then started again after its reboot');
    const variables = await disk.variables();
    assert.equal(variables.get('edgeflow_slot'), 'b');
    assert.equal(variables.get('upgrade_available'), '0');
    assert.equal(await disk.slotHash('b', v110.size), v110.sha256);
    await rm(dirname(v100.path), { recursive: true, force: true });
    await rm(dirname(v110.path), { recursive: true, force: true });
  });

  it('takes an update through SWUpdate as agent.json configures it', { skip: noSwupdate }, async () => {
    const org = await server.createOrg('packaged-swu');
    const factory = Buffer.alloc(64 * 1024, 1);
    const image = Buffer.alloc(300 * 1024, 2);
    const disk = await createBootMedia('uboot', 1024 * 1024, factory);
    media.push(disk);
    const swu = await buildSwu(disk, '1.1.0', image);
    await uploadArtifact(server.url, org.adminKey, '1.1.0', swu, 'gateway-1.1.0.swu');
    const device = await registerDevice(server, org.adminKey);
    const state = await runPackaged(device, org, disk, {
      installer: 'swupdate',
      bootloader: 'uboot',
      swupdate_args: ['-k', join(disk.dir, 'swu-cert.pem'), '-H', 'edgeflow:1.0'],
    });
    await withSwupdateLock(() => updateToCompletion(device, org, state));
    assert.equal(await disk.slotHash('b', image.length), sha256Of(image), 'SWUpdate wrote slot B');
    assert.equal((await disk.variables()).get('edgeflow_slot'), 'b');
  });

  const notRoot = process.getuid?.() === 0 ? false : 'dropping to another user needs the test run as root';
  it('started as root with "user", runs as that user with its data directory', { skip: notRoot }, async () => {
    const org = await server.createOrg('packaged-user');
    const device = await registerDevice(server, org.adminKey);
    const disk = await createBootMedia('uboot', 256 * 1024, Buffer.alloc(1024));
    media.push(disk);
    await chmod(disk.dir, 0o755);
    const state = await runPackaged(device, org, disk, { installer: 'ab', user: 'nobody', reboot_command: undefined });
    state.finished = true;
    const agent = children.at(-1)!;
    const uid = /^Uid:\s+(\d+)/m.exec(await readFile(`/proc/${agent.pid}/status`, 'utf8'))?.[1];
    assert.equal(uid, (await run('id', ['-u', 'nobody'])).stdout.trim());
    assert.equal((await stat(join(disk.dir, 'var-lib-edgeflow'))).uid, Number(uid), 'its data directory is its own');
  });
});
