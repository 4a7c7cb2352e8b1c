/**
 * The installable agent: `scripts/build-agent.mjs --deb` builds the bundled agent and its .deb;
 * the .deb is unpacked with dpkg-deb into a temporary root, and the agent runs from there — its
 * bundled file under plain `node`, configured only by the packaged agent.json — against the real
 * server, with the U-Boot installer on file-backed partitions and a real fw_setenv environment.
 * Its reboot command ends its own process (as `systemctl reboot` would); the test then plays
 * the machine: the boot-loader harness of test/helpers/boot-media.ts takes its turn and the
 * agent starts again, as systemd would after the reboot. The update must complete.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { loadAgentConfigFile } from '../../src/agent/config-file.ts';
import { registerDevice, settledOta, signingKey } from '../helpers/agents.ts';
import { type BootMedia, createBootMedia } from '../helpers/boot-media.ts';
import { makeFirmwareFile, postFirmware } from '../helpers/firmware.ts';
import { eventually } from '../helpers/raw-device.ts';
import { backendsUnderTest, startTestServer, stopSharedServices, type TestServer } from '../helpers/server.ts';

const run = promisify(execFile);
const [backend] = await backendsUnderTest();

describe('the packaged agent (.deb)', () => {
  let work: string;
  let root: string;
  let server: TestServer;
  let media: BootMedia | undefined;
  let child: ChildProcess | undefined;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'edgeflow-package-'));
    root = join(work, 'root');
    await run(process.execPath, ['scripts/build-agent.mjs', '--deb', `--out=${join(work, 'dist')}`]);
    await run('dpkg-deb', ['-x', join(work, 'dist', 'edgeflow-agent_0.1.0_all.deb'), root]);
    server = await startTestServer(backend!, { env: { EDGEFLOW_DISPATCH_INTERVAL_MS: '200' } });
  });
  after(async () => {
    child?.kill('SIGKILL');
    await server?.close();
    await media?.remove();
    await rm(work, { recursive: true, force: true });
    await stopSharedServices();
  });

  it('holds the bundled agent, a systemd unit, a wrapper and a valid default config', async () => {
    assert.ok((await stat(join(root, 'usr/lib/edgeflow-agent/edgeflow-agent.mjs'))).isFile());
    const wrapper = await readFile(join(root, 'usr/bin/edgeflow-agent'), 'utf8');
    assert.match(wrapper, /exec node \/usr\/lib\/edgeflow-agent\/edgeflow-agent\.mjs/);
    const unit = await readFile(join(root, 'lib/systemd/system/edgeflow-agent.service'), 'utf8');
    assert.match(unit, /^After=network-online\.target$/m);
    assert.match(unit, /^Restart=on-failure$/m);
    assert.match(unit, /^ExecStart=\/usr\/bin\/edgeflow-agent --config \/etc\/edgeflow\/agent\.json$/m);
    const config = await loadAgentConfigFile(join(root, 'etc/edgeflow/agent.json'));
    assert.equal(config.installer, 'uboot');
    const { stdout } = await run('dpkg-deb', ['-f', join(work, 'dist', 'edgeflow-agent_0.1.0_all.deb'), 'Depends']);
    assert.match(stdout, /nodejs \(>= 20\)/);
  });

  it('runs from the unpacked root against the real server and takes an A/B update through U-Boot', async () => {
    const org = await server.createOrg('packaged');
    const v100 = await makeFirmwareFile(128 * 1024);
    const v110 = await makeFirmwareFile(1024 * 1024);
    const upload = await postFirmware(server.url, org.adminKey, { version: '1.1.0', sha256: v110.sha256 }, v110);
    assert.equal(upload.status, 201);
    const device = await registerDevice(server, org.adminKey);
    media = await createBootMedia('uboot', 2 * 1024 * 1024, await readFile(v100.path));

    const etc = join(root, 'etc/edgeflow');
    await writeFile(join(etc, 'device.key'), `${device.apiKey}\n`, { mode: 0o600 });
    await writeFile(join(etc, 'signing-key.pem'), await signingKey(server, org.adminKey));
    const config = {
      server: server.url,
      device_id: device.deviceId,
      key_file: join(etc, 'device.key'),
      public_key_file: join(etc, 'signing-key.pem'),
      organization_id: org.id,
      data_dir: join(root, 'var/lib/edgeflow'),
      allow_insecure: true,
      installer: 'uboot',
      slot_a: media.slots.a,
      slot_b: media.slots.b,
      fw_env_config: media.fwEnvConfig,
      // The agent's process ends here as it would when the machine goes down.
      reboot_command: 'kill -TERM $PPID',
      health_command: 'test "$EDGEFLOW_VERSION" = 1.1.0',
      initial_version: '1.0.0',
    };
    await writeFile(join(etc, 'agent.json'), JSON.stringify(config, null, 2));

    let starts = 0;
    let finished = false;
    let stderr = '';
    const powerOn = async (): Promise<void> => {
      await media!.bootLoaderStart();
      starts += 1;
      const agent = spawn(
        process.execPath,
        [join(root, 'usr/lib/edgeflow-agent/edgeflow-agent.mjs'), '--config', join(etc, 'agent.json')],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      child = agent;
      agent.stderr.setEncoding('utf8').on('data', (text: string) => {
        stderr = (stderr + text).slice(-4000);
      });
      agent.on('exit', () => {
        // systemd would start it again after the reboot.
        if (!finished) void powerOn();
      });
    };
    await powerOn();
    await eventually(
      async () =>
        (await server.api<{ online: boolean }>('GET', `/api/v1/devices/${device.deviceId}`, org.adminKey)).body.online,
      20_000,
      'the packaged agent online',
    );
    const accepted = await server.api('POST', `/api/v1/devices/${device.deviceId}/ota/update`, org.adminKey, {
      version: '1.1.0',
    });
    assert.equal(accepted.status, 202);
    const record = await settledOta(server, org.adminKey, device.deviceId, 60_000);
    finished = true;
    assert.equal(record.ota_status, 'completed', `${JSON.stringify(record)}\n${stderr}`);
    assert.equal(record.current_version, '1.1.0');
    assert.equal(starts, 2, 'started, then started again after its reboot');
    const variables = await media.variables();
    assert.equal(variables.get('edgeflow_slot'), 'b');
    assert.equal(variables.get('upgrade_available'), '0');
    assert.equal(await media.slotHash('b', v110.size), v110.sha256);
    await rm(dirname(v100.path), { recursive: true, force: true });
    await rm(dirname(v110.path), { recursive: true, force: true });
  });
});
